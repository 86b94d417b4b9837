"""`meterchain chain up|deploy|key`, run as a user runs them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from typer.testing import CliRunner
from web3 import Web3

from meterchain.chain.deployment import load_deployment
from meterchain.chain.keystore import TEST_SCRYPT_N, keystore_address
from meterchain.chain.node import AnvilNode, connect, start_anvil, stop_anvil
from meterchain.chain.sender import TransactionSender
from meterchain.cli import app

MAIN = Path(sys.executable).parent / "meterchain"
SUITE = {"MeterRegistry", "EnergyCredit", "EnergyMarket", "EnergyCertificates", "Billing"}
VOLTA_CHAIN_ID = 73799
runner = CliRunner()


def chain(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["chain", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def other_chain() -> Iterator[AnvilNode]:
    """A node whose chain id is not anvil's: stands for Energy Web Volta."""
    node = start_anvil(chain_id=VOLTA_CHAIN_ID)
    yield node
    stop_anvil(node)


def test_key_new_prints_the_address_and_nothing_secret(tmp_path: Path) -> None:
    keystore = tmp_path / "board.json"
    code, out, _ = chain(
        "key", "new", "--keystore", str(keystore), "--scrypt-n", str(TEST_SCRYPT_N),
        env={"MCHAIN_KEY_PASSWORD": "s3cret"},
    )  # fmt: skip
    assert code == 0
    assert out.strip() == keystore_address(keystore)
    assert "s3cret" not in out
    code, out, _ = chain("key", "address", "--keystore", str(keystore))
    assert (code, out.strip()) == (0, keystore_address(keystore))


def test_key_new_without_a_password_fails_with_a_message(tmp_path: Path) -> None:
    code, _, err = chain(
        "key", "new", "--keystore", str(tmp_path / "k.json"), env={"MCHAIN_KEY_PASSWORD": ""}
    )
    assert code == 1
    assert "KeystoreError: no keystore password" in err
    assert not (tmp_path / "k.json").exists()


def test_deploy_on_anvil_writes_the_deployment_file_and_prints_json(
    anvil: AnvilNode, w3: Web3, chain_snapshot: str, tmp_path: Path
) -> None:
    path = tmp_path / "deployment.json"
    code, out, err = chain("deploy", "--rpc", anvil.rpc_url, "--json", "--deployment", str(path))
    assert code == 0, err
    addresses = json.loads(out)
    assert set(addresses) == SUITE
    deployment = load_deployment(path)
    assert deployment.contracts == addresses
    assert (deployment.chain_id, deployment.rpc_url) == (31337, anvil.rpc_url)
    for address in addresses.values():
        assert len(w3.eth.get_code(address)) > 0
    first_block = w3.eth.get_block(deployment.deployed_at_block)
    assert first_block["transactions"], "the first deployment tx is in deployed_at_block"


def test_deploy_refuses_anvils_dev_key_on_another_chain(other_chain: AnvilNode) -> None:
    code, _, err = chain("deploy", "--rpc", other_chain.rpc_url)
    assert code == 1
    assert f"chain {VOLTA_CHAIN_ID} is not a local anvil" in err
    assert "--keystore" in err


def test_deploy_with_a_keystore_uses_that_key(
    other_chain: AnvilNode, deployer: LocalAccount, tmp_path: Path
) -> None:
    keystore = tmp_path / "operator.json"
    env = {"MCHAIN_KEY_PASSWORD": "operator-pw"}
    chain(*("key", "new", "--keystore", str(keystore), "--scrypt-n", str(TEST_SCRYPT_N)), env=env)
    operator = keystore_address(keystore)
    w3 = connect(other_chain.rpc_url)
    transfer: dict[str, Any] = {"to": operator, "value": 10**18, "gas": 21_000, "nonce": 0}
    funding = deployer.sign_transaction(
        {**transfer, "gasPrice": 2 * 10**9, "chainId": VOLTA_CHAIN_ID}
    )
    w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(funding.raw_transaction))

    path = tmp_path / "deployment.json"
    code, _, err = chain(
        "deploy", "--rpc", other_chain.rpc_url, "--keystore", str(keystore),
        "--deployment", str(path), env=env,
    )  # fmt: skip
    assert code == 0, err
    deployment = load_deployment(path)
    assert deployment.deployer == operator
    assert deployment.chain_id == VOLTA_CHAIN_ID


def test_deploy_to_a_chain_that_is_down_names_the_url() -> None:
    url = "http://127.0.0.1:9"  # discard port: nothing listens there
    code, _, err = chain("deploy", "--rpc", url)
    assert code == 1
    assert f"ChainUnavailable: no answer from the chain node at {url}" in err


def _chain_up(state: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [str(MAIN), "chain", "up", "--port", "0", "--state", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), process.stderr.read() if process.stderr else ""
    return process, url


def test_chain_up_keeps_the_chain_across_a_restart(tmp_path: Path, deployer: LocalAccount) -> None:
    state = tmp_path / "chain"
    process, url = _chain_up(state)
    try:
        w3 = connect(url)
        bytecode = "0x600a600c600039600a6000f3602a60005260206000f3"  # returns 42
        address, _ = TransactionSender(w3, deployer).deploy([], bytecode)
        height = w3.eth.block_number
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "saved" in err

    process, url = _chain_up(state)
    try:
        w3 = connect(url)
        assert w3.eth.get_code(address).hex() == "602a60005260206000f3"
        assert w3.eth.block_number == height
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err


def test_a_meter_registered_then_replaced_resumes_from_its_new_baseline(
    anvil: AnvilNode, chain_snapshot: str, tmp_path: Path
) -> None:
    """`agent register` records the installation registers; `grid baseline` the new meter's."""
    from meterchain.chain.client import EnergyMarketClient
    from meterchain.chain.node import dev_account

    path = tmp_path / "deployment.json"
    assert chain("deploy", "--rpc", anvil.rpc_url, "--deployment", str(path))[0] == 0
    board = "0x" + "b0" * 20
    common = ["--deployment", str(path)]
    registered = runner.invoke(
        app,
        ["agent", "register", "--meter-id", "m-42", "--signer", board, "--max-power-w", "9000",
         "--import-wh", "5000", "--baseline-at", "2026-12-05T10:05:00+00:00", *common],
    )  # fmt: skip
    assert registered.exit_code == 0, registered.stderr
    replaced = runner.invoke(
        app,
        ["grid", "baseline", "--meter-id", "m-42", "--import-wh", "3", "--export-wh", "0",
         "--at", "2026-12-05T12:10:00+00:00", *common],
    )  # fmt: skip
    assert replaced.exit_code == 0, replaced.stderr
    assert "meter replaced" in replaced.stdout
    market = EnergyMarketClient(
        TransactionSender(connect(anvil.rpc_url), dev_account(9)),
        load_deployment(path).address("EnergyMarket"),
    )
    account = market.meter_account("m-42")
    quarter_to_noon = 1_796_471_100  # 11:45Z: the interval before the one 12:10 falls in
    assert (account.last_interval, account.import_wh, account.export_wh) == (
        quarter_to_noon,
        3,
        0,
    )
    assert market.registry.meter("m-42").max_power_w == 9000
    rewind = runner.invoke(
        app,
        ["grid", "baseline", "--meter-id", "m-42", "--import-wh", "0", "--export-wh", "0",
         "--at", "2026-12-05T09:00:00+00:00", *common],
    )  # fmt: skip
    assert rewind.exit_code == 1
    assert "BaselineBeforeLastSettled" in rewind.stderr
