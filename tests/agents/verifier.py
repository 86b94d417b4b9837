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

THE SETTLEMENT RULES live in one section (`energy_between`, `meter_amounts`, `settle_meter`)
so they can follow the contract when issue 8 changes it (readings with start and end
registers, imbalances at the grid's tariffs, refunds, refused readings as events).
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
READING_BYTES = 81  # importWh 8 | exportWh 8 | r s v 65
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
# THE SETTLEMENT RULES: EnergyMarket's as of this commit. Issue 8 changes them (start and end
# registers per reading, energy in gaps at the tariffs only, imbalances at the grid's tariffs,
# refunds): update these three functions, and nothing else, when it lands.
# ================================================================================================


def energy_between(last: tuple[int, int] | None, reading: tuple[int, int]) -> tuple[int, int]:
    """The energy a reading settles: since the meter's last settled reading; a first reading
    only sets the baseline."""
    if last is None:
        return 0, 0
    return reading[0] - last[0], reading[1] - last[1]


def meter_amounts(
    position: Position, imported_wh: int, exported_wh: int, tariffs: Tariffs
) -> tuple[int, int, int]:
    """(escrow released, credits incl. the escrow, debit) in smallest units.

    Received from the market: what was bought, up to the import; the rest of the import at
    retail. Delivered to the market: what was sold, up to the export; the rest at feed-in.
    Buyers pay pro rata for what they received, sellers are paid pro rata for what they
    delivered. Credits round down, debits up, once per meter.
    """
    received = min(position.bought_wh, imported_wh)
    delivered = min(position.sold_wh, exported_wh)
    debit_milli = (imported_wh - received) * tariffs.retail
    if received:
        debit_milli += -(-(position.cost_milli * received) // position.bought_wh)
    credit_milli = (exported_wh - delivered) * tariffs.feed_in
    if delivered:
        credit_milli += position.value_milli * delivered // position.sold_wh
    escrow = -(-position.cost_milli // MILLI)
    return escrow, escrow + credit_milli // MILLI, -(-debit_milli // MILLI)


def settle_meter(
    balance: int, position: Position, imported_wh: int, exported_wh: int, tariffs: Tariffs
) -> tuple[int, int, int]:
    """(balance change, shortfall, escrow released): a meter pays what its balance and its
    credits cover; the grid account absorbs the rest (a shortfall)."""
    escrow, credits, debit = meter_amounts(position, imported_wh, exported_wh, tariffs)
    funds = balance + credits
    paid = min(debit, funds)
    return credits - paid, debit - paid, escrow


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
    registers: tuple[int, int] | None
    signature: bytes | None


def decode_entries(entries: bytes) -> list[Entry]:
    """settleDelivery's entries: meterId 32 | flags 1 | [position 48] | [reading 81]."""
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
            registers = (_int(entries, at, 8), _int(entries, at + 8, 8))
            signature = entries[at + 16 : at + 81]
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
        "Deposited", "Withdrawn", "GridDeposited", "GridWithdrawn", "TariffsSet",
        "BatchSettled", "DeliverySettled", "Shortfall",
    ):  # fmt: skip
        for log in market.events[name]().get_logs(from_block=0, to_block=block):
            logs.append((int(log["blockNumber"]), int(log["logIndex"]), name, log))
    logs.sort(key=lambda item: (item[0], item[1]))

    balances: dict[bytes, int] = defaultdict(int)
    grid = escrow_total = 0
    tariffs: Tariffs | None = None
    batches: dict[int, dict[bytes, Position]] = {}
    deliveries: Counter[int] = Counter()
    shortfalls: dict[tuple[int, bytes], int] = {}
    last_registers: dict[bytes, tuple[int, int]] = {}
    settled_readings: dict[bytes, list[tuple[int, tuple[int, int]]]] = defaultdict(list)
    meter_ids = {Web3.to_bytes(text=m).ljust(32, b"\x00"): m for m in registers}
    reports = {m: MeterReport(m) for m in registers}
    signers: dict[bytes, str] = {}

    def signer(meter: bytes) -> str:
        if meter not in signers:
            signers[meter] = str(registry.functions.signerOf(meter).call()[0])
        return signers[meter]

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
        elif name == "TariffsSet":
            tariffs = Tariffs(int(args["retailPrice"]), int(args["feedInPrice"]))
        elif name == "Shortfall":
            shortfalls[(int(args["interval"]), bytes(args["meterId"]))] = int(args["amount"])
        elif name == "BatchSettled":
            interval = int(args["interval"])
            if interval in batches:
                report.problem(f"interval {interval}: a second batch")
            positions = decode_positions(bytes(args["positions"]))
            batches[interval] = positions
            _check_batch(w3, market, signer, log, interval, positions, report)
            escrowed = 0
            for meter, position in positions.items():
                escrow = -(-position.cost_milli // MILLI)
                balances[meter] -= escrow
                escrowed += escrow
                if meter in meter_ids:
                    reports[meter_ids[meter]].traded_wh += position.bought_wh + position.sold_wh
            if escrowed != int(args["escrowed"]):
                report.problem(
                    f"interval {interval}: escrowed {args['escrowed']}, positions say {escrowed}"
                )
            escrow_total += escrowed
            report.batches += 1
            report.trades += int(args["trades"])
        elif name == "DeliverySettled":
            interval = int(args["interval"])
            deliveries[interval] += 1
            assert tariffs is not None, "a delivery before any tariffs"
            tx = w3.eth.get_transaction(log["transactionHash"])
            called, params = market.decode_function_input(tx["input"])
            if called.fn_name != "settleDelivery" or int(params["interval"]) != interval:
                report.problem(f"interval {interval}: DeliverySettled from {called.fn_name}")
                continue
            entries = decode_entries(bytes(params["entries"]))
            lines = {m: (i, e, c) for m, i, e, c in decode_settlements(bytes(args["settlements"]))}
            batch = batches.get(interval, {})
            given = {e.meter: e.position for e in entries if e.position is not None}
            if given != batch:
                report.problem(f"interval {interval}: delivery positions differ from its batch's")
            grid_change = 0
            for entry in entries:
                meter = entry.meter
                imported = exported = 0
                if entry.registers is not None:
                    assert entry.signature is not None
                    digest = bytes(
                        market.functions.hashReading(meter, interval, *entry.registers).call()
                    )
                    if recover(digest, entry.signature) != signer(meter):
                        report.problem(
                            f"interval {interval}: reading of {show(meter)} not signed by its key"
                        )
                    imported, exported = energy_between(last_registers.get(meter), entry.registers)
                    last_registers[meter] = entry.registers
                    settled_readings[meter].append((interval, entry.registers))
                position = entry.position or Position()
                change, shortfall, escrow = settle_meter(
                    balances[meter], position, imported, exported, tariffs
                )
                line = lines.get(meter)
                if line is None:
                    report.problem(f"interval {interval}: {show(meter)} settled without a line")
                    continue
                if line != (imported, exported, change):
                    report.problem(
                        f"interval {interval}: {show(meter)} chain says imported/exported/change "
                        f"{line}, its registers and trades say {(imported, exported, change)}"
                    )
                if shortfalls.get((interval, meter), 0) != shortfall:
                    report.problem(f"interval {interval}: {show(meter)} shortfall differs")
                balances[meter] += change
                grid_change += escrow - change  # the grid takes what is paid, pays the credits
                escrow_total -= escrow
                if meter in meter_ids:
                    meter_report = reports[meter_ids[meter]]
                    meter_report.billed_import_wh += imported
                    meter_report.billed_export_wh += exported
            if set(lines) != {e.meter for e in entries}:
                report.problem(f"interval {interval}: settled meters differ from the entries")
            if grid_change != int(args["gridBalanceChange"]):
                report.problem(
                    f"interval {interval}: the grid's change is {args['gridBalanceChange']}, "
                    f"the meters' payments say {grid_change}"
                )
            grid += int(args["gridBalanceChange"])

    # ---- every interval settled once, or void
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
            if interval in batches:
                report.problem(
                    f"interval {interval} is void but its batch's escrow stays locked "
                    "(TODO(issue 8): the permissionless refund releases it)"
                )
        else:
            report.problem(f"interval {interval}: settled {count} times and not announced void")
    for interval, count in deliveries.items():
        if count > 1:
            report.problem(f"interval {interval}: settled {count} times")

    # ---- the meters' own registers bound what was settled
    for meter, readings in settled_readings.items():
        if meter not in meter_ids:
            continue
        meter_id = meter_ids[meter]
        span = registers[meter_id]
        first, last = readings[0][1], readings[-1][1]
        meter_report = reports[meter_id]
        meter_report.readings = len(readings)
        if first[0] < int(span.before.import_wh) or first[1] < int(span.before.export_wh):
            report.problem(
                f"meter {meter_id}: first settled reading {first} below its registers "
                f"before {span.before}"
            )
        if last[0] > span.after.import_wh or last[1] > span.after.export_wh:
            report.problem(
                f"meter {meter_id}: last settled reading {last} beyond its registers "
                f"after {span.after}"
            )
        if (meter_report.billed_import_wh, meter_report.billed_export_wh) != (
            last[0] - first[0],
            last[1] - first[1],
        ):
            report.problem(
                f"meter {meter_id}: billed energy does not telescope between its readings"
            )
        meter_report.unbilled_import_wh = (
            span.after.import_wh - span.before.import_wh - meter_report.billed_import_wh
        )
        meter_report.unbilled_export_wh = (
            span.after.export_wh - span.before.export_wh - meter_report.billed_export_wh
        )

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
    report: Report,
) -> None:
    """Each order in the batch is signed by its meter's key, used once, and the trades, within
    the orders' limits, add up to the positions the event recorded."""
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
