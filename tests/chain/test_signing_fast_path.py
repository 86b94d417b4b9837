"""The direct EIP-712 encoding equals eth-account's general typed-data encoder."""

from __future__ import annotations

from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from meterchain.chain.signing import (
    MarketDomain,
    OrderMessage,
    OrderSide,
    ReadingMessage,
    order_digest,
    reading_digest,
    recover_order_signer,
    recover_reading_signer,
    sign_order,
    sign_reading,
    typed_data_digests,
)

U64 = st.integers(min_value=1, max_value=2**64 - 1)
ACCOUNT = Account.from_key(b"\x11" * 32)


@settings(max_examples=60, deadline=None)
@given(
    chain_id=st.integers(min_value=1, max_value=2**32),
    market=st.binary(min_size=20, max_size=20),
    meter=st.binary(min_size=1, max_size=32).filter(lambda b: b"\x00" not in b),
    interval=U64,
    side=st.sampled_from(list(OrderSide)),
    quantity=U64,
    price=st.integers(min_value=0, max_value=2**64 - 1),
    nonce=st.integers(min_value=0, max_value=2**64 - 1),
    import_wh=st.integers(min_value=0, max_value=2**64 - 1),
    export_wh=st.integers(min_value=0, max_value=2**64 - 1),
)
def test_direct_digests_equal_the_typed_data_encoder(
    chain_id: int,
    market: bytes,
    meter: bytes,
    interval: int,
    side: OrderSide,
    quantity: int,
    price: int,
    nonce: int,
    import_wh: int,
    export_wh: int,
) -> None:
    domain = MarketDomain(chain_id, "0x" + market.hex())
    meter_id = meter.ljust(32, b"\x00")
    order = OrderMessage(meter_id, interval, side, quantity, price, nonce)
    reading = ReadingMessage(meter_id, interval, export_wh, import_wh, import_wh, export_wh)
    assert (order_digest(domain, order), reading_digest(domain, reading)) == typed_data_digests(
        domain, order, reading
    )


def test_signatures_made_on_the_fast_path_recover_to_the_signer() -> None:
    domain = MarketDomain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
    meter_id = b"30010001".ljust(32, b"\x00")
    order = sign_order(
        domain, OrderMessage(meter_id, 1_795_489_200, OrderSide.SELL, 500, 60, 0), ACCOUNT
    )
    reading = sign_reading(domain, ReadingMessage(meter_id, 1_795_489_200, 1, 2, 10, 20), ACCOUNT)
    assert recover_order_signer(domain, order) == ACCOUNT.address
    assert recover_reading_signer(domain, reading) == ACCOUNT.address
    other_domain = MarketDomain(31337, "0x" + "22" * 20)
    assert recover_order_signer(other_domain, order) != ACCOUNT.address
