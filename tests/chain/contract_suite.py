"""A deployed contract suite with meters, funded accounts and signing helpers, for chain tests.

`deploy_test_suite` runs once per module (outside any snapshot); `Suite.clients` builds fresh
senders per test, because a sender caches its nonce and tests revert the chain under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from meterchain.chain.artifacts import all_abis
from meterchain.chain.batch import BatchTrade
from meterchain.chain.client import (
    EnergyCreditClient,
    EnergyMarketClient,
    MeterKind,
    MeterRegistryClient,
)
from meterchain.chain.deploy import deploy_suite
from meterchain.chain.node import dev_account
from meterchain.chain.sender import TransactionSender
from meterchain.chain.signing import (
    MarketDomain,
    OrderMessage,
    OrderSide,
    ReadingMessage,
    SignedOrder,
    SignedReading,
    meter_id_to_bytes32,
    sign_order,
    sign_reading,
)

RETAIL = 80  # smallest units (cents) per kWh
FEED_IN = 30
INTERVAL = 1_795_000_500  # an interval start, Unix seconds (a multiple of 900)
NEXT_INTERVAL = INTERVAL + 900
BASELINE = INTERVAL - 900  # meters are enrolled with registers (0, 0) at this interval's end
MAX_POWER_W = 20_000  # every test meter's connection: 5,000 Wh per 15-minute interval
DEPOSIT = 100_000  # cents each meter starts with in the market
GRID_FUNDS = 1_000_000

ADMIN, OPERATOR, TREASURY, GRID = 0, 1, 2, 3
OWNERS = (4, 5, 6, 7)
OUTSIDER = 9


@dataclass
class Meter:
    """A registered meter: its on-chain id, board key and owner account."""

    name: str
    key: LocalAccount
    owner: LocalAccount

    @property
    def id(self) -> bytes:
        return meter_id_to_bytes32(self.name)


@dataclass
class Suite:
    """Addresses of a deployed suite plus the meters registered on it."""

    w3: Web3
    addresses: dict[str, str]
    meters: list[Meter]
    nonces: dict[bytes, int] = field(default_factory=dict)

    def sender(self, account: int | LocalAccount) -> TransactionSender:
        who = dev_account(account) if isinstance(account, int) else account
        return TransactionSender(self.w3, who, abis=all_abis())

    def market(self, account: int | LocalAccount = OPERATOR) -> EnergyMarketClient:
        return EnergyMarketClient(self.sender(account), self.addresses["EnergyMarket"])

    def credit(self, account: int | LocalAccount = TREASURY) -> EnergyCreditClient:
        return EnergyCreditClient(self.sender(account), self.addresses["EnergyCredit"])

    def registry(self, account: int | LocalAccount = ADMIN) -> MeterRegistryClient:
        return MeterRegistryClient(self.sender(account), self.addresses["MeterRegistry"])

    @property
    def domain(self) -> MarketDomain:
        return MarketDomain(
            chain_id=self.w3.eth.chain_id, market_address=self.addresses["EnergyMarket"]
        )

    def order(
        self,
        meter: Meter,
        side: OrderSide,
        quantity_wh: int,
        limit_price: int,
        *,
        interval: int = INTERVAL,
        nonce: int | None = None,
        signer: LocalAccount | None = None,
        domain: MarketDomain | None = None,
    ) -> SignedOrder:
        """A signed order; nonces count up per meter unless given."""
        if nonce is None:
            nonce = self.nonces.get(meter.id, 0) + 1
            self.nonces[meter.id] = nonce
        message = OrderMessage(meter.id, interval, side, quantity_wh, limit_price, nonce)
        return sign_order(domain or self.domain, message, signer or meter.key)

    def reading(
        self,
        meter: Meter,
        import_wh: int,
        export_wh: int,
        *,
        interval: int = INTERVAL,
        start: tuple[int, int] = (0, 0),
        signer: LocalAccount | None = None,
    ) -> SignedReading:
        """A signed reading: registers `start` at the interval's start, and `start` plus
        `import_wh`/`export_wh` (the energy of the interval) at its end."""
        message = ReadingMessage(
            meter.id, interval, start[0], start[1], start[0] + import_wh, start[1] + export_wh
        )
        return sign_reading(self.domain, message, signer or meter.key)


def trade(buy: SignedOrder, sell: SignedOrder, quantity_wh: int, price: int) -> BatchTrade:
    return BatchTrade(buy=buy.order.key, sell=sell.order.key, quantity_wh=quantity_wh, price=price)


def board_key(index: int) -> LocalAccount:
    """A deterministic board key (never funded: boards only sign)."""
    account: LocalAccount = Account.from_key((0xB0A2D000 + index).to_bytes(32, "big"))
    return account


def enrol(
    suite: Suite,
    name: str,
    signer: str,
    owner: str,
    kind: MeterKind = MeterKind.PROSUMER,
    *,
    baseline: tuple[int, int, int] = (BASELINE, 0, 0),
) -> None:
    """Register a meter, put it in the suite's market and record its baseline registers."""
    suite.registry(ADMIN).register_meter(name, signer, owner, kind, MAX_POWER_W)
    suite.registry(ADMIN).assign_market(name, suite.addresses["EnergyMarket"])
    suite.market(GRID).set_baseline(name, *baseline)


def deploy_test_suite(
    w3: Web3,
    meter_names: Sequence[str] = ("alice", "bob", "carol", "dave"),
    *,
    fund: bool = True,
    kinds: Sequence[MeterKind] | None = None,
) -> Suite:
    """Deploy the suite with separate admin/operator/treasury/grid accounts and register meters
    (prosumers unless `kinds` says otherwise), each in the market with baseline (0, 0) at the
    end of BASELINE.

    With `fund`, each meter's owner gets DEPOSIT cents into the meter's market balance and the
    grid account GRID_FUNDS.
    """
    admin = TransactionSender(w3, dev_account(ADMIN), abis=all_abis())
    addresses = deploy_suite(
        admin,
        retail_price="0.80",
        feed_in_price="0.30",
        operator=dev_account(OPERATOR).address,
        treasury=dev_account(TREASURY).address,
        grid=dev_account(GRID).address,
    )
    meters = [
        Meter(name, board_key(i), dev_account(OWNERS[i % len(OWNERS)]))
        for i, name in enumerate(meter_names)
    ]
    suite = Suite(w3=w3, addresses=addresses, meters=meters)
    for i, meter in enumerate(meters):
        kind = kinds[i] if kinds is not None else MeterKind.PROSUMER
        enrol(suite, meter.name, meter.key.address, meter.owner.address, kind)
    if fund:
        treasury = suite.credit(TREASURY)
        for meter in meters:
            treasury.mint(meter.owner.address, DEPOSIT)
            suite.market(meter.owner).deposit(meter.name, DEPOSIT)
        treasury.mint(dev_account(GRID).address, GRID_FUNDS)
        suite.market(GRID).deposit_grid(GRID_FUNDS)
    return suite
