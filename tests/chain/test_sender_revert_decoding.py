"""Revert data decoding, fuzzed: any bytes decode or are reported raw, never raise."""

from __future__ import annotations

from typing import Any

from eth_abi.abi import encode
from eth_hash.auto import keccak
from hypothesis import given
from hypothesis import strategies as st
from web3 import Web3

from meterchain.chain.sender import RevertDecoder

ABI: list[dict[str, Any]] = [
    {
        "type": "error",
        "name": "PriceAboveLimit",
        "inputs": [
            {"name": "orderId", "type": "bytes32"},
            {"name": "price", "type": "uint256"},
            {"name": "limit", "type": "uint256"},
        ],
    },
    {
        "type": "error",
        "name": "NotSigner",
        "inputs": [{"name": "meter", "type": "bytes32"}, {"name": "who", "type": "address"}],
    },
]
DECODER = RevertDecoder([ABI])
uint256 = st.integers(min_value=0, max_value=2**256 - 1)


SELECTORS = [
    keccak(b"PriceAboveLimit(bytes32,uint256,uint256)")[:4],
    keccak(b"NotSigner(bytes32,address)")[:4],
    bytes.fromhex("08c379a0"),  # Error(string)
    bytes.fromhex("4e487b71"),  # Panic(uint256)
    b"",
]


@given(st.sampled_from(SELECTORS), st.binary(max_size=300))
def test_arbitrary_revert_data_never_raises(selector: bytes, body: bytes) -> None:
    name, values, named, _ = DECODER.decode(selector + body)
    assert name is None or name in {"PriceAboveLimit", "NotSigner", "Error", "Panic"}
    if name is None:
        assert values == () and named == {}


@given(st.binary(min_size=32, max_size=32), uint256, uint256)
def test_a_custom_error_round_trips(order_id: bytes, price: int, limit: int) -> None:
    data = keccak(b"PriceAboveLimit(bytes32,uint256,uint256)")[:4] + encode(
        ["bytes32", "uint256", "uint256"], [order_id, price, limit]
    )
    name, values, named, _ = DECODER.decode(data)
    assert (name, values) == ("PriceAboveLimit", (order_id, price, limit))
    assert named == {"orderId": order_id, "price": price, "limit": limit}


@given(st.binary(min_size=20, max_size=20))
def test_addresses_come_back_checksummed(raw: bytes) -> None:
    address = Web3.to_checksum_address(raw)
    data = keccak(b"NotSigner(bytes32,address)")[:4] + encode(
        ["bytes32", "address"], [bytes(32), address]
    )
    assert DECODER.decode(data)[1] == (bytes(32), address)


@given(st.text(max_size=80))
def test_require_messages_round_trip(message: str) -> None:
    data = bytes.fromhex("08c379a0") + encode(["string"], [message])
    assert DECODER.decode(data)[:2] == ("Error", (message,))


def test_truncated_custom_error_data_is_reported_not_guessed() -> None:
    selector = keccak(b"PriceAboveLimit(bytes32,uint256,uint256)")[:4]
    name, _, _, detail = DECODER.decode(selector + bytes(40))
    assert name is None
    assert detail is not None and "undecodable" in detail
