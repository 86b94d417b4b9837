"""The packed calldata of EnergyMarket's settleBatch and settleDelivery, and their arithmetic.

Pure functions, no chain: they pack what the contract unpacks (layouts in PackedCalldata.sol),
compute each meter's position exactly as settleBatch does, what a batch locks and what a
delivery pays and charges exactly as the Settlement library does, and which readings the
contract would refuse, so the operator can re-submit positions, leave out what cannot settle,
and tests and verifiers can predict every balance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from meterchain.chain.errors import ChainError
from meterchain.chain.signing import ReadingMessage, SignedOrder, SignedReading

ORDER_BYTES = 122
TRADE_BYTES = 16
POSITION_BYTES = 80
SETTLEMENT_BYTES = 64
MAX_ORDERS = 2**16 - 1
MILLI = 1000
_HAS_POSITION = 1
_HAS_READING = 2
U64 = 2**64 - 1

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

    def locked(self, retail_price: int) -> int:
        """Smallest units settleBatch locks from the meter's balance (see locked_units)."""
        return locked_units(self, retail_price)


@dataclass(frozen=True)
class PackedBatch:
    """settleBatch's arguments and the positions it will record."""

    orders: bytes
    trades: bytes
    positions: list[Position]


@dataclass(frozen=True)
class MeterSettlement:
    """What settleDelivery does to one meter's balance (smallest units)."""

    locked: int  # what the batch locked, released back to the meter
    credits: int  # includes the released lock
    debit: int  # owed; the grid absorbs what the balance cannot pay

    @property
    def change(self) -> int:
        """The balance change when the meter can pay its debit."""
        return self.credits - self.debit


class RejectReason(IntEnum):
    """Why EnergyMarket refuses a reading (ReadingRejected.reason); it then counts as absent."""

    UNKNOWN_METER = 1
    REVOKED = 2
    OTHER_MARKET = 3
    BAD_SIGNATURE = 4
    NO_BASELINE = 5
    STALE = 6
    BACKWARDS = 7
    IMPLAUSIBLE = 8

    @property
    def explanation(self) -> str:
        return _REJECT_EXPLANATIONS[self]


_REJECT_EXPLANATIONS = {
    RejectReason.UNKNOWN_METER: "the meter is not registered",
    RejectReason.REVOKED: "the meter is revoked",
    RejectReason.OTHER_MARKET: "the meter belongs to another market",
    RejectReason.BAD_SIGNATURE: "the signature is not the meter's current key's",
    RejectReason.NO_BASELINE: "the meter has no baseline in this market; the grid must set one",
    RejectReason.STALE: "an interval at or after it is already settled for this meter",
    RejectReason.BACKWARDS: "its registers run backwards (a replaced meter needs a new baseline)",
    RejectReason.IMPLAUSIBLE: "its energy exceeds what the meter's connection can carry",
}


@dataclass(frozen=True)
class MeterAccountState:
    """A meter's settled state on chain: last settled interval and registers at its end."""

    last_interval: int
    import_wh: int
    export_wh: int


@dataclass(frozen=True)
class Metered:
    """Energy a usable reading shows: in its interval, and in the gap before it (Wh)."""

    import_wh: int = 0
    export_wh: int = 0
    gap_import_wh: int = 0
    gap_export_wh: int = 0


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
    | [startImportWh 8 | startExportWh 8 | endImportWh 8 | endExportWh 8 | r 32 | s 32 | v 1]."""
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
        if len(reading.signature) != 65:
            raise BatchError(
                f"reading of meter {_show_id(meter_id)} has a {len(reading.signature)}-byte "
                "signature; a signature is 65 bytes"
            )
        entry += reading.reading.packed_registers.to_bytes(32, "big") + reading.signature
    return entry


@dataclass(frozen=True)
class DeliveredMeter:
    """One meter's line of a DeliverySettled event."""

    meter_id: bytes
    imported_wh: int
    exported_wh: int
    balance_change: int  # smallest units, released lock included


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


def pack_positions(positions: Sequence[Position]) -> bytes:
    """Positions packed as BatchSettled carries them and refundInterval takes them."""
    return b"".join(
        position.meter_id
        + position.bought_wh.to_bytes(8, "big")
        + position.cost_milli.to_bytes(16, "big")
        + position.sold_wh.to_bytes(8, "big")
        + position.value_milli.to_bytes(16, "big")
        for position in positions
    )


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def locked_units(position: Position, retail_price: int) -> int:
    """What settleBatch locks from a meter (Settlement.lockedUnits): a buyer's cost, and a
    seller's worst case beyond what its sale pays (buying all it sold at retail)."""
    locked = _ceil_div(position.cost_milli, MILLI)
    worst = _ceil_div(position.sold_wh * retail_price, MILLI)
    paid = position.value_milli // MILLI
    return locked + max(0, worst - paid)


def settle_meter(
    position: Position | None,
    metered: Metered,
    retail_price: int,
    feed_in_price: int,
) -> MeterSettlement:
    """What settleDelivery pays and charges one meter (Settlement.amounts).

    What was bought is paid for whether or not it was imported; the unused part is sold back
    at feed-in and import beyond it is bought at retail. What was sold is paid for; the part
    not exported is bought at retail and export beyond it sold at feed-in. Energy in the gap
    before the interval goes at the tariffs. Credits round down and debits up, once per meter.
    """
    p = position or Position(meter_id=b"")
    debit_milli = p.cost_milli + metered.gap_import_wh * retail_price
    credit_milli = p.value_milli + metered.gap_export_wh * feed_in_price
    if metered.import_wh > p.bought_wh:
        debit_milli += (metered.import_wh - p.bought_wh) * retail_price
    else:
        credit_milli += (p.bought_wh - metered.import_wh) * feed_in_price
    if metered.export_wh > p.sold_wh:
        credit_milli += (metered.export_wh - p.sold_wh) * feed_in_price
    else:
        debit_milli += (p.sold_wh - metered.export_wh) * retail_price
    locked = locked_units(p, retail_price)
    return MeterSettlement(
        locked=locked,
        credits=locked + credit_milli // MILLI,
        debit=_ceil_div(debit_milli, MILLI),
    )


def max_energy_wh(max_power_w: int, seconds: int) -> int:
    """The most energy (Wh) a connection of `max_power_w` carries in `seconds`."""
    return _ceil_div(max_power_w * seconds, 3600)


def measure_reading(
    reading: ReadingMessage,
    account: MeterAccountState,
    *,
    max_power_w: int,
    interval_s: int,
) -> Metered | RejectReason:
    """What a (correctly signed) reading settles against the meter's state on chain, or why
    the contract would refuse it (EnergyMarket._measure): the same rules, off chain, so the
    market can raise an alarm before it sends a reading the chain will refuse."""
    if account.last_interval == 0:
        return RejectReason.NO_BASELINE
    if account.last_interval >= reading.interval:
        return RejectReason.STALE
    r = reading
    if (
        r.start_import_wh < account.import_wh
        or r.start_export_wh < account.export_wh
        or r.end_import_wh < r.start_import_wh
        or r.end_export_wh < r.start_export_wh
    ):
        return RejectReason.BACKWARDS
    metered = Metered(
        import_wh=r.end_import_wh - r.start_import_wh,
        export_wh=r.end_export_wh - r.start_export_wh,
        gap_import_wh=r.start_import_wh - account.import_wh,
        gap_export_wh=r.start_export_wh - account.export_wh,
    )
    gap_s = reading.interval - account.last_interval - interval_s
    if gap_s < 0:
        return RejectReason.STALE
    if metered.import_wh + metered.export_wh > max_energy_wh(
        max_power_w, interval_s
    ) or metered.gap_import_wh + metered.gap_export_wh > max_energy_wh(max_power_w, gap_s):
        return RejectReason.IMPLAUSIBLE
    return metered


def advance(account: MeterAccountState, reading: ReadingMessage) -> MeterAccountState:
    """The meter's state after a usable reading settled."""
    return MeterAccountState(reading.interval, reading.end_import_wh, reading.end_export_wh)


# Gas of settleDelivery, measured by bench/bench_gas.py (worst case per entry: a position and a
# reading with a gap; see bench/results/gas.json): what one delivery may hold.
DELIVERY_GAS_BASE = 60_000
DELIVERY_GAS_PER_ENTRY = 30_000


def max_delivery_entries(gas: int) -> int:
    """How many meters one settleDelivery of at most `gas` can settle."""
    return max(1, (gas - DELIVERY_GAS_BASE) // DELIVERY_GAS_PER_ENTRY)


def _show_id(meter_id: bytes) -> str:
    return meter_id.rstrip(b"\x00").decode("utf-8", errors="replace")


def _show_key(key: OrderKey) -> str:
    return f"{_show_id(key[0])}#{key[1]}"
