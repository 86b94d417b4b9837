"""A contract suite with a PrepaidMeter and prepaid meters, for the prepaid chain tests.

Accounts: 0 admin, 1 operator (market agent), 2 treasury, 3 grid (the utility), 4-6
households, 9 an outsider. Tariffs 80/30 cents per kWh: 1 kWh imported costs 80 cents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import TxReceipt

from meterchain.chain.artifacts import all_abis
from meterchain.chain.client import (
    EnergyCreditClient,
    EnergyMarketClient,
    MeterKind,
    MeterRegistryClient,
)
from meterchain.chain.deploy import deploy_suite
from meterchain.chain.node import dev_account
from meterchain.chain.sender import TransactionSender
from meterchain.chain.signing import ReadingMessage, meter_id_to_bytes32, sign_reading
from meterchain.prepaid.client import PrepaidMeterClient, PrepaidSettings, deploy_prepaid
from meterchain.prepaid.rules import CutOffRules
from meterchain.prepaid.voucher import SignedVoucher, new_voucher, sign_voucher

ADMIN, OPERATOR, TREASURY, GRID = 0, 1, 2, 3
HOUSEHOLDS = (4, 5, 6)
OUTSIDER = 9
RETAIL = 80
FEED_IN = 30
MAX_POWER_W = 20_000  # 5 kWh per interval at most: 400 cents, under BUFFER
FIRST_INTERVAL = 1_795_000_500  # a multiple of 900
EMERGENCY = 200  # cents
BUFFER = 500  # cents kept in the market balance ahead of consumption
THRESHOLDS = (1000, 300, 0)
FLOAT = 100_000  # after the enrolments' loans: 3 × BUFFER less
GRID_FUNDS = 1_000_000
PREPAID_METERS = ("home-1", "home-2", "clinic")  # clinic: on the never-cut list
# Tuesday 2026-11-24 in Fortaleza (UTC-3): 10:00 local is 13:00Z.
TUESDAY_10H = int(datetime(2026, 11, 24, 13, 0, tzinfo=UTC).timestamp())
VENDING_KEY: LocalAccount = Account.from_key(b"\x5e" * 32)


def local(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    """Unix seconds of a Fortaleza local time (UTC-3)."""
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()) + 3 * 3600


def board_key(index: int) -> LocalAccount:
    account: LocalAccount = Account.from_key((0xB0A2D100 + index).to_bytes(32, "big"))
    return account


@dataclass
class PrepaidSuite:
    w3: Web3
    addresses: dict[str, str]
    registers: dict[str, int] = field(default_factory=dict)  # cumulative import per meter
    interval: int = FIRST_INTERVAL
    serial: int = 0

    def reset(self) -> None:
        self.registers = {m: 0 for m in (*PREPAID_METERS, "postpaid")}
        self.interval = FIRST_INTERVAL
        self.serial = 0

    def sender(self, account: int | LocalAccount) -> TransactionSender:
        who = dev_account(account) if isinstance(account, int) else account
        return TransactionSender(self.w3, who, abis=all_abis())

    def prepaid(self, account: int | LocalAccount = GRID) -> PrepaidMeterClient:
        return PrepaidMeterClient(self.sender(account), self.addresses["PrepaidMeter"])

    def market(self, account: int | LocalAccount = OPERATOR) -> EnergyMarketClient:
        return EnergyMarketClient(self.sender(account), self.addresses["EnergyMarket"])

    def credit(self, account: int | LocalAccount = TREASURY) -> EnergyCreditClient:
        return EnergyCreditClient(self.sender(account), self.addresses["EnergyCredit"])

    def registry(self, account: int | LocalAccount = ADMIN) -> MeterRegistryClient:
        return MeterRegistryClient(self.sender(account), self.addresses["MeterRegistry"])

    def holder(self, meter: str) -> LocalAccount:
        return dev_account(HOUSEHOLDS[PREPAID_METERS.index(meter) % len(HOUSEHOLDS)])

    def set_time(self, unix_s: int) -> None:
        """The chain's clock: the next blocks are stamped from `unix_s` on."""
        self.w3.provider.make_request("evm_setTime", [unix_s])  # type: ignore[arg-type]

    def top_up(self, meter: str, amount: int, payer: LocalAccount | None = None) -> TxReceipt:
        """The payer (the meter's holder by default) gets `amount` minted and tops up."""
        who = payer or self.holder(meter)
        self.credit(TREASURY).mint(who.address, amount)
        return self.prepaid(who).top_up(meter, amount)

    def consume(self, meter: str, import_wh: int) -> TxReceipt:
        """One delivered interval in which `meter` imported `import_wh` (a signed reading)."""
        start = self.registers[meter]
        self.registers[meter] = start + import_wh
        message = ReadingMessage(
            meter_id_to_bytes32(meter), self.interval, start, 0, start + import_wh, 0
        )
        index = (*PREPAID_METERS, "postpaid").index(meter)
        signed = sign_reading(self.market().domain, message, board_key(index))
        receipt = self.market(OPERATOR).settle_delivery(self.interval, [signed])
        self.interval += 900
        return receipt

    def consume_and_assess(self, meter: str, import_wh: int) -> int:
        """Import `import_wh` over as many intervals as the connection needs, each delivery
        followed by an assessment (as the operator's agent does); the Shortfall events seen."""
        shortfalls = 0
        while True:
            step = min(import_wh, MAX_POWER_W // 4)
            receipt = self.consume(meter, step)
            shortfalls += len(self.market().events_in(receipt, "Shortfall"))
            self.prepaid(OUTSIDER).assess(meter)
            import_wh -= step
            if import_wh == 0:
                return shortfalls

    def voucher(
        self,
        meter: str,
        amount: int,
        *,
        serial: int | None = None,
        expiry: int = 0,
        key: LocalAccount = VENDING_KEY,
    ) -> SignedVoucher:
        if serial is None:
            self.serial += 1
            serial = self.serial
        domain = self.prepaid().domain
        return sign_voucher(domain, new_voucher(meter, amount, serial, expiry), key)


def deploy_prepaid_suite(w3: Web3) -> PrepaidSuite:
    """Suite + PrepaidMeter; three prepaid meters (clinic never cut) and one postpaid one,
    all consumers with baseline (0, 0); the float funded; the grid account funded."""
    admin = TransactionSender(w3, dev_account(ADMIN), abis=all_abis())
    addresses = deploy_suite(
        admin,
        retail_price="0.80",
        feed_in_price="0.30",
        operator=dev_account(OPERATOR).address,
        treasury=dev_account(TREASURY).address,
        grid=dev_account(GRID).address,
    )
    grid = TransactionSender(w3, dev_account(GRID), abis=all_abis())
    addresses["PrepaidMeter"] = deploy_prepaid(
        grid,
        addresses["EnergyMarket"],
        PrepaidSettings(
            emergency_credit=EMERGENCY,
            advance_buffer=BUFFER,
            thresholds=THRESHOLDS,
            rules=CutOffRules(),
            vending_key=VENDING_KEY.address,
        ),
        admin=dev_account(ADMIN).address,
    )
    suite = PrepaidSuite(w3, addresses)
    suite.reset()
    registry = suite.registry(ADMIN)
    market_grid = suite.market(GRID)
    for index, meter in enumerate((*PREPAID_METERS, "postpaid")):
        owner = addresses["PrepaidMeter"] if meter != "postpaid" else dev_account(7).address
        registry.register_meter(
            meter, board_key(index).address, owner, MeterKind.CONSUMER, MAX_POWER_W
        )
        registry.assign_market(meter, addresses["EnergyMarket"])
        market_grid.set_baseline(meter, FIRST_INTERVAL - 900, 0, 0)
    prepaid = suite.prepaid(GRID)
    treasury = suite.credit(TREASURY)
    treasury.mint(dev_account(GRID).address, FLOAT + GRID_FUNDS)
    prepaid.fund_float(FLOAT)
    market_grid.deposit_grid(GRID_FUNDS)
    for meter in PREPAID_METERS:  # each enrolment lends the meter the buffer
        prepaid.enrol(meter, suite.holder(meter).address, never_cut=meter == "clinic")
    return suite
