"""`meterchain prepaid …` as a utility and a household run it, on a real anvil node."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner
from web3 import Web3

from meterchain.chain.keystore import TEST_SCRYPT_N
from meterchain.chain.node import AnvilNode, dev_account
from meterchain.cli import app

runner = CliRunner()
METER = "40020003"
ENV = {"MCHAIN_KEY_PASSWORD": "pw"}


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=ENV)
    return result.exit_code, result.stdout, result.stderr


def ok(*args: str) -> str:
    code, out, err = run(*args)
    assert code == 0, err
    return out


@pytest.fixture
def setup(anvil: AnvilNode, w3: Web3, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A suite, a PrepaidMeter with a funded float and a vending key, one prepaid meter."""
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    deployment = str(tmp_path / "deployment.json")
    vending = tmp_path / "vending.json"
    ok("agent", "dev-keystore", "--keystore", str(vending), "--index", "3",
       "--scrypt-n", str(TEST_SCRYPT_N))  # fmt: skip
    ok("chain", "deploy", "--rpc", anvil.rpc_url, "--deployment", deployment)
    out = ok("prepaid", "deploy", "--deployment", deployment, "--vending-key",
             dev_account(3).address, "--float", "500", "--mint", "--json",
             "--emergency-credit", "2", "--advance-buffer", "1")  # fmt: skip
    prepaid = json.loads(out)["PrepaidMeter"]
    ok("agent", "register", "--meter-id", METER, "--signer", dev_account(8).address,
       "--owner", prepaid, "--kind", "consumer", "--deployment", deployment)  # fmt: skip
    holder = dev_account(4).address
    ok("prepaid", "enrol", "--meter", METER, "--holder", holder, "--deployment", deployment)
    yield {"deployment": deployment, "vending": str(vending), "prepaid": prepaid}
    w3.provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]


def test_status_json_has_exactly_the_fields_the_issue_names(setup: dict[str, str]) -> None:
    out = ok("prepaid", "status", "--meter", METER, "--json", "--deployment", setup["deployment"])
    status = json.loads(out)
    assert set(status) == {"meter_id", "credit", "state", "since"}
    assert status["meter_id"] == METER
    assert status["credit"] == 0.0
    assert status["state"] == "grace"  # a new meter starts on its emergency credit
    assert status["since"].endswith("Z")


def test_topup_from_the_wallet_raises_the_credit(setup: dict[str, str]) -> None:
    out = ok("prepaid", "topup", "--meter", METER, "--amount", "20", "--mint", "--json",
             "--deployment", setup["deployment"])  # fmt: skip
    result = json.loads(out)
    assert result["amount"] == 20.0
    out = ok("prepaid", "status", "--meter", METER, "--json", "--deployment", setup["deployment"])
    assert json.loads(out)["state"] == "supplied"
    assert json.loads(out)["credit"] == 20.0


def test_voucher_new_prints_a_code_that_redeems_once(setup: dict[str, str]) -> None:
    out = ok("prepaid", "voucher", "new", "--meter", METER, "--amount", "12.50", "--json",
             "--vending-keystore", setup["vending"], "--serial", "41",
             "--deployment", setup["deployment"])  # fmt: skip
    issued = json.loads(out)
    assert (issued["meter_id"], issued["amount"], issued["serial"]) == (METER, 12.5, 41)
    code = issued["code"]
    out = ok("prepaid", "voucher", "redeem", "--meter", METER, "--code", code, "--json",
             "--deployment", setup["deployment"])  # fmt: skip
    assert json.loads(out)["after_credit"] == 12.5
    exit_code, _, err = run("prepaid", "voucher", "redeem", "--meter", METER, "--code", code,
                            "--deployment", setup["deployment"])  # fmt: skip
    assert exit_code == 1
    assert "VoucherAlreadyUsed" in err and "41" in err


def test_bad_input_gets_one_line_errors(setup: dict[str, str]) -> None:
    d = setup["deployment"]
    code, _, err = run("prepaid", "topup", "--meter", METER, "--amount", "lots", "--deployment", d)
    assert code == 1 and "not a number" in err
    code, _, err = run("prepaid", "status", "--meter", "nobody", "--deployment", d)
    assert code == 1 and "is not prepaid" in err
    code, _, err = run("prepaid", "voucher", "redeem", "--meter", METER, "--code", "HELLO-0",
                       "--deployment", d)  # fmt: skip
    assert code == 1 and "only letters A-Z and digits 2-7" in err
    wrong_key = str(Path(setup["vending"]).with_name("other.json"))
    ok("agent", "dev-keystore", "--keystore", wrong_key, "--index", "6",
       "--scrypt-n", str(TEST_SCRYPT_N))  # fmt: skip
    code, _, err = run("prepaid", "voucher", "new", "--meter", METER, "--amount", "5",
                       "--vending-keystore", wrong_key, "--deployment", d)  # fmt: skip
    assert code == 1 and "is not the vending key" in err
    code, _, err = run("prepaid", "status", "--meter", METER, "--deployment", "/nonexistent.json")
    assert code == 1 and "no deployment file" in err
