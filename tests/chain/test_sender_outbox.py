"""The outbox: a crash between signing, sending and the receipt never loses nor doubles a tx."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from meterchain.chain.errors import ChainUnavailable, TransactionReverted, TransactionTimeout
from meterchain.chain.node import connect, start_anvil, stop_anvil
from meterchain.chain.sender import TransactionSender, _Signed
from meterchain.store.db import open_store
from meterchain.store.outbox import Outbox, OutboxStatus


class Crash(Exception):
    """Stands for the process dying at a chosen point."""


class CrashBeforeSend(TransactionSender):
    def _send_raw_batch(self, items: list[_Signed]) -> list[str | None]:
        raise Crash


class CrashBeforeReceipt(TransactionSender):
    def _send_all(self, items: list[_Signed], *, rebuild: bool = True) -> None:
        super()._send_all(items, rebuild=rebuild)
        raise Crash


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(open_store(f"sqlite:///{tmp_path / 'board.db'}"))


def test_a_crash_between_sign_and_send_is_finished_exactly_once(
    w3: Web3, deployer: LocalAccount, probe: Contract, outbox: Outbox, chain_snapshot: str
) -> None:
    with pytest.raises(Crash):
        CrashBeforeSend(w3, deployer, outbox=outbox).transact(
            probe.functions.settle(7), key="settle-7"
        )
    recorded = outbox.get("settle-7")
    assert recorded is not None and recorded.status is OutboxStatus.PENDING
    assert probe.functions.settlements().call() == 0

    restarted = TransactionSender(w3, deployer, outbox=outbox)
    receipt = restarted.transact(probe.functions.settle(7), key="settle-7")

    assert receipt["transactionHash"].to_0x_hex() == recorded.tx_hash
    assert w3.eth.get_transaction(recorded.tx_hash)["nonce"] == recorded.nonce  # type: ignore[arg-type]
    assert probe.functions.settlements().call() == 1
    finished = outbox.get("settle-7")
    assert finished is not None and finished.status is OutboxStatus.MINED
    assert finished.block_number == receipt["blockNumber"]


def test_a_crash_before_the_receipt_returns_the_same_transaction_without_resending(
    w3: Web3, deployer: LocalAccount, probe: Contract, outbox: Outbox, chain_snapshot: str
) -> None:
    with pytest.raises(Crash):
        CrashBeforeReceipt(w3, deployer, outbox=outbox).transact(
            probe.functions.settle(8), key="settle-8"
        )
    recorded = outbox.get("settle-8")
    assert recorded is not None and recorded.status is OutboxStatus.SENT
    nonce_after_crash = w3.eth.get_transaction_count(deployer.address)

    receipt = TransactionSender(w3, deployer, outbox=outbox).transact(
        probe.functions.settle(8), key="settle-8"
    )
    assert receipt["transactionHash"].to_0x_hex() == recorded.tx_hash
    assert w3.eth.get_transaction_count(deployer.address) == nonce_after_crash
    assert probe.functions.settlements().call() == 1


def test_calling_again_with_a_finished_key_sends_nothing(
    w3: Web3, deployer: LocalAccount, probe: Contract, outbox: Outbox, chain_snapshot: str
) -> None:
    sender = TransactionSender(w3, deployer, outbox=outbox)
    first = sender.transact(probe.functions.settle(3), key="settle-3")
    again = sender.transact(probe.functions.settle(3), key="settle-3")
    assert again["transactionHash"] == first["transactionHash"]
    assert probe.functions.settlements().call() == 1


def test_a_recorded_tx_whose_nonce_was_taken_is_rebuilt_once(
    w3: Web3, deployer: LocalAccount, probe: Contract, outbox: Outbox, chain_snapshot: str
) -> None:
    with pytest.raises(Crash):
        CrashBeforeSend(w3, deployer, outbox=outbox).transact(
            probe.functions.settle(5), key="settle-5"
        )
    recorded = outbox.get("settle-5")
    assert recorded is not None
    sender = TransactionSender(w3, deployer, outbox=outbox)
    sender.transact(probe.functions.bump(1))  # takes the recorded transaction's nonce

    receipt = sender.transact(probe.functions.settle(5), key="settle-5")
    rebuilt = outbox.get("settle-5")
    assert rebuilt is not None and rebuilt.status is OutboxStatus.MINED
    assert rebuilt.tx_hash == receipt["transactionHash"].to_0x_hex() != recorded.tx_hash
    assert rebuilt.nonce == recorded.nonce + 1
    assert probe.functions.settlements().call() == 1


def test_resume_outbox_sends_what_a_crash_left_behind(
    w3: Web3, deployer: LocalAccount, probe: Contract, outbox: Outbox, chain_snapshot: str
) -> None:
    with pytest.raises(Crash):
        CrashBeforeSend(w3, deployer, outbox=outbox).transact_many(
            [probe.functions.settle(1), probe.functions.settle(2)], keys=["s-1", "s-2"]
        )
    entries = TransactionSender(w3, deployer, outbox=outbox).resume_outbox()
    assert [(e.key, e.status) for e in entries] == [
        ("s-1", OutboxStatus.MINED),
        ("s-2", OutboxStatus.MINED),
    ]
    assert probe.functions.settlements().call() == 2


def test_a_reverted_keyed_transaction_stays_failed_and_is_not_resent(
    w3: Web3, deployer: LocalAccount, probe: Contract, outbox: Outbox, chain_snapshot: str
) -> None:
    sender = TransactionSender(w3, deployer, outbox=outbox)
    sender.transact(probe.functions.settle(4), key="first")
    with pytest.raises(TransactionReverted, match="AlreadySettled"):
        sender.transact(probe.functions.settle(4), key="second", gas=100_000)
    nonce = w3.eth.get_transaction_count(deployer.address)
    with pytest.raises(TransactionReverted, match="AlreadySettled"):
        sender.transact(probe.functions.settle(4), key="second", gas=100_000)
    assert w3.eth.get_transaction_count(deployer.address) == nonce
    failed = outbox.get("second")
    assert failed is not None and failed.status is OutboxStatus.FAILED


def test_keys_without_an_outbox_are_refused(sender: TransactionSender, probe: Contract) -> None:
    with pytest.raises(ValueError, match="outbox"):
        sender.transact(probe.functions.bump(1), key="k")


def test_a_transaction_not_mined_in_time_is_finished_by_calling_again_with_its_key(
    deployer: LocalAccount, probe_artifact: Any, outbox: Outbox
) -> None:
    node = start_anvil(no_mining=True)
    try:
        w3 = connect(node.rpc_url)
        sender = TransactionSender(w3, deployer, outbox=outbox, receipt_timeout_s=0.3)
        deployment = w3.eth.contract(abi=probe_artifact.abi, bytecode=probe_artifact.bytecode)
        with pytest.raises(TransactionTimeout, match="call again with key 'deploy-probe'"):
            sender.transact(deployment.constructor(), key="deploy-probe")
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        receipt = sender.transact(deployment.constructor(), key="deploy-probe")
        assert receipt["status"] == 1
        assert w3.eth.get_transaction_count(deployer.address) == 1
    finally:
        stop_anvil(node)


def test_a_node_lost_while_waiting_names_the_transaction_to_finish(
    deployer: LocalAccount, probe_artifact: Any, outbox: Outbox
) -> None:
    node = start_anvil(no_mining=True)
    w3 = connect(node.rpc_url)
    sender = TransactionSender(w3, deployer, outbox=outbox, retry_backoff_s=0.01)
    deployment = w3.eth.contract(abi=probe_artifact.abi, bytecode=probe_artifact.bytecode)
    threading.Timer(0.3, stop_anvil, args=(node,)).start()
    with pytest.raises(ChainUnavailable, match=r"while waiting for 0x[0-9a-f]{64}.*'deploy'"):
        sender.transact(deployment.constructor(), key="deploy", gas=1_000_000)
    entry = outbox.get("deploy")
    assert entry is not None and entry.status is OutboxStatus.SENT
