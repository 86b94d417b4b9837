"""`meterchain certificates list|retire|export|issue`, `meterchain fund …` and `meterchain
statement`, run as a user runs them against a deployment file."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from contract_suite import INTERVAL, Suite, deploy_test_suite
from ledger_suite import Sale, certificates, register_pv, settle
from typer.testing import CliRunner
from web3 import Web3

from meterchain.chain.client import MeterKind
from meterchain.chain.deployment import Deployment, save_deployment
from meterchain.chain.keystore import TEST_SCRYPT_N, create_keystore
from meterchain.chain.node import AnvilNode
from meterchain.cli import app

ALICE, BOB, CAROL = 0, 1, 2
PASSWORD = "cli-test-password"
LIST_FIELDS = {"id", "meter_id", "interval_start", "wh", "owner", "retired_for", "technology"}
runner = CliRunner()


@pytest.fixture(scope="module")
def deployed(w3: Web3) -> Suite:
    suite = deploy_test_suite(
        w3,
        kinds=[MeterKind.PROSUMER, MeterKind.PROSUMER, MeterKind.CONSUMER, MeterKind.PROSUMER],
    )
    register_pv(suite, suite.meters[ALICE])
    return suite


@pytest.fixture
def deployment(deployed: Suite, anvil: AnvilNode, chain_snapshot: str, tmp_path: Path) -> Path:
    """Alice sells Carol 1 kWh and exports 1.5 kWh; Carol asked for auto-retirement; the
    interval is delivered and certified; a deployment file names the contracts."""
    suite = deployed
    suite.nonces.clear()
    certificates(suite, suite.meters[CAROL].owner).set_auto_retirement("carol", "Casa da Carol")
    settle(
        suite, [Sale(buyer=CAROL, seller=ALICE, wh=1_000)], {ALICE: (0, 1_500), CAROL: (1_200, 0)}
    )
    certificates(suite).issue_interval(suite.market(), INTERVAL)
    path = tmp_path / "deployment.json"
    save_deployment(
        Deployment(
            chain_id=31337,
            rpc_url=anvil.rpc_url,
            deployed_at_block=0,
            contracts=dict(suite.addresses),
        ),
        path,
    )
    return path


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def owner_keystore(suite: Suite, meter: int, tmp_path: Path) -> Path:
    path = tmp_path / f"owner-{meter}.json"
    create_keystore(
        path, PASSWORD, scrypt_n=TEST_SCRYPT_N, private_key=suite.meters[meter].owner.key
    )
    return path


def test_list_prints_holdings_and_retirements_with_the_contracts_fields(
    deployed: Suite, deployment: Path
) -> None:
    code, out, err = run("certificates", "list", "--json", "--deployment", str(deployment))
    assert code == 0, err
    rows = json.loads(out)
    assert all(set(row) == LIST_FIELDS for row in rows)
    held = [r for r in rows if r["retired_for"] is None]
    retired = [r for r in rows if r["retired_for"] is not None]
    assert [(r["meter_id"], r["wh"], r["owner"]) for r in held] == [
        ("alice", 500, deployed.meters[ALICE].owner.address)
    ]
    assert [(r["meter_id"], r["wh"], r["retired_for"]) for r in retired] == [
        ("alice", 1_000, "Casa da Carol")
    ]
    assert held[0]["interval_start"] == "2026-11-18T11:15:00+00:00"
    assert held[0]["technology"] == "Solar;Photovoltaic;Roof mounted"
    code, out, _ = run(
        "certificates", "list", "--json", "--meter", "bob", "--deployment", str(deployment)
    )
    assert json.loads(out) == []
    code, out, _ = run(
        "certificates", "list", "--json", "--from", "2026-11-18T11:30:00Z",
        "--deployment", str(deployment),
    )  # fmt: skip
    assert json.loads(out) == []


def test_the_holder_retires_from_the_command_line(
    deployed: Suite, deployment: Path, tmp_path: Path
) -> None:
    keystore = owner_keystore(deployed, ALICE, tmp_path)
    certificate = certificates(deployed).certificate_id("alice", INTERVAL)
    code, out, err = run(
        "certificates", "retire", "--id", str(certificate), "--beneficiary", "Escola Municipal",
        "--purpose", "24/7 renewable supply", "--deployment", str(deployment),
        "--keystore", str(keystore), env={"MCHAIN_KEY_PASSWORD": PASSWORD},
    )  # fmt: skip
    assert code == 0, err
    assert "retired 500 Wh" in out
    code, out, _ = run("certificates", "list", "--json", "--deployment", str(deployment))
    assert {r["retired_for"] for r in json.loads(out)} == {"Casa da Carol", "Escola Municipal"}
    # Again: nothing left to retire, and a one-line error says why.
    code, _, err = run(
        "certificates", "retire", "--id", str(certificate), "--beneficiary", "x", "--purpose",
        "y", "--deployment", str(deployment), "--keystore", str(keystore),
        env={"MCHAIN_KEY_PASSWORD": PASSWORD},
    )  # fmt: skip
    assert code == 1
    assert "holds 0 Wh of certificate" in err


def test_export_writes_energytag_bundles_and_irec_rows(deployment: Path) -> None:
    code, out, err = run(
        "certificates", "export", "--period", "2026-11", "--format", "energytag",
        "--deployment", str(deployment),
    )  # fmt: skip
    assert code == 0, err
    document = json.loads(out)
    assert document["issued_wh"] == 1_500
    statuses = {(b["certificate_bundle_status"], b["bundle_quantity"]) for b in document["bundles"]}
    assert statuses == {("Active", 500), ("Cancelled", 1_000)}
    bundle = document["bundles"][0]
    assert bundle["production_starting_interval"] == "2026-11-18T11:00:00+00:00"
    assert bundle["energy_source"] == "Solar" and bundle["country_of_issuance"] == "BR"
    code, out, err = run(
        "certificates", "export", "--period", "2026-11", "--format", "irec-csv",
        "--deployment", str(deployment),
    )  # fmt: skip
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["record_type"], r["volume_wh"], r["beneficiary"]) for r in rows] == [
        ("issue", "1500", ""),
        ("redemption", "1000", "Casa da Carol"),
    ]
    assert rows[0]["volume_mwh"] == "0.001500"


def test_a_statement_prints_as_json_and_as_a_page_and_is_recorded_once(
    deployment: Path, tmp_path: Path
) -> None:
    page = tmp_path / "carol.html"
    code, out, err = run(
        "statement", "--meter", "carol", "--period", "2026-11", "--json", "--html", str(page),
        "--lang", "pt-BR", "--record", "--deployment", str(deployment),
    )  # fmt: skip
    assert code == 0, err
    document = json.loads(out)
    assert document["meter_id"] == "carol" and document["period"] == "2026-11"
    assert document["certificates"]["retired_for_meter_wh"] == 1_000
    assert document["payment"]["recorded_hash"] == document["statement_hash"]
    assert "Extrato de energia" in page.read_text()
    code, _, err = run(
        "statement", "--meter", "carol", "--period", "2026-11", "--record",
        "--deployment", str(deployment),
    )  # fmt: skip
    assert code == 1
    assert "StatementAlreadyRecorded" in err


def test_a_malformed_period_is_a_one_line_error(deployment: Path) -> None:
    code, _, err = run(
        "statement", "--meter", "carol", "--period", "2026-13", "--deployment", str(deployment)
    )
    assert code == 1
    assert "period '2026-13' is not a calendar month; write it as YYYY-MM" in err
    assert "Traceback" not in err
