"""Gas of every ledger operation on a local anvil, and the cost of certificates per MWh.

Certificates are issued by `EnergyCertificates.issue` right after `settleDelivery` (the market
is at the EIP-170 size limit, so issuance is its own transaction): measured per meter-interval
for 1-100 generating meters in one interval, with and without local buyers whose share is
retired in their name, and for the first interval of a device's bitmap word (a new storage
slot, once every 256 intervals = 2.7 days) and the steady state. The delivery of the same
interval is measured beside it, so "delivery + certificates" per meter-interval is the cost of
settling and certifying a generating meter. Then transfer, retire, auto-retirement settings,
device registration; the community fund (buy shares, transfer, collect, distribute, claim,
refund) and billing (record, pay, pay with permit).

Cost per MWh certified = gas per certificate × 1,000,000 / Wh per certificate: a rooftop PV
exports about 1 kWh in a sunny 15-minute interval (the bench's sellers export 1,000 Wh).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from eth_account import Account  # noqa: E402
from eth_account.signers.local import LocalAccount  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402
from web3.types import TxReceipt  # noqa: E402

from bench.common import write_result  # noqa: E402
from meterchain.chain.artifacts import all_abis  # noqa: E402
from meterchain.chain.batch import BatchTrade  # noqa: E402
from meterchain.chain.client import (  # noqa: E402
    EnergyCreditClient,
    EnergyMarketClient,
    MeterKind,
    MeterRegistryClient,
)
from meterchain.chain.deploy import FundCampaign, deploy_fund, deploy_suite  # noqa: E402
from meterchain.chain.ledger_clients import (  # noqa: E402
    BillingClient,
    CommunityFundClient,
    EnergyCertificatesClient,
)
from meterchain.chain.node import connect, dev_account, start_anvil, stop_anvil  # noqa: E402
from meterchain.chain.sender import TransactionSender  # noqa: E402
from meterchain.chain.signing import (  # noqa: E402
    OrderMessage,
    OrderSide,
    ReadingMessage,
    meter_id_to_bytes32,
    sign_order,
    sign_reading,
)

SELLER_COUNTS = (1, 10, 50, 100)
EXPORT_WH = 1_000  # per seller and interval: a sunny 15-minute interval of a ~4 kWp rooftop
SOLD_WH = 800  # of which sold to its local buyer
INTERVAL_S = 900
# An interval at the start of a 256-interval bitmap word, so the next one shares the word.
FIRST_INTERVAL = (1_795_000_500 // (256 * INTERVAL_S) + 1) * 256 * INTERVAL_S
DEPOSIT = 10_000_000
MAX_POWER_W = 100_000

console = Console()


class LedgerBench:
    """A deployed suite with `pairs` sellers (PV devices) and `pairs` buyers (opted in)."""

    def __init__(self, rpc_url: str, pairs: int, progress: Progress) -> None:
        self.w3 = connect(rpc_url)
        self.admin = TransactionSender(self.w3, dev_account(0), abis=all_abis())
        self.addresses = deploy_suite(self.admin)
        self.market = EnergyMarketClient(self.admin, self.addresses["EnergyMarket"])
        self.registry = MeterRegistryClient(self.admin, self.addresses["MeterRegistry"])
        self.credit = EnergyCreditClient(self.admin, self.addresses["EnergyCredit"])
        self.certificates = EnergyCertificatesClient(
            self.admin, self.addresses["EnergyCertificates"]
        )
        self.billing = BillingClient(self.admin, self.addresses["Billing"])
        self.keys: list[LocalAccount] = [
            Account.from_key((0x1ED6E000 + i).to_bytes(32, "big")) for i in range(2 * pairs)
        ]
        self.ids = [meter_id_to_bytes32(f"meter-{i:05d}") for i in range(2 * pairs)]
        self.registers = [[0, 0] for _ in range(2 * pairs)]
        self.pairs = pairs
        self.interval = FIRST_INTERVAL - INTERVAL_S
        self.gas: dict[str, int] = {}
        self._setup(progress)

    def _setup(self, progress: Progress) -> None:
        registry, market = self.registry.contract, self.market.contract
        total = DEPOSIT * len(self.ids)
        self.credit.mint(self.admin.address, total + 10**9)
        self.credit.approve(market.address, total + 10**9)
        self.admin.transact(market.functions.depositGrid(10**9))
        task = progress.add_task("registering meters and devices", total=len(self.ids))
        for start in range(0, len(self.ids), 100):
            chunk = range(start, min(start + 100, len(self.ids)))
            for fns in (
                [
                    registry.functions.registerMeter(
                        self.ids[i],
                        self.keys[i].address,
                        self.admin.address,
                        int(MeterKind.PROSUMER),
                        MAX_POWER_W,
                    )
                    for i in chunk
                ],
                [registry.functions.assignMarket(self.ids[i], market.address) for i in chunk],
                [
                    market.functions.setBaseline(
                        self.ids[i], self.interval, 0, 0, b"enrolled".ljust(32, b"\0")
                    )
                    for i in chunk
                ],
                [market.functions.deposit(self.ids[i], DEPOSIT) for i in chunk],
            ):
                self.admin.transact_many(fns, gas=200_000)
            progress.advance(task, len(chunk))
        contract = self.certificates.contract
        origin = "-3.7319,-38.5267 Fortaleza CE BR"
        receipts = self.admin.transact_many(
            [
                contract.functions.registerDevice(
                    (
                        self.ids[i],
                        4_000,
                        1_767_225_600,
                        f"house {i}",
                        "Solar;Photovoltaic;Roof mounted",
                        origin,
                    )
                )
                for i in range(self.pairs)
            ],
            gas=400_000,
        )
        self.gas["registerDevice"] = int(receipts[-1]["gasUsed"])
        # Every buyer asks for its local purchases to be retired in its name (the admin owns
        # every bench meter).
        self.admin.transact_many(
            [
                contract.functions.setAutoRetirement(self.ids[i], f"household {i}", "local supply")
                for i in range(self.pairs, 2 * self.pairs)
            ],
            gas=200_000,
        )

    def next_interval(self) -> int:
        self.interval += INTERVAL_S
        return self.interval

    def settle_and_issue(self, sellers: int, *, trade: bool) -> tuple[int, int, TxReceipt]:
        """One interval: `sellers` sellers export EXPORT_WH (selling SOLD_WH each to their
        buyer when `trade`), buyers import it; returns (delivery gas, issue gas, receipt)."""
        interval = self.next_interval()
        orders, trades = [], []
        meters = [*range(sellers), *range(self.pairs, self.pairs + sellers)]
        if trade:
            for i in range(sellers):
                buyer, seller = self.pairs + i, i
                buy = sign_order(
                    self.market.domain,
                    OrderMessage(self.ids[buyer], interval, OrderSide.BUY, SOLD_WH, 60, 1),
                    self.keys[buyer],
                )
                sell = sign_order(
                    self.market.domain,
                    OrderMessage(self.ids[seller], interval, OrderSide.SELL, SOLD_WH, 40, 1),
                    self.keys[seller],
                )
                orders += [buy, sell]
                trades.append(BatchTrade(buy.order.key, sell.order.key, SOLD_WH, 50))
            self.market.settle_batch(interval, trades, orders)
        readings = []
        for m in meters:
            start = list(self.registers[m])
            if m < self.pairs:
                self.registers[m][1] += EXPORT_WH
            else:
                self.registers[m][0] += EXPORT_WH
            message = ReadingMessage(self.ids[m], interval, *start, *self.registers[m])
            readings.append(sign_reading(self.market.domain, message, self.keys[m]))
        delivery = self.market.settle_delivery(interval, readings)
        assert not self.market.events_in(delivery, "ReadingRejected")
        issued = self.certificates.issue_interval(self.market, interval)
        return int(delivery["gasUsed"]), int(issued["gasUsed"]), issued


def measure_issuance(bench: LedgerBench, progress: Progress) -> list[dict[str, Any]]:
    rows = []
    task = progress.add_task("issuing certificates", total=3 * len(SELLER_COUNTS))
    for index, sellers in enumerate(SELLER_COUNTS):
        for case, trade, first in (
            ("no local sales, first interval of the bitmap word", False, True),
            ("no local sales, steady state", False, False),
            ("sold locally, buyers' shares retired", True, False),
        ):
            if first and index:
                # Move to the start of a fresh bitmap word for every device.
                bench.interval = (bench.interval // (256 * INTERVAL_S) + 1) * 256 * INTERVAL_S
                bench.interval -= INTERVAL_S
            delivery_gas, issue_gas, receipt = bench.settle_and_issue(sellers, trade=trade)
            event = bench.certificates.events_in(receipt, "IntervalCertified")[0]["args"]
            certified = int(event["certifiedWh"])
            assert certified == sellers * EXPORT_WH
            assert int(event["autoRetiredWh"]) == (sellers * SOLD_WH if trade else 0)
            per_certificate = issue_gas / sellers
            rows.append(
                {
                    "case": case,
                    "certificates": sellers,
                    "certified_wh": certified,
                    "auto_retired_wh": int(event["autoRetiredWh"]),
                    "issue_gas": issue_gas,
                    "issue_gas_per_certificate": round(per_certificate),
                    "issue_gas_per_mwh": round(issue_gas * 1_000_000 / certified),
                    "delivery_gas_per_meter": round(delivery_gas / (2 * sellers)),
                    "delivery_and_issue_gas_per_generating_meter": round(
                        (delivery_gas / (2 * sellers)) + per_certificate
                    ),
                }
            )
            progress.advance(task)
    return rows


def measure_operations(bench: LedgerBench) -> dict[str, int]:
    """Transfer, retire, auto-retirement setting, and the certificate's origin registration."""
    gas = dict(bench.gas)
    certificates = bench.certificates
    certificate = certificates.certificate_id(bench.ids[0], FIRST_INTERVAL)
    buyer = dev_account(5)
    gas["safeTransferFrom (part of a certificate, to a new holder)"] = int(
        certificates.transfer(buyer.address, certificate, 100)["gasUsed"]
    )
    retire = certificates.retire(
        certificate, 300, beneficiary="Escola Municipal Fortaleza", period_start=FIRST_INTERVAL,
        period_end=FIRST_INTERVAL + INTERVAL_S, purpose="24/7 renewable supply",
    )  # fmt: skip
    gas["retire (with beneficiary, period, purpose)"] = int(retire["gasUsed"])
    gas["setAutoRetirement"] = int(
        certificates.set_auto_retirement(bench.ids[1], "household 1")["gasUsed"]
    )
    return gas


def measure_fund(bench: LedgerBench) -> dict[str, int]:
    """The community fund's operations, on a plant meter owned by the fund."""
    gas: dict[str, int] = {}
    plant = meter_id_to_bytes32("plant")
    now = int(bench.w3.eth.get_block("latest")["timestamp"])
    price = 10_000
    campaign = FundCampaign(plant, price, 5 * price, 10 * price, now + 86_400)
    fund_address = deploy_fund(bench.admin, bench.credit.address, bench.market.address, campaign)
    failing = deploy_fund(bench.admin, bench.credit.address, bench.market.address, campaign)
    registry = bench.registry
    key = Account.from_key((0x91A47).to_bytes(32, "big"))
    registry.register_meter(plant, key.address, fund_address, MeterKind.GENERATOR, MAX_POWER_W)
    registry.assign_market(plant, bench.market.address)
    bench.market.set_baseline(plant, bench.interval, 0, 0, "enrolled")
    bench.credit.mint(bench.admin.address, 100_000)
    bench.market.deposit(plant, 100_000)
    backers = [dev_account(i) for i in (1, 2, 3)]
    for backer in backers:
        bench.credit.mint(backer.address, 20 * price)
    clients = [CommunityFundClient(TransactionSender(bench.w3, b), fund_address) for b in backers]
    clients[0].credit.approve(fund_address, 10 * price)
    gas["buy (first shares of a holder)"] = int(clients[0].buy(2, approve=False)["gasUsed"])
    gas["buy (more shares)"] = int(clients[0].buy(1, approve=False)["gasUsed"])
    gas["buyWithPermit"] = int(clients[1].buy_with_permit(3, backers[1], now + 3600)["gasUsed"])
    clients[2].buy(4)
    admin_fund = CommunityFundClient(bench.admin, fund_address)
    admin_fund.set_reserve(100_000)
    gas["transfer shares"] = int(clients[2].transfer_shares(backers[0].address, 1)["gasUsed"])
    # Revenue: the plant sells in one interval, then anyone collects it in two steps.
    interval = bench.next_interval()
    seller, buyer = plant, bench.ids[bench.pairs]
    sell = sign_order(
        bench.market.domain, OrderMessage(seller, interval, OrderSide.SELL, 2_000, 40, 1), key
    )
    buy = sign_order(
        bench.market.domain,
        OrderMessage(buyer, interval, OrderSide.BUY, 2_000, 60, 1),
        bench.keys[bench.pairs],
    )
    bench.market.settle_batch(
        interval, [BatchTrade(buy.order.key, sell.order.key, 2_000, 50)], [buy, sell]
    )
    start = list(bench.registers[bench.pairs])
    bench.registers[bench.pairs][0] += 2_000
    readings = [
        sign_reading(bench.market.domain, ReadingMessage(plant, interval, 0, 0, 0, 2_000), key),
        sign_reading(
            bench.market.domain,
            ReadingMessage(buyer, interval, *start, *bench.registers[bench.pairs]),
            bench.keys[bench.pairs],
        ),
    ]
    bench.market.settle_delivery(interval, readings)
    gas["collect (withdrawal request)"] = int(admin_fund.collect()["gasUsed"])
    bench.w3.provider.make_request("evm_increaseTime", [bench.market.withdrawal_delay + 1])  # type: ignore[arg-type]
    bench.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    gas["collect (withdrawal, distribution)"] = int(admin_fund.collect()["gasUsed"])
    bench.credit.mint(fund_address, 1_000)
    gas["distribute (credit sent to the fund)"] = int(admin_fund.distribute()["gasUsed"])
    gas["claim"] = int(clients[0].claim()["gasUsed"])
    # A campaign that misses its goal: the refund.
    CommunityFundClient(TransactionSender(bench.w3, backers[0]), failing).buy(1)
    bench.w3.provider.make_request("evm_increaseTime", [86_400])  # type: ignore[arg-type]
    bench.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    gas["refund"] = int(
        CommunityFundClient(TransactionSender(bench.w3, backers[0]), failing).refund()["gasUsed"]
    )
    return gas


def measure_billing(bench: LedgerBench) -> dict[str, int]:
    gas: dict[str, int] = {}
    meter = bench.ids[0]
    gas["record statement"] = int(
        bench.billing.record(meter, 202611, b"\x11" * 32, 5_000)["gasUsed"]
    )
    payer = dev_account(6)
    bench.credit.mint(payer.address, 5_000)
    client = BillingClient(TransactionSender(bench.w3, payer), bench.billing.address)
    gas["pay (approved)"] = int(client.pay(meter, 202611, 2_000)["gasUsed"])
    now = int(bench.w3.eth.get_block("latest")["timestamp"])
    gas["payWithPermit"] = int(
        client.pay_with_permit(meter, 202611, 3_000, payer, now + 600)["gasUsed"]
    )
    return gas


def main() -> int:
    node = start_anvil()
    try:
        with Progress(console=console, transient=True) as progress:
            bench = LedgerBench(node.rpc_url, max(SELLER_COUNTS), progress)
            issuance = measure_issuance(bench, progress)
            operations = measure_operations(bench)
            fund = measure_fund(bench)
            billing = measure_billing(bench)
    finally:
        stop_anvil(node)
    steady = [r for r in issuance if r["case"] == "sold locally, buyers' shares retired"]
    results = {
        "export_wh_per_certificate": EXPORT_WH,
        "issuance": issuance,
        "certificates": operations,
        "fund": fund,
        "billing": billing,
        "retire_gas_per_mwh_of_1kwh_certificates": operations[
            "retire (with beneficiary, period, purpose)"
        ]
        * 1_000,
        "issue_gas_per_mwh_at_100_sellers": steady[-1]["issue_gas_per_mwh"],
    }
    table = Table(title="certificate issuance (EnergyCertificates.issue after settleDelivery)")
    for column in ("case", "certs", "gas/cert", "gas/MWh", "delivery/meter", "delivery+cert"):
        table.add_column(column, justify="right" if column != "case" else "left")
    for row in issuance:
        table.add_row(
            row["case"], str(row["certificates"]), f"{row['issue_gas_per_certificate']:,}",
            f"{row['issue_gas_per_mwh']:,}", f"{row['delivery_gas_per_meter']:,}",
            f"{row['delivery_and_issue_gas_per_generating_meter']:,}",
        )  # fmt: skip
    console.print(table)
    for title, values in (("certificates", operations), ("fund", fund), ("billing", billing)):
        other = Table(title=title)
        other.add_column("operation")
        other.add_column("gas", justify="right")
        for name, value in values.items():
            other.add_row(name, f"{value:,}")
        console.print(other)
    path = write_result("ledger", results)
    console.print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
