"""The packed calldata of EnergyMarket's settleBatch and settleDelivery, and their arithmetic.

Pure functions, no chain: they pack what the contract unpacks (layouts in EnergyMarket.sol),
compute each meter's position exactly as settleBatch does, and what a delivery pays and
charges exactly as settleDelivery does, so the operator can re-submit positions and tests can
predict balances.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from meterchain.chain.errors import ChainError
from meterchain.chain.signing import SignedOrder, SignedReading

ORDER_BYTES = 122
TRADE_BYTES = 16
MAX_ORDERS = 2**16 - 1
MILLI = 1000
_HAS_POSITION = 1
_HAS_READING = 2

OrderKey = tuple[bytes, int]


class BatchError(ChainError, ValueError):
    """A batch or delivery cannot be packed as given."""


@dataclass(frozen=True)
class BatchTrade:
    """A matched quantity between a buy and a sell order, named by their (meter id, nonce)."""

    buy: OrderKey
    sell: OrderKey
    quantity_wh: int
    price: int  # credit smallest units per kWh


@dataclass(frozen=True)
class Position:
    """A meter's net trades in one batch; values in thousandths of a smallest unit (exact)."""

    meter_id: bytes
    bought_wh: int = 0
    cost_milli: int = 0
    sold_wh: int = 0
    value_milli: int = 0

    @property
    def escrow(self) -> int:
        """Smallest units taken from the meter's balance when the batch settles."""
        return -(-self.cost_milli // MILLI)


@dataclass(frozen=True)
class PackedBatch:
    """settleBatch's arguments and the positions it will record."""

    orders: bytes
    trades: bytes
    positions: list[Position]


@dataclass(frozen=True)
class MeterSettlement:
    """What settleDelivery does to one meter's balance (smallest units)."""

    escrow: int  # released back to the meter
    credits: int  # includes the released escrow
    debit: int  # owed; the grid absorbs what the balance cannot pay


def pack_order(signed: SignedOrder) -> bytes:
    """meterId 32 | nonce 8 | side 1 | quantityWh 8 | limitPrice 8 | r 32 | s 32 | v 1."""
    order = signed.order
    if len(signed.signature) != 65:
        raise BatchError(f"order {order.key!r} has a {len(signed.signature)}-byte signature")
    return (
        order.meter_id
        + order.nonce.to_bytes(8, "big")
        + int(order.side).to_bytes(1, "big")
        + order.quantity_wh.to_bytes(8, "big")
        + order.limit_price.to_bytes(8, "big")
        + signed.signature
    )


def pack_trade(buy_index: int, sell_index: int, quantity_wh: int, price: int) -> bytes:
    """buyOrderIndex 2 | sellOrderIndex 2 | quantityWh 4 | price 8."""
    for name, value, limit in (
        ("buy order index", buy_index, 2**16),
        ("sell order index", sell_index, 2**16),
        ("trade quantity_wh", quantity_wh, 2**32),
        ("trade price", price, 2**64),
    ):
        if not 0 <= value < limit:
            raise BatchError(f"{name} {value} does not fit the packed trade (0..{limit - 1})")
    return (
        buy_index.to_bytes(2, "big")
        + sell_index.to_bytes(2, "big")
        + quantity_wh.to_bytes(4, "big")
        + price.to_bytes(8, "big")
    )


def pack_batch(orders: Iterable[SignedOrder], trades: Sequence[BatchTrade]) -> PackedBatch:
    """Sort the orders by (meter id, nonce), refer to them by index, compute the positions."""
    book = sorted(orders, key=lambda signed: signed.order.key)
    if len(book) > MAX_ORDERS:
        raise BatchError(f"{len(book)} orders in one batch; at most {MAX_ORDERS}: split it")
    index: dict[OrderKey, int] = {}
    for i, signed in enumerate(book):
        if signed.order.key in index:
            raise BatchError(f"order {_show_key(signed.order.key)} appears twice in the batch")
        index[signed.order.key] = i
    packed_trades = []
    for trade in trades:
        for key in (trade.buy, trade.sell):
            if key not in index:
                raise BatchError(
                    f"trade refers to order {_show_key(key)}, which is not in the batch"
                )
        packed_trades.append(
            pack_trade(index[trade.buy], index[trade.sell], trade.quantity_wh, trade.price)
        )
    return PackedBatch(
        orders=b"".join(pack_order(signed) for signed in book),
        trades=b"".join(packed_trades),
        positions=compute_positions(trades),
    )


def compute_positions(trades: Iterable[BatchTrade]) -> list[Position]:
    """Each trading meter's position, sorted by meter id, as settleBatch records it."""
    sums: dict[bytes, list[int]] = {}
    for trade in trades:
        value = trade.quantity_wh * trade.price
        buyer = sums.setdefault(trade.buy[0], [0, 0, 0, 0])
        buyer[0] += trade.quantity_wh
        buyer[1] += value
        seller = sums.setdefault(trade.sell[0], [0, 0, 0, 0])
        seller[2] += trade.quantity_wh
        seller[3] += value
    return [Position(meter_id, *sums[meter_id]) for meter_id in sorted(sums)]


def pack_delivery(positions: Sequence[Position], readings: Sequence[SignedReading]) -> bytes:
    """One entry per meter, sorted by meter id: its position (if any) and its reading (if any)."""
    by_meter: dict[bytes, tuple[Position | None, SignedReading | None]] = {}
    for position in positions:
        if position.meter_id in by_meter:
            raise BatchError(f"two positions for meter {_show_id(position.meter_id)}")
        by_meter[position.meter_id] = (position, None)
    for reading in readings:
        meter_id = reading.reading.meter_id
        known, existing = by_meter.get(meter_id, (None, None))
        if existing is not None:
            raise BatchError(f"two readings for meter {_show_id(meter_id)} in one delivery")
        by_meter[meter_id] = (known, reading)
    return b"".join(
        pack_delivery_entry(meter_id, *by_meter[meter_id]) for meter_id in sorted(by_meter)
    )


def pack_delivery_entry(
    meter_id: bytes, position: Position | None, reading: SignedReading | None
) -> bytes:
    """meterId 32 | flags 1 | [boughtWh 8 | costMilli 16 | soldWh 8 | valueMilli 16]
    | [importWh 8 | exportWh 8 | r 32 | s 32 | v 1]."""
    flags = (_HAS_POSITION if position else 0) | (_HAS_READING if reading else 0)
    entry = meter_id + bytes([flags])
    if position is not None:
        entry += (
            position.bought_wh.to_bytes(8, "big")
            + position.cost_milli.to_bytes(16, "big")
            + position.sold_wh.to_bytes(8, "big")
            + position.value_milli.to_bytes(16, "big")
        )
    if reading is not None:
        entry += (
            reading.reading.import_wh.to_bytes(8, "big")
            + reading.reading.export_wh.to_bytes(8, "big")
            + reading.signature
        )
    return entry


@dataclass(frozen=True)
class DeliveredMeter:
    """One meter's line of a DeliverySettled event."""

    meter_id: bytes
    imported_wh: int
    exported_wh: int
    balance_change: int  # smallest units, released escrow included


def decode_positions(packed: bytes) -> list[Position]:
    """BatchSettled's `positions`: meterId 32 | boughtWh 8 | costMilli 16 | soldWh 8 | valueMilli 16
    (80 bytes each)."""
    if len(packed) % 80:
        raise BatchError(f"packed positions of {len(packed)} bytes are not a multiple of 80")
    return [
        Position(
            meter_id=packed[at : at + 32],
            bought_wh=int.from_bytes(packed[at + 32 : at + 40], "big"),
            cost_milli=int.from_bytes(packed[at + 40 : at + 56], "big"),
            sold_wh=int.from_bytes(packed[at + 56 : at + 64], "big"),
            value_milli=int.from_bytes(packed[at + 64 : at + 80], "big"),
        )
        for at in range(0, len(packed), 80)
    ]


def decode_settlements(packed: bytes) -> list[DeliveredMeter]:
    """DeliverySettled's `settlements`: meterId 32 | importedWh 8 | exportedWh 8 | change int128."""
    if len(packed) % 64:
        raise BatchError(f"packed settlements of {len(packed)} bytes are not a multiple of 64")
    return [
        DeliveredMeter(
            meter_id=packed[at : at + 32],
            imported_wh=int.from_bytes(packed[at + 32 : at + 40], "big"),
            exported_wh=int.from_bytes(packed[at + 40 : at + 48], "big"),
            balance_change=int.from_bytes(packed[at + 48 : at + 64], "big", signed=True),
        )
        for at in range(0, len(packed), 64)
    ]


def settle_meter(
    position: Position | None,
    imported_wh: int,
    exported_wh: int,
    retail_price: int,
    feed_in_price: int,
) -> MeterSettlement:
    """What settleDelivery pays and charges one meter (EnergyMarket._meterAmounts).

    Energy received from the market is what was bought, up to what was imported; the rest of
    the import is bought from the grid at the retail price. Energy delivered to the market is
    what was sold, up to what was exported; the rest of the export goes to the grid at the
    feed-in price. Buyers get back the escrow of what they did not receive; sellers are paid
    pro rata for what they delivered. Credits round down and debits up, once per meter.
    """
    p = position or Position(meter_id=b"")
    received_wh = min(p.bought_wh, imported_wh)
    delivered_wh = min(p.sold_wh, exported_wh)
    debit_milli = (imported_wh - received_wh) * retail_price
    if received_wh:
        debit_milli += -(-(p.cost_milli * received_wh) // p.bought_wh)
    credit_milli = (exported_wh - delivered_wh) * feed_in_price
    if delivered_wh:
        credit_milli += p.value_milli * delivered_wh // p.sold_wh
    return MeterSettlement(
        escrow=p.escrow,
        credits=p.escrow + credit_milli // MILLI,
        debit=-(-debit_milli // MILLI),
    )


def _show_id(meter_id: bytes) -> str:
    return meter_id.rstrip(b"\x00").decode("utf-8", errors="replace")


def _show_key(key: OrderKey) -> str:
    return f"{_show_id(key[0])}#{key[1]}"
