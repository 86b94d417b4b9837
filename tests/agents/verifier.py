"""An independent check of a community's settlement: the chain's events, decoded against the
meters' own registers.

It trusts only two sources: what the chain recorded (EnergyMarket's events and the calldata of
the transactions that emitted them, read over JSON-RPC) and what each meter's own registers
showed (read from the meters themselves before the agents started and after they stopped).
Nothing an agent stored or logged is used, and none of meterchain's settlement code: the
packed layouts are decoded here from EnergyMarket.sol's documented formats, and the money is
recomputed here by the rules below. (Void intervals are announced only on the bus, so those
announcements, as an observer heard them, are the third input.)

It checks:
- every interval of the window is settled on chain exactly once or was announced void;
- nothing is doubled: no interval, order or meter counted twice; every meter's settled energy
  telescopes between its signed readings, which lie within its own registers;
- every order and reading the chain accepted is signed by the meter's registered key;
- every balance change follows from the meter's registers and its trades by the rules;
- money is conserved: the credit the market holds equals the balances, the grid account and
  the escrow, each recomputed from the events.

THE SETTLEMENT RULES live in one section (`measure`, `locked_units`, `meter_amounts`,
`settle_meter`): EnergyMarket's rules since issue 8 (readings with start and end registers,
energy in gaps at the tariffs only, imbalances at the grid's tariffs, locks for buyers and
sellers, refunds, refused readings as events), written out here again from the contract's
documentation rather than imported.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from eth_keys import keys
from web3 import Web3

from meterchain.chain.artifacts import load_artifact

MILLI = 1000
ORDER_BYTES = 122  # meterId 32 | nonce 8 | side 1 | quantityWh 8 | limitPrice 8 | r s v 65
TRADE_BYTES = 16  # buyOrderIndex 2 | sellOrderIndex 2 | quantityWh 4 | price 8
POSITION_BYTES = 48  # boughtWh 8 | costMilli 16 | soldWh 8 | valueMilli 16
READING_BYTES = 97  # startImport 8 | startExport 8 | endImport 8 | endExport 8 | r s v 65
HAS_POSITION, HAS_READING = 1, 2
BUY, SELL = 0, 1


@dataclass(frozen=True)
class Position:
    bought_wh: int = 0
    cost_milli: int = 0
    sold_wh: int = 0
    value_milli: int = 0


@dataclass(frozen=True)
class Tariffs:
    retail: int  # smallest units per kWh
    feed_in: int


@dataclass(frozen=True)
class Registers:
    """A meter's cumulative registers (Wh)."""

    import_wh: float
    export_wh: float


@dataclass(frozen=True)
class RegisterSpan:
    """What a meter's own registers showed before the agents started and after they stopped."""

    before: Registers
    after: Registers


# ================================================================================================
# THE SETTLEMENT RULES: EnergyMarket's since issue 8 (docs/contracts.md, "Flow of one interval").
# ================================================================================================


@dataclass(frozen=True)
class Settled:
    """A meter's last settled state: the interval and its registers at that interval's end."""

    interval: int
    import_wh: int
    export_wh: int


def measure(
    last: Settled | None,
    interval: int,
    registers: tuple[int, int, int, int],
    max_power_w: int,
    interval_s: int,
) -> tuple[int, int, int, int] | None:
    """(interval import, interval export, gap import, gap export) of a correctly signed
    reading, or None when the contract must refuse it (no baseline, stale, backwards, beyond
    what the connection carries in the time)."""
    start_i, start_e, end_i, end_e = registers
    if last is None or last.interval == 0 or last.interval >= interval:
        return None
    if start_i < last.import_wh or start_e < last.export_wh or end_i < start_i or end_e < start_e:
        return None
    gap_s = interval - last.interval - interval_s

    def most(seconds: int) -> int:
        return -(-max_power_w * seconds // 3600)

    if (end_i - start_i) + (end_e - start_e) > most(interval_s):
        return None
    if (start_i - last.import_wh) + (start_e - last.export_wh) > most(gap_s):
        return None
    return end_i - start_i, end_e - start_e, start_i - last.import_wh, start_e - last.export_wh


def locked_units(position: Position, tariffs: Tariffs) -> int:
    """What a batch locks: the cost, and a seller's retail worst case beyond its sale."""
    locked = -(-position.cost_milli // MILLI)
    worst = -(-position.sold_wh * tariffs.retail // MILLI)
    return locked + max(0, worst - position.value_milli // MILLI)


def meter_amounts(
    position: Position, energy: tuple[int, int, int, int], tariffs: Tariffs
) -> tuple[int, int, int]:
    """(lock released, credits incl. the lock, debit) in smallest units.

    Bought energy is paid whether imported or not (the unused part back at feed-in, import
    beyond it at retail); sold energy is paid (the part not exported bought at retail, export
    beyond it at feed-in); gap energy at the tariffs only. Credits round down, debits up.
    """
    imported, exported, gap_import, gap_export = energy
    debit = position.cost_milli + gap_import * tariffs.retail
    credit = position.value_milli + gap_export * tariffs.feed_in
    if imported > position.bought_wh:
        debit += (imported - position.bought_wh) * tariffs.retail
    else:
        credit += (position.bought_wh - imported) * tariffs.feed_in
    if exported > position.sold_wh:
        credit += (exported - position.sold_wh) * tariffs.feed_in
    else:
        debit += (position.sold_wh - exported) * tariffs.retail
    locked = locked_units(position, tariffs)
    return locked, locked + credit // MILLI, -(-debit // MILLI)


def settle_meter(
    balance: int, position: Position, energy: tuple[int, int, int, int], tariffs: Tariffs
) -> tuple[int, int, int]:
    """(balance change, shortfall, lock released): a meter pays what its balance and its
    credits cover; the grid account absorbs the rest (a shortfall)."""
    locked, credits, debit = meter_amounts(position, energy, tariffs)
    funds = balance + credits
    paid = min(debit, funds)
    return credits - paid, debit - paid, locked


# ================================================================================================
# Decoding (formats from EnergyMarket.sol's NatSpec)
# ================================================================================================


def _int(data: bytes, at: int, size: int, *, signed: bool = False) -> int:
    return int.from_bytes(data[at : at + size], "big", signed=signed)


def decode_positions(packed: bytes) -> dict[bytes, Position]:
    """BatchSettled.positions: meterId 32 | position 48, sorted by meter id."""
    assert len(packed) % 80 == 0, f"positions of {len(packed)} bytes"
    return {
        packed[at : at + 32]: Position(
            _int(packed, at + 32, 8),
            _int(packed, at + 40, 16),
            _int(packed, at + 56, 8),
            _int(packed, at + 64, 16),
        )
        for at in range(0, len(packed), 80)
    }


def decode_settlements(packed: bytes) -> list[tuple[bytes, int, int, int]]:
    """DeliverySettled.settlements: meterId 32 | importedWh 8 | exportedWh 8 | change int128."""
    assert len(packed) % 64 == 0, f"settlements of {len(packed)} bytes"
    return [
        (
            packed[at : at + 32],
            _int(packed, at + 32, 8),
            _int(packed, at + 40, 8),
            _int(packed, at + 48, 16, signed=True),
        )
        for at in range(0, len(packed), 64)
    ]


@dataclass(frozen=True)
class Entry:
    """One meter's entry of a settleDelivery call."""

    meter: bytes
    position: Position | None
    registers: tuple[int, int, int, int] | None
    signature: bytes | None


def decode_entries(entries: bytes) -> list[Entry]:
    """settleDelivery's entries: meterId 32 | flags 1 | [position 48] | [reading 97]."""
    found, at = [], 0
    while at < len(entries):
        meter, flags = entries[at : at + 32], entries[at + 32]
        at += 33
        position = registers = signature = None
        if flags & HAS_POSITION:
            position = Position(
                _int(entries, at, 8),
                _int(entries, at + 8, 16),
                _int(entries, at + 24, 8),
                _int(entries, at + 32, 16),
            )
            at += POSITION_BYTES
        if flags & HAS_READING:
            registers = (
                _int(entries, at, 8),
                _int(entries, at + 8, 8),
                _int(entries, at + 16, 8),
                _int(entries, at + 24, 8),
            )
            signature = entries[at + 32 : at + READING_BYTES]
            at += READING_BYTES
        found.append(Entry(meter, position, registers, signature))
    return found


@dataclass(frozen=True)
class PackedOrder:
    meter: bytes
    nonce: int
    side: int
    quantity_wh: int
    limit_price: int
    signature: bytes


def decode_orders(packed: bytes) -> list[PackedOrder]:
    assert len(packed) % ORDER_BYTES == 0
    return [
        PackedOrder(
            packed[at : at + 32],
            _int(packed, at + 32, 8),
            packed[at + 40],
            _int(packed, at + 41, 8),
            _int(packed, at + 49, 8),
            packed[at + 57 : at + 122],
        )
        for at in range(0, len(packed), ORDER_BYTES)
    ]


def decode_trades(packed: bytes) -> list[tuple[int, int, int, int]]:
    assert len(packed) % TRADE_BYTES == 0
    return [
        (
            _int(packed, at, 2),
            _int(packed, at + 2, 2),
            _int(packed, at + 4, 4),
            _int(packed, at + 8, 8),
        )
        for at in range(0, len(packed), TRADE_BYTES)
    ]


def recover(digest: bytes, signature: bytes) -> str:
    r, s, v = (
        int.from_bytes(signature[:32], "big"),
        int.from_bytes(signature[32:64], "big"),
        signature[64],
    )
    key = keys.Signature(vrs=(v - 27, r, s)).recover_public_key_from_msg_hash(digest)
    return str(key.to_checksum_address())


def show(meter: bytes) -> str:
    return meter.rstrip(b"\x00").decode(errors="replace")


# ================================================================================================
# The check
# ================================================================================================


@dataclass
class MeterReport:
    meter_id: str
    readings: int = 0  # settled readings
    billed_import_wh: int = 0
    billed_export_wh: int = 0
    traded_wh: int = 0
    unbilled_import_wh: float = 0.0  # its registers moved, no settled reading covers it (yet)
    unbilled_export_wh: float = 0.0
    balance: int = 0  # recomputed
    chain_balance: int = 0


@dataclass
class Report:
    settled: list[int] = field(default_factory=list)  # one DeliverySettled
    void: list[int] = field(default_factory=list)  # announced void (settled or not)
    batches: int = 0
    trades: int = 0
    meters: dict[str, MeterReport] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problems.append(text)


def verify(
    w3: Web3,
    market_address: str,
    *,
    registers: dict[str, RegisterSpan],
    first_interval: int,
    last_interval: int,
    interval_s: int,
    void_announced: dict[int, str],
) -> Report:
    """Check the chain against the meters; every finding is a line in `problems`."""
    market = w3.eth.contract(
        address=Web3.to_checksum_address(market_address), abi=load_artifact("EnergyMarket").abi
    )
    registry = w3.eth.contract(
        address=market.functions.registry().call(), abi=load_artifact("MeterRegistry").abi
    )
    credit = w3.eth.contract(
        address=market.functions.credit().call(), abi=load_artifact("EnergyCredit").abi
    )
    block = int(w3.eth.block_number)
    report = Report()
    logs = []
    for name in (
        "Deposited", "Withdrawn", "GridDeposited", "GridWithdrawn", "BaselineSet",
        "BatchSettled", "DeliverySettled", "Shortfall", "IntervalRefunded", "ReadingRejected",
    ):  # fmt: skip
        for log in market.events[name]().get_logs(from_block=0, to_block=block):
            logs.append((int(log["blockNumber"]), int(log["logIndex"]), name, log))
    logs.sort(key=lambda item: (item[0], item[1]))

    balances: dict[bytes, int] = defaultdict(int)
    grid = escrow_total = 0
    batches: dict[int, tuple[dict[bytes, Position], Tariffs]] = {}
    deliveries: Counter[int] = Counter()
    refunded: set[int] = set()
    shortfalls: dict[tuple[int, bytes], int] = {}
    rejected: dict[tuple[int, bytes], int] = {}
    settled: dict[bytes, Settled] = {}
    baseline: dict[bytes, Settled] = {}
    billed: dict[bytes, Settled] = {}  # the last settled state a reading (not a baseline) set
    meter_ids = {Web3.to_bytes(text=m).ljust(32, b"\x00"): m for m in registers}
    reports = {m: MeterReport(m) for m in registers}
    records: dict[bytes, tuple[str, int]] = {}

    def record(meter: bytes) -> tuple[str, int]:
        """(signer, max power W) from the registry."""
        if meter not in records:
            known = registry.functions.meter(meter).call()
            records[meter] = (str(known[0]), int(known[4]))
        return records[meter]

    def signer(meter: bytes) -> str:
        return record(meter)[0]

    # The reasons the chain gave for refusing readings, by (interval, meter): checked below.
    for _, _, name, log in logs:
        if name == "ReadingRejected":
            args = log["args"]
            rejected[(int(args["interval"]), bytes(args["meterId"]))] = int(args["reason"])

    for _, _, name, log in logs:
        args = log["args"]
        if name == "Deposited":
            balances[bytes(args["meterId"])] += int(args["amount"])
        elif name == "Withdrawn":
            balances[bytes(args["meterId"])] -= int(args["amount"])
        elif name == "GridDeposited":
            grid += int(args["amount"])
        elif name == "GridWithdrawn":
            grid -= int(args["amount"])
        elif name == "BaselineSet":
            state = Settled(int(args["interval"]), int(args["importWh"]), int(args["exportWh"]))
            settled[bytes(args["meterId"])] = state
            baseline.setdefault(bytes(args["meterId"]), state)
        elif name == "Shortfall":
            shortfalls[(int(args["interval"]), bytes(args["meterId"]))] = int(args["amount"])
        elif name == "BatchSettled":
            interval = int(args["interval"])
            if interval in batches:
                report.problem(f"interval {interval}: a second batch")
            positions = decode_positions(bytes(args["positions"]))
            tariffs = Tariffs(int(args["retailPrice"]), int(args["feedInPrice"]))
            batches[interval] = (positions, tariffs)
            _check_batch(w3, market, signer, log, interval, positions, tariffs, report)
            locked_total = 0
            for meter, position in positions.items():
                locked = locked_units(position, tariffs)
                balances[meter] -= locked
                locked_total += locked
                if meter in meter_ids:
                    reports[meter_ids[meter]].traded_wh += position.bought_wh + position.sold_wh
            if locked_total != int(args["locked"]):
                report.problem(
                    f"interval {interval}: locked {args['locked']}, positions say {locked_total}"
                )
            escrow_total += locked_total
            report.batches += 1
            report.trades += int(args["trades"])
        elif name == "IntervalRefunded":
            interval = int(args["interval"])
            refunded.add(interval)
            positions, tariffs = batches[interval]
            back = 0
            for meter, position in positions.items():
                locked = locked_units(position, tariffs)
                balances[meter] += locked
                back += locked
            if back != int(args["refunded"]):
                report.problem(f"interval {interval}: refunded {args['refunded']}, locks {back}")
            escrow_total -= back
        elif name == "DeliverySettled":
            interval = int(args["interval"])
            deliveries[interval] += 1
            tx = w3.eth.get_transaction(log["transactionHash"])
            called, params = market.decode_function_input(tx["input"])
            if called.fn_name != "settleDelivery" or int(params["interval"]) != interval:
                report.problem(f"interval {interval}: DeliverySettled from {called.fn_name}")
                continue
            tariffs = Tariffs(int(params["retailPrice"]), int(params["feedInPrice"]))
            entries = decode_entries(bytes(params["entries"]))
            lines = {m: (i, e, c) for m, i, e, c in decode_settlements(bytes(args["settlements"]))}
            batch, batch_tariffs = batches.get(interval, ({}, tariffs))
            if batch and batch_tariffs != tariffs:
                report.problem(f"interval {interval}: delivered at other tariffs than its batch")
            given = {e.meter: e.position for e in entries if e.position is not None}
            if given != batch:
                report.problem(f"interval {interval}: delivery positions differ from its batch's")
            grid_change = 0
            for entry in entries:
                meter = entry.meter
                energy: tuple[int, int, int, int] | None = None
                if entry.registers is not None:
                    assert entry.signature is not None
                    digest = bytes(
                        market.functions.hashReading(meter, interval, *entry.registers).call()
                    )
                    signed_ok = recover(digest, entry.signature) == signer(meter)
                    energy = (
                        measure(
                            settled.get(meter), interval, entry.registers, record(meter)[1],
                            interval_s,
                        )
                        if signed_ok
                        else None
                    )  # fmt: skip
                    refused_by_chain = (interval, meter) in rejected
                    if refused_by_chain != (energy is None):
                        did = "refused" if refused_by_chain else "used"
                        report.problem(
                            f"interval {interval}: the chain {did} the reading of {show(meter)}, "
                            "the rules say the opposite"
                        )
                    if energy is not None:
                        settled[meter] = Settled(interval, entry.registers[2], entry.registers[3])
                        billed[meter] = settled[meter]
                        if meter in meter_ids:
                            reports[meter_ids[meter]].readings += 1
                if entry.position is None and energy is None:
                    if meter in lines:
                        report.problem(f"interval {interval}: {show(meter)} settled on nothing")
                    continue
                position = entry.position or Position()
                used = energy or (0, 0, 0, 0)
                change, shortfall, locked = settle_meter(balances[meter], position, used, tariffs)
                line = lines.get(meter)
                if line is None:
                    report.problem(f"interval {interval}: {show(meter)} settled without a line")
                    continue
                if line != (used[0], used[1], change):
                    report.problem(
                        f"interval {interval}: {show(meter)} chain says imported/exported/change "
                        f"{line}, its registers and trades say {(used[0], used[1], change)}"
                    )
                if shortfalls.get((interval, meter), 0) != shortfall:
                    report.problem(f"interval {interval}: {show(meter)} shortfall differs")
                balances[meter] += change
                grid_change += locked - change  # the grid takes what is paid, pays the credits
                escrow_total -= locked
            if grid_change != int(args["gridBalanceChange"]):
                report.problem(
                    f"interval {interval}: the grid's change is {args['gridBalanceChange']}, "
                    f"the meters' payments say {grid_change}"
                )
            grid += int(args["gridBalanceChange"])

    # ---- every interval settled once, or void (and then its locks refunded)
    for interval in range(first_interval, last_interval + 1, interval_s):
        count = deliveries[interval]
        void = interval in void_announced
        if void:
            report.void.append(interval)
        if count == 1:
            report.settled.append(interval)
            if void and interval in batches:
                report.problem(f"interval {interval} was announced void, yet its trades settled")
        elif count == 0 and void:
            if interval in batches and interval not in refunded:
                report.problem(f"interval {interval} is void but its batch was never refunded")
        else:
            report.problem(f"interval {interval}: settled {count} times and not announced void")
    for interval, count in deliveries.items():
        if count > 1:
            report.problem(f"interval {interval}: settled {count} times")

    # ---- the meters' own registers bound what was settled: from the baseline to the last
    # settled registers, every Wh billed once (in an interval or in a gap), within the span
    for meter, meter_id in meter_ids.items():
        span = registers[meter_id]
        meter_report = reports[meter_id]
        start, end = baseline.get(meter), billed.get(meter)
        if start is None or end is None:
            continue
        meter_report.billed_import_wh = end.import_wh - start.import_wh
        meter_report.billed_export_wh = end.export_wh - start.export_wh
        # The grid records the baseline from the installation reading, before the agents start:
        # it cannot be above what the registers showed then. Boards round the registers' float
        # values to whole Wh, so the bounds are compared rounded.
        if start.import_wh > round(span.before.import_wh) or start.export_wh > round(
            span.before.export_wh
        ):
            report.problem(
                f"meter {meter_id}: baseline {start} above its registers before {span.before}"
            )
        if end.import_wh > round(span.after.import_wh) or end.export_wh > round(
            span.after.export_wh
        ):
            report.problem(
                f"meter {meter_id}: last settled registers {end} beyond its registers after "
                f"{span.after}"
            )
        meter_report.unbilled_import_wh = round(span.after.import_wh) - end.import_wh
        meter_report.unbilled_export_wh = round(span.after.export_wh) - end.export_wh

    # ---- money: recomputed balances against the chain, and conservation
    for meter, meter_id in meter_ids.items():
        chain_balance = int(market.functions.balanceOf(meter).call(block_identifier=block))
        reports[meter_id].balance = balances[meter]
        reports[meter_id].chain_balance = chain_balance
        if chain_balance != balances[meter]:
            report.problem(
                f"meter {meter_id}: chain balance {chain_balance}, recomputed {balances[meter]}"
            )
    chain_grid = int(market.functions.gridBalance().call(block_identifier=block))
    chain_escrow = int(market.functions.escrowTotal().call(block_identifier=block))
    held = int(credit.functions.balanceOf(market.address).call(block_identifier=block))
    if (chain_grid, chain_escrow) != (grid, escrow_total):
        report.problem(
            f"grid/escrow on chain {(chain_grid, chain_escrow)}, recomputed {(grid, escrow_total)}"
        )
    if held != sum(balances.values()) + grid + escrow_total:
        report.problem(
            f"money not conserved: the market holds {held}, balances + grid + escrow = "
            f"{sum(balances.values()) + grid + escrow_total}"
        )
    report.meters = reports
    return report


def _check_batch(
    w3: Web3,
    market: Any,
    signer: Any,
    log: Any,
    interval: int,
    positions: dict[bytes, Position],
    tariffs: Tariffs,
    report: Report,
) -> None:
    """Each order in the batch is signed by its meter's key, used once, and the trades, within
    the orders' limits and the tariffs, add up to the positions the event recorded."""
    tx = w3.eth.get_transaction(log["transactionHash"])
    called, params = market.decode_function_input(tx["input"])
    if called.fn_name != "settleBatch" or int(params["interval"]) != interval:
        report.problem(f"interval {interval}: BatchSettled from {called.fn_name}")
        return
    orders = decode_orders(bytes(params["orders"]))
    keys_seen = [(o.meter, o.nonce) for o in orders]
    if len(set(keys_seen)) != len(keys_seen):
        report.problem(f"interval {interval}: an order appears twice in its batch")
    for order in orders:
        digest = bytes(
            market.functions.hashOrder(
                order.meter, interval, order.side, order.quantity_wh, order.limit_price, order.nonce
            ).call()
        )
        if recover(digest, order.signature) != signer(order.meter):
            report.problem(
                f"interval {interval}: order {show(order.meter)}#{order.nonce} not signed by "
                "its key"
            )
    sums: dict[bytes, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    filled: Counter[int] = Counter()
    for buy_index, sell_index, quantity_wh, price in decode_trades(bytes(params["trades"])):
        buy, sell = orders[buy_index], orders[sell_index]
        if buy.side != BUY or sell.side != SELL or buy.meter == sell.meter:
            report.problem(f"interval {interval}: a trade with the wrong sides or with itself")
        if not sell.limit_price <= price <= buy.limit_price:
            report.problem(f"interval {interval}: trade price {price} outside its orders' limits")
        if not tariffs.feed_in <= price <= tariffs.retail:
            report.problem(f"interval {interval}: trade price {price} outside the tariffs")
        filled[buy_index] += quantity_wh
        filled[sell_index] += quantity_wh
        sums[buy.meter][0] += quantity_wh
        sums[buy.meter][1] += quantity_wh * price
        sums[sell.meter][2] += quantity_wh
        sums[sell.meter][3] += quantity_wh * price
    for index, quantity in filled.items():
        if quantity > orders[index].quantity_wh:
            report.problem(f"interval {interval}: order {index} filled beyond its quantity")
    if {m: Position(*v) for m, v in sums.items()} != positions:
        report.problem(f"interval {interval}: the trades do not add up to the recorded positions")
