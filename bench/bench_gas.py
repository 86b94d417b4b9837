"""Gas per settled trade and per settled reading on a local anvil, at batch sizes 1-500.

Two book shapes are measured for settleBatch:
- "auction": a uniform-price double auction's merge walk — N buyers and N sellers with random
  quantities; consecutive trades share an order, so there are about as many orders as trades
  (what the market agent's clearing produces);
- "pairs": every trade has its own buy and sell order from its own two meters (2 orders and 2
  meters per trade, the worst case).
settleDelivery is measured with one signed reading per meter of the auction batch (the delivery
that follows it), and with readings only (meters that did not trade: grid settlement).

Anchor: Grid Singularity's DEX on Energy Web Chain, ~400,000 gas per trade. Target: at most
30,000 gas per matched trade at batch 100, every signature check included. Capacity: prosumers
one 15-minute interval can settle on a chain with 6,000,000 gas per 5-second block.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from eth_account import Account  # noqa: E402
from eth_account.signers.local import LocalAccount  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.common import write_result  # noqa: E402
from meterchain.chain.artifacts import all_abis  # noqa: E402
from meterchain.chain.batch import BatchTrade  # noqa: E402
from meterchain.chain.client import (  # noqa: E402
    BatchTerms,
    EnergyCreditClient,
    EnergyMarketClient,
    MeterKind,
    MeterRegistryClient,
)
from meterchain.chain.deploy import deploy_suite  # noqa: E402
from meterchain.chain.node import connect, dev_account, start_anvil, stop_anvil  # noqa: E402
from meterchain.chain.sender import TransactionSender  # noqa: E402
from meterchain.chain.signing import (  # noqa: E402
    OrderMessage,
    OrderSide,
    ReadingMessage,
    SignedOrder,
    SignedReading,
    meter_id_to_bytes32,
    sign_order,
    sign_reading,
)

BATCH_SIZES = (1, 10, 100, 500)
MAX_POWER_W = 100_000  # the bench's random readings stay far below it
ANCHOR_GAS_PER_TRADE = 400_000
TARGET_GAS_PER_TRADE = 30_000
BLOCK_GAS = 6_000_000
BLOCKS_PER_INTERVAL = 180  # 15 minutes of 5-second blocks
FIRST_INTERVAL = 1_795_000_500
INTERVAL_S = 900
DEPOSIT = 10_000_000  # smallest units per meter

console = Console()


class Bench:
    """A deployed suite with `meter_count` funded meters."""

    def __init__(self, rpc_url: str, meter_count: int, progress: Progress) -> None:
        self.w3 = connect(rpc_url)
        self.admin = TransactionSender(self.w3, dev_account(0), abis=all_abis())
        self.addresses = deploy_suite(self.admin)
        self.market = EnergyMarketClient(self.admin, self.addresses["EnergyMarket"])
        self.registry = MeterRegistryClient(self.admin, self.addresses["MeterRegistry"])
        self.credit = EnergyCreditClient(self.admin, self.addresses["EnergyCredit"])
        self.keys: list[LocalAccount] = [
            Account.from_key((0xBE7C0000 + i).to_bytes(32, "big")) for i in range(meter_count)
        ]
        self.ids = [meter_id_to_bytes32(f"meter-{i:05d}") for i in range(meter_count)]
        self.domain = self.market.domain
        self.interval = FIRST_INTERVAL
        self.counters = [[0, 0] for _ in range(meter_count)]
        self.tariffs = self.market.tariffs()
        self._setup(progress)

    def _setup(self, progress: Progress) -> None:
        """Register and fund every meter (the admin owns them all), in pre-signed bursts."""
        registry, market, credit = (
            self.registry.contract,
            self.market.contract,
            self.credit.contract,
        )
        total = DEPOSIT * len(self.ids)
        self.admin.transact(credit.functions.mint(self.admin.address, total + 10**9))
        self.admin.transact(credit.functions.approve(market.address, total + 10**9))
        self.admin.transact(market.functions.depositGrid(10**9))
        task = progress.add_task("registering and funding meters", total=len(self.ids))
        for start in range(0, len(self.ids), 250):
            chunk = range(start, min(start + 250, len(self.ids)))
            fns: list[Any] = []
            for i in chunk:
                fns.append(
                    registry.functions.registerMeter(
                        self.ids[i],
                        self.keys[i].address,
                        self.admin.address,
                        int(MeterKind.PROSUMER),
                        MAX_POWER_W,
                    )
                )
            self.admin.transact_many(fns, gas=150_000)
            self.admin.transact_many(
                [registry.functions.assignMarket(self.ids[i], market.address) for i in chunk],
                gas=150_000,
            )
            # Enrolled with registers (0, 0) at the end of the interval before the first.
            self.admin.transact_many(
                [
                    market.functions.setBaseline(
                        self.ids[i], FIRST_INTERVAL, 0, 0, b"enrolled".ljust(32, b"\0")
                    )
                    for i in chunk
                ],
                gas=150_000,
            )
            self.admin.transact_many(
                [market.functions.deposit(self.ids[i], DEPOSIT) for i in chunk], gas=150_000
            )
            progress.advance(task, len(chunk))

    def next_interval(self) -> int:
        self.interval += INTERVAL_S
        return self.interval

    def order(self, meter: int, side: OrderSide, quantity_wh: int, limit: int) -> SignedOrder:
        message = OrderMessage(self.ids[meter], self.interval, side, quantity_wh, limit, 1)
        return sign_order(self.domain, message, self.keys[meter])

    def reading(self, meter: int, rng: random.Random, *, gap: bool = False) -> SignedReading:
        """The meter's signed reading of the current interval, with random energy; with `gap`
        its start registers are past the last settled ones (an interval without a reading)."""
        if gap:
            self.counters[meter][0] += rng.randint(1, 800)
            self.counters[meter][1] += rng.randint(1, 800)
        start = list(self.counters[meter])
        self.counters[meter][0] += rng.randint(0, 800)
        self.counters[meter][1] += rng.randint(0, 800)
        message = ReadingMessage(self.ids[meter], self.interval, *start, *self.counters[meter])
        return sign_reading(self.domain, message, self.keys[meter])

    def settle_readings(self, meters: Any, *, seed: int = 0) -> int:
        """Settle one delivery with readings (no batch) for `meters`; returns gas used."""
        rng = random.Random(seed)
        self.next_interval()
        readings = [self.reading(m, rng) for m in meters]
        receipt = self.market.settle_delivery(
            self.interval, readings, terms=BatchTerms(*self.tariffs, [])
        )
        rejected = self.market.events_in(receipt, "ReadingRejected")
        assert not rejected, rejected
        return int(receipt["gasUsed"])


def auction_book(
    bench: Bench, trades: int, first_meter: int, rng: random.Random
) -> tuple[list[SignedOrder], list[BatchTrade], list[int]]:
    """A uniform-price merge walk with exactly `trades` trades from `trades + 1` orders.

    Buy and sell orders each tile the same cleared quantity; their inner boundaries are
    distinct, so every boundary starts a new trade between the current buyer and seller.
    """
    buyers = (trades + 2) // 2
    sellers = trades + 1 - buyers
    total_wh = 1000 * trades + 1000
    cuts = rng.sample(range(1, total_wh), trades - 1)
    buy_cuts = [*sorted(cuts[: buyers - 1]), total_wh]
    sell_cuts = [*sorted(cuts[buyers - 1 :]), total_wh]
    meters = list(range(first_meter, first_meter + buyers + sellers))
    buys = [bench.order(meters[i], OrderSide.BUY, q, 70) for i, q in enumerate(_gaps(buy_cuts))]
    sells = [
        bench.order(meters[buyers + j], OrderSide.SELL, q, 40)
        for j, q in enumerate(_gaps(sell_cuts))
    ]
    out: list[BatchTrade] = []
    i = j = 0
    position = 0
    for boundary in sorted(set(buy_cuts) | set(sell_cuts)):
        out.append(BatchTrade(buys[i].order.key, sells[j].order.key, boundary - position, 55))
        position = boundary
        if boundary == buy_cuts[i]:
            i += 1
        if boundary == sell_cuts[j]:
            j += 1
    assert len(out) == trades
    return buys + sells, out, meters


def _gaps(cuts: list[int]) -> list[int]:
    return [b - a for a, b in zip([0, *cuts[:-1]], cuts, strict=True)]


def pairs_book(
    bench: Bench, trades: int, first_meter: int, rng: random.Random
) -> tuple[list[SignedOrder], list[BatchTrade], list[int]]:
    """Every trade with its own buy and sell order from two meters of its own."""
    orders: list[SignedOrder] = []
    out: list[BatchTrade] = []
    meters = list(range(first_meter, first_meter + 2 * trades))
    for t in range(trades):
        quantity = rng.randint(200, 2000)
        buy = bench.order(meters[2 * t], OrderSide.BUY, quantity, 70)
        sell = bench.order(meters[2 * t + 1], OrderSide.SELL, quantity, 40)
        orders += [buy, sell]
        out.append(BatchTrade(buy.order.key, sell.order.key, quantity, 55))
    return orders, out, meters


def measure(bench: Bench, shape: str, size: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    bench.next_interval()  # an interval no one read: room for the gaps below
    bench.next_interval()
    build = auction_book if shape == "auction" else pairs_book
    orders, trades, meters = build(bench, size, 0, rng)
    result = bench.market.settle_batch(bench.interval, trades, orders)
    row: dict[str, Any] = {
        "shape": shape,
        "batch_trades": len(trades),
        "orders": len(orders),
        "meters": len(meters),
        "batch_gas": result.gas_used,
        "gas_per_trade": round(result.gas_used / len(trades)),
        "gas_per_order": round(result.gas_used / len(orders)),
        "batch_calldata_bytes": len(orders) * 122 + len(trades) * 16,
    }
    # Every other meter skipped a reading before: its gap is settled too (the costlier entry).
    readings = [bench.reading(m, rng, gap=m % 2 == 1) for m in meters]
    receipt = bench.market.settle_delivery(bench.interval, readings, terms=result.terms)
    assert not bench.market.events_in(receipt, "ReadingRejected")
    row["delivery_gas"] = int(receipt["gasUsed"])
    row["delivery_gas_per_reading"] = round(row["delivery_gas"] / len(readings))
    return row


def main() -> int:
    node = start_anvil()
    started = time.perf_counter()
    try:
        with Progress(console=console, transient=True) as progress:
            bench = Bench(node.rpc_url, 2 * max(BATCH_SIZES), progress)
            rows = []
            task = progress.add_task(
                "settling batches", total=2 * len(BATCH_SIZES) + len(BATCH_SIZES)
            )
            for shape in ("auction", "pairs"):
                for size in BATCH_SIZES:
                    rows.append(measure(bench, shape, size, seed=size))
                    progress.advance(task)
            readings_only = []
            for size in BATCH_SIZES:
                gas = bench.settle_readings(range(size), seed=size)
                readings_only.append(
                    {"readings": size, "delivery_gas": gas, "gas_per_reading": round(gas / size)}
                )
                progress.advance(task)
        block_gas_limit = int(bench.w3.eth.get_block("latest")["gasLimit"])
    finally:
        stop_anvil(node)

    at_100 = next(r for r in rows if r["shape"] == "auction" and r["batch_trades"] == 100)
    pairs_100 = next(r for r in rows if r["shape"] == "pairs" and r["batch_trades"] == 100)
    # One prosumer per interval: its share of a batch (one order, and one trade in the auction
    # book, half a trade in the pairs book) plus one reading in the delivery that follows. The
    # capacity uses the costlier of the two books.
    per_prosumer = {
        r["shape"]: r["batch_gas"] / r["meters"] + r["delivery_gas_per_reading"]
        for r in (at_100, pairs_100)
    }
    worst = max(per_prosumer.values())
    interval_gas = BLOCK_GAS * BLOCKS_PER_INTERVAL
    capacity = int(interval_gas // worst)
    results = {
        "node": {"anvil": "1.7.1", "hardfork": "paris", "block_gas_limit": block_gas_limit},
        "anchor_gas_per_trade": ANCHOR_GAS_PER_TRADE,
        "target_gas_per_trade_at_100": TARGET_GAS_PER_TRADE,
        "batches": rows,
        "readings_only": readings_only,
        "gas_per_trade_at_100": at_100["gas_per_trade"],
        "gas_per_trade_at_100_pairs": pairs_100["gas_per_trade"],
        "meets_target_auction": at_100["gas_per_trade"] <= TARGET_GAS_PER_TRADE,
        "meets_target_pairs": pairs_100["gas_per_trade"] <= TARGET_GAS_PER_TRADE,
        "capacity": {
            "block_gas": BLOCK_GAS,
            "blocks_per_interval": BLOCKS_PER_INTERVAL,
            "gas_per_prosumer_per_interval": {k: round(v) for k, v in per_prosumer.items()},
            "prosumers_per_interval": capacity,
            "max_trades_per_6M_gas_transaction": int(BLOCK_GAS // at_100["gas_per_trade"]),
            "max_readings_per_6M_gas_transaction": int(
                BLOCK_GAS // at_100["delivery_gas_per_reading"]
            ),
        },
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    path = write_result("gas", results)

    table = Table(title="EnergyMarket gas (anvil, paris)")
    for column in (
        "book",
        "trades",
        "orders",
        "batch gas",
        "gas/trade",
        "delivery gas/reading",
        "vs anchor",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["shape"], str(r["batch_trades"]), str(r["orders"]), f"{r['batch_gas']:,}",
            f"{r['gas_per_trade']:,}", f"{r['delivery_gas_per_reading']:,}",
            f"{ANCHOR_GAS_PER_TRADE / r['gas_per_trade']:.0f}x less",
        )  # fmt: skip
    console.print(table)
    for r in readings_only:
        console.print(
            f"readings only, {r['readings']:>3}: {r['gas_per_reading']:,} gas per reading"
        )
    console.print(
        f"target ≤ {TARGET_GAS_PER_TRADE:,} gas/trade at batch 100: auction "
        f"{at_100['gas_per_trade']:,}, pairs {pairs_100['gas_per_trade']:,}; capacity "
        f"{capacity:,} prosumers per 15-min interval at 6M gas/5 s "
        f"({round(worst):,} gas per prosumer and interval); results in {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
