"""The one transaction sender: nonces, batches, receipts, decoded reverts, a node that is down."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from meterchain.chain.errors import ChainUnavailable, TransactionReverted
from meterchain.chain.node import connect, start_anvil, stop_anvil
from meterchain.chain.sender import RevertDecoder, TransactionSender


def test_a_transaction_is_mined_and_changes_state(
    sender: TransactionSender, probe: Contract
) -> None:
    receipt = sender.transact(probe.functions.bump(5))
    assert receipt["status"] == 1
    assert probe.functions.total().call() == 5


def test_a_burst_of_200_transactions_gets_consecutive_nonces_and_all_land(
    w3: Web3, sender: TransactionSender, probe: Contract, deployer: LocalAccount
) -> None:
    first_nonce = w3.eth.get_transaction_count(deployer.address)
    receipts = sender.transact_many([probe.functions.bump(1) for _ in range(200)])
    assert [r["status"] for r in receipts] == [1] * 200
    nonces = [w3.eth.get_transaction(r["transactionHash"])["nonce"] for r in receipts]
    assert nonces == list(range(first_nonce, first_nonce + 200))
    assert probe.functions.total().call() == 200


def test_a_stale_local_nonce_is_resynchronised_from_the_node(
    w3: Web3, sender: TransactionSender, probe: Contract, deployer: LocalAccount
) -> None:
    sender.transact(probe.functions.bump(1))  # the sender now caches its next nonce
    # Someone else uses that nonce (with other calldata: an identical call would be the very
    # same signed transaction, hash and all).
    TransactionSender(w3, deployer).transact(probe.functions.bump(2))
    receipt = sender.transact(probe.functions.bump(4))
    assert receipt["status"] == 1
    assert probe.functions.total().call() == 7


def test_a_custom_error_is_decoded_from_the_gas_estimate_and_nothing_is_sent(
    w3: Web3, sender: TransactionSender, probe: Contract, deployer: LocalAccount
) -> None:
    nonce_before = w3.eth.get_transaction_count(deployer.address)
    with pytest.raises(TransactionReverted) as caught:
        sender.transact(probe.functions.bump(5000))
    error = caught.value
    assert error.error_name == "TooLarge"
    assert error.args[1:] == (5000, 1000)
    assert error.named_args["value"] == 5000
    assert error.tx_hash is None
    assert "TooLarge(id=0x" in str(error) and "value=5000, limit=1000" in str(error)
    assert w3.eth.get_transaction_count(deployer.address) == nonce_before


def test_a_custom_error_is_decoded_from_a_mined_failed_transaction(
    w3: Web3, sender: TransactionSender, probe: Contract
) -> None:
    with pytest.raises(TransactionReverted) as caught:
        sender.transact(probe.functions.bump(5000), gas=100_000)  # skips the estimate
    error = caught.value
    assert error.error_name == "TooLarge"
    assert error.args[1:] == (5000, 1000)
    assert error.tx_hash is not None
    assert w3.eth.get_transaction_receipt(error.tx_hash)["status"] == 0  # type: ignore[arg-type]
    assert error.tx_hash in str(error)


def test_the_failing_call_after_a_successful_one_in_the_same_block_is_decoded(
    sender: TransactionSender, probe: Contract
) -> None:
    with pytest.raises(TransactionReverted) as caught:
        sender.transact_many([probe.functions.settle(9), probe.functions.settle(9)], gas=100_000)
    error = caught.value
    assert error.error_name == "AlreadySettled"
    assert error.args == (9, sender.address)
    assert "transaction 2 of 2" in str(error)
    assert [r["status"] for r in error.receipts] == [1, 0]


def test_a_require_message_is_decoded(sender: TransactionSender, probe: Contract) -> None:
    for gas in (None, 100_000):
        with pytest.raises(TransactionReverted) as caught:
            sender.transact(probe.functions.refuse("meter revoked"), gas=gas)
        assert caught.value.error_name == "Error"
        assert caught.value.args == ("meter revoked",)


def test_a_panic_is_decoded_with_its_meaning(sender: TransactionSender, probe: Contract) -> None:
    with pytest.raises(TransactionReverted, match="division or modulo by zero") as caught:
        sender.transact(probe.functions.divide(0), gas=100_000)
    assert caught.value.error_name == "Panic"
    assert caught.value.args == (0x12,)


def test_a_revert_inside_a_burst_names_its_position_and_nothing_is_sent(
    w3: Web3, sender: TransactionSender, probe: Contract, deployer: LocalAccount
) -> None:
    nonce_before = w3.eth.get_transaction_count(deployer.address)
    calls = [probe.functions.bump(1), probe.functions.bump(2000), probe.functions.bump(1)]
    with pytest.raises(TransactionReverted, match=r"call 2 of 3.*TooLarge.*nothing was sent"):
        sender.transact_many(calls)
    assert w3.eth.get_transaction_count(deployer.address) == nonce_before


def test_errors_declared_in_other_abis_are_decoded() -> None:
    abi: list[dict[str, Any]] = [
        {
            "type": "error",
            "name": "TradeOutsideLimits",
            "inputs": [
                {"name": "orderId", "type": "uint64"},
                {
                    "name": "trade",
                    "type": "tuple",
                    "components": [
                        {"name": "priceCents", "type": "uint32"},
                        {"name": "energyWh", "type": "uint64"},
                    ],
                },
            ],
        }
    ]
    from eth_abi.abi import encode
    from eth_hash.auto import keccak

    selector = keccak(b"TradeOutsideLimits(uint64,(uint32,uint64))")[:4]
    data = selector + encode(["uint64", "(uint32,uint64)"], [7, (31, 1500)])
    name, values, named, _ = RevertDecoder([abi]).decode(data)
    assert (name, values) == ("TradeOutsideLimits", (7, (31, 1500)))
    assert named == {"orderId": 7, "trade": (31, 1500)}


def test_unknown_revert_data_is_shown_raw_rather_than_guessed() -> None:
    name, values, _, _ = RevertDecoder().decode(bytes.fromhex("deadbeef") + bytes(32))
    assert (name, values) == (None, ())
    error = TransactionReverted(error_name=None, revert_data=bytes.fromhex("deadbeef"))
    assert "0xdeadbeef" in str(error)


def test_a_node_that_goes_down_raises_chain_unavailable_naming_the_url(
    deployer: LocalAccount, probe_artifact: Any
) -> None:
    node = start_anvil()
    sender = TransactionSender(connect(node.rpc_url), deployer, retry_backoff_s=0.01)
    address, _ = sender.deploy(probe_artifact.abi, probe_artifact.bytecode)
    probe = sender.w3.eth.contract(address=address, abi=probe_artifact.abi)
    stop_anvil(node)
    with pytest.raises(ChainUnavailable, match=f"{node.rpc_url}.*connection refused"):
        sender.transact(probe.functions.bump(1))
