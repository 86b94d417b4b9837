"""The market's economic invariants under attack, on a real node (issue 8).

A hypothesis state machine runs a community over many intervals: honest meters trade what
they really import and export; colluding ones sign orders they do not honour (phantom sellers
and buyers), withhold readings, send readings whose registers run backwards, withdraw credit
right before a batch, get revoked with trades pending; the operator sometimes never delivers
an interval, which anyone then refunds after the deadline. After every step:

- credit is conserved: the market holds exactly every balance, the grid account and the locks;
- every interval settles: each one ends delivered or refunded (void), and no delivery reverts;
- no meter, hence no coalition of meters, ends better off than the grid's tariffs would leave
  it for the energy its registers show it moved, but for the energy that really flowed against
  its trades: a meter's gain over pure grid billing of its settled energy is at most
  (retail - feed-in) × Σ min(traded, metered) over its intervals. A trade without energy
  behind it gains nothing; a withheld reading gains nothing. (What a meter could not pay, the
  grid absorbs as a `Shortfall`: that is a debt to the utility, counted as owed here; the
  locks make sure no trade ever leaves one.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from contract_suite import (
    BASELINE,
    FEED_IN,
    GRID,
    INTERVAL,
    MAX_POWER_W,
    OUTSIDER,
    RETAIL,
    TREASURY,
    Meter,
    Suite,
    deploy_test_suite,
    trade,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from web3 import Web3

from meterchain.chain.batch import (
    BatchTrade,
    MeterAccountState,
    Metered,
    Position,
    advance,
    compute_positions,
    measure_reading,
    settle_meter,
)
from meterchain.chain.client import IntervalStatus, MeterKind
from meterchain.chain.errors import TransactionReverted
from meterchain.chain.node import dev_account
from meterchain.chain.signing import OrderSide, ReadingMessage, SignedOrder, sign_reading

NAMES = ("alice", "bob", "carol", "dave", "erin")
KINDS = (
    MeterKind.PROSUMER,
    MeterKind.PROSUMER,
    MeterKind.GENERATOR,
    MeterKind.CONSUMER,
    MeterKind.CONSUMER,
)
START_BALANCE = 2_000  # cents: enough for most locks, not all
START_GRID = 200_000
SPREAD = RETAIL - FEED_IN


@pytest.fixture(scope="module")
def suite(w3: Web3) -> Suite:
    built = deploy_test_suite(w3, NAMES, fund=False, kinds=KINDS)
    treasury = built.credit(TREASURY)
    for meter in built.meters:
        treasury.mint(meter.owner.address, START_BALANCE)
        built.market(meter.owner).deposit(meter.name, START_BALANCE)
    treasury.mint(dev_account(GRID).address, START_GRID)
    built.market(GRID).deposit_grid(START_GRID)
    return built


@dataclass
class MeterModel:
    """What the test knows of one meter: its true registers and its money."""

    meter: Meter
    kind: MeterKind
    registers: tuple[int, int] = (0, 0)
    account: MeterAccountState = field(default_factory=lambda: MeterAccountState(BASELINE, 0, 0))
    balance: int = START_BALANCE
    withdrawn: int = 0
    revoked: bool = False
    # Money against pure grid billing, in milli-units: what it got, less what the grid
    # tariffs would have given it for the energy the chain settled.
    grid_value_milli: int = 0  # export × feed-in - import × retail, settled energy
    flowed_wh: int = 0  # Σ min(traded, metered) over its intervals
    unpaid: int = 0  # what it could not pay (Shortfall): a debt to the utility, not a gain


class EconomicMachine(RuleBasedStateMachine):
    def __init__(self, suite: Suite) -> None:
        super().__init__()
        self.suite = suite
        self.snapshot = suite.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
        suite.nonces.clear()
        self.market = suite.market()
        self.models = [MeterModel(m, k) for m, k in zip(suite.meters, KINDS, strict=True)]
        self.grid = START_GRID
        self.locked = 0
        self.interval = INTERVAL
        self.pending_withdrawals: dict[int, int] = {}
        self.void: list[int] = []  # intervals whose batch was never delivered
        self.batches: dict[int, list[Position]] = {}

    def teardown(self) -> None:
        self.suite.w3.provider.make_request("evm_revert", [self.snapshot])  # type: ignore[arg-type]

    def later(self, seconds: int) -> None:
        self.suite.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        self.suite.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    # ---- money in and out

    @rule(index=st.integers(0, 4), fraction=st.floats(0.1, 1.0))
    def request_withdrawal(self, index: int, fraction: float) -> None:
        model = self.models[index]
        amount = max(1, int(model.balance * fraction))
        self.suite.market(model.meter.owner).request_withdrawal(model.meter.name, amount)
        self.pending_withdrawals[index] = amount

    @rule()
    def pay_withdrawals(self) -> None:
        """Every request's delay passes; each is paid if the balance still covers it."""
        self.later(self.market.withdrawal_delay)
        for index, amount in sorted(self.pending_withdrawals.items()):
            model = self.models[index]
            owner_market = self.suite.market(model.meter.owner)
            if amount > model.balance:
                with pytest.raises(TransactionReverted) as caught:
                    owner_market.withdraw(model.meter.name, model.meter.owner.address)
                assert caught.value.error_name == "InsufficientBalance"
                owner_market.request_withdrawal(model.meter.name, 0)
                continue
            owner_market.withdraw(model.meter.name, model.meter.owner.address)
            model.balance -= amount
            model.withdrawn += amount
        self.pending_withdrawals.clear()

    @rule(index=st.integers(0, 4))
    def revoke(self, index: int) -> None:
        model = self.models[index]
        if not model.revoked and sum(not m.revoked for m in self.models) > 2:
            self.suite.registry().revoke_meter(model.meter.name)
            model.revoked = True

    # ---- one interval

    @rule(
        usage=st.lists(
            st.tuples(st.integers(0, 2_000), st.integers(0, 2_000)), min_size=5, max_size=5
        ),
        deals=st.lists(
            st.tuples(
                st.integers(0, 4),  # buyer
                st.integers(0, 4),  # seller
                st.integers(1, 2_500),  # Wh: may exceed what either meter really moves
                st.integers(FEED_IN, RETAIL),  # price
            ),
            max_size=4,
        ),
        behaviour=st.lists(
            st.sampled_from(["honest", "honest", "withhold", "backwards"]), min_size=5, max_size=5
        ),
        deliver=st.booleans(),
    )
    def interval_passes(
        self,
        usage: list[tuple[int, int]],
        deals: list[tuple[int, int, int, int]],
        behaviour: list[str],
        deliver: bool,
    ) -> None:
        interval = self.interval
        self.interval += 900
        for model, (imported, exported) in zip(self.models, usage, strict=True):
            if not model.kind.can_sell:
                exported = 0
            start = model.registers
            model.registers = (start[0] + imported, start[1] + exported)
        positions = self.post_batch(interval, deals)
        if positions is not None and not deliver:
            self.void.append(interval)
            self.batches[interval] = positions
            return
        self.deliver(interval, usage, behaviour, positions or [])

    def post_batch(
        self, interval: int, deals: list[tuple[int, int, int, int]]
    ) -> list[Position] | None:
        """The operator's batch; a meter that makes it revert is left out and the rest posted
        again, as the market agent does."""
        excluded: set[int] = set()
        while True:
            orders: list[SignedOrder] = []
            trades: list[BatchTrade] = []
            for buyer, seller, quantity, price in deals:
                if buyer == seller or {buyer, seller} & excluded:
                    continue
                buy = self.suite.order(
                    self.models[buyer].meter, OrderSide.BUY, quantity, price, interval=interval
                )
                sell = self.suite.order(
                    self.models[seller].meter, OrderSide.SELL, quantity, price, interval=interval
                )
                orders += [buy, sell]
                trades.append(trade(buy, sell, quantity, price))
            if not trades:
                return None
            culprit = self.first_failing(compute_positions(trades))
            if culprit is None:
                result = self.market.settle_batch(interval, trades, orders)
                for position in result.positions:
                    model = self.model_of(position.meter_id)
                    lock = position.locked(RETAIL)
                    model.balance -= lock
                    self.locked += lock
                return result.positions
            with pytest.raises(TransactionReverted) as caught:
                self.market.settle_batch(interval, trades, orders)
            expected_errors = {
                "revoked": "MeterIsRevoked",
                "cannot sell": "MeterCannotSell",
                "poor": "InsufficientBalance",
            }
            assert caught.value.error_name == expected_errors[culprit[1]], str(caught.value)
            assert caught.value.named_args["meterId"] == self.models[culprit[0]].meter.id
            excluded.add(culprit[0])

    def first_failing(self, positions: list[Position]) -> tuple[int, str] | None:
        """The meter the contract will name first (it checks orders, then locks, in meter
        order), and why."""
        for position in positions:  # sorted by meter id, as the orders
            index = self.index_of(position.meter_id)
            model = self.models[index]
            if model.revoked:
                return index, "revoked"
            if position.sold_wh and not model.kind.can_sell:
                return index, "cannot sell"
        for position in positions:
            index = self.index_of(position.meter_id)
            if position.locked(RETAIL) > self.models[index].balance:
                return index, "poor"
        return None

    def deliver(
        self,
        interval: int,
        usage: list[tuple[int, int]],
        behaviour: list[str],
        positions: list[Position],
    ) -> None:
        by_meter = {p.meter_id: p for p in positions}
        readings = []
        metered: dict[int, Metered] = {}
        for index, model in enumerate(self.models):
            end = model.registers
            imported, exported = usage[index] if model.kind.can_sell else (usage[index][0], 0)
            start = (end[0] - imported, end[1] - exported)
            if behaviour[index] == "withhold":
                continue
            if behaviour[index] == "backwards":  # a glitching driver: registers run backwards
                start = (max(end[0] - 5_000_000, 0), end[1])
                end = (start[0] // 2, end[1])
            message = ReadingMessage(model.meter.id, interval, *start, *end)
            readings.append(sign_reading(self.suite.domain, message, model.meter.key))
            if model.revoked:
                continue
            found = measure_reading(message, model.account, max_power_w=MAX_POWER_W, interval_s=900)
            if isinstance(found, Metered):
                metered[index] = found
                model.account = advance(model.account, message)
        receipt = self.market.settle_delivery(interval, readings)
        rejected = {
            bytes(e["args"]["meterId"]) for e in self.market.events_in(receipt, "ReadingRejected")
        }
        assert rejected == {
            m.meter.id for i, m in enumerate(self.models) if behaviour[i] != "withhold"
        } - {self.models[i].meter.id for i in metered}
        grid_change = 0
        for index, model in enumerate(self.models):
            position = by_meter.get(model.meter.id)
            energy = metered.get(index)
            if position is None and energy is None:
                continue
            energy = energy or Metered()
            result = settle_meter(position, energy, RETAIL, FEED_IN)
            funds = model.balance + result.credits
            paid = min(result.debit, funds)
            model.unpaid += result.debit - paid
            model.balance = funds - paid
            self.locked -= result.locked
            grid_change += paid - (result.credits - result.locked)
            model.grid_value_milli += (energy.export_wh + energy.gap_export_wh) * FEED_IN - (
                energy.import_wh + energy.gap_import_wh
            ) * RETAIL
            p = position or Position(model.meter.id)
            model.flowed_wh += min(p.bought_wh, energy.import_wh) + min(p.sold_wh, energy.export_wh)
        self.grid += grid_change

    @rule()
    def anyone_refunds_the_void_intervals(self) -> None:
        if not self.void:
            return
        outsider = self.suite.market(OUTSIDER)
        with pytest.raises(TransactionReverted) as caught:
            outsider.refund_interval(self.void[0])
        assert caught.value.error_name == "RefundTooEarly"
        self.later(self.market.refund_delay)
        for interval in self.void:
            outsider.refund_interval(interval)
            for position in self.batches.pop(interval):
                model = self.model_of(position.meter_id)
                lock = position.locked(RETAIL)
                model.balance += lock
                self.locked -= lock
        self.void.clear()

    # ---- helpers

    def index_of(self, meter_id: bytes) -> int:
        return next(i for i, m in enumerate(self.models) if m.meter.id == meter_id)

    def model_of(self, meter_id: bytes) -> MeterModel:
        return self.models[self.index_of(meter_id)]

    # ---- invariants

    @invariant()
    def balances_match_the_model(self) -> None:
        balances = self.market.balances([m.meter.id for m in self.models])
        for model in self.models:
            assert balances[model.meter.id] == model.balance >= 0
        assert self.market.grid_balance() == self.grid
        assert self.market.escrow_total() == self.locked

    @invariant()
    def credit_is_conserved(self) -> None:
        held = self.suite.credit().balance_of(self.market.address)
        assert held == sum(m.balance for m in self.models) + self.grid + self.locked

    @invariant()
    def every_interval_settles_or_is_void(self) -> None:
        for interval in range(INTERVAL, self.interval, 900):
            status = self.market.interval_status(interval)
            if interval in self.void:
                assert status is IntervalStatus.BATCH_SETTLED
            else:
                assert status in (
                    IntervalStatus.DELIVERED,
                    IntervalStatus.REFUNDED,
                    IntervalStatus.OPEN,  # no trade and no reading at all
                ), (interval, status)

    @invariant()
    def no_meter_gains_beyond_the_energy_that_really_flowed(self) -> None:
        for model in self.models:
            if self.void or self.locked:  # locks still out: the books are open
                continue
            money_milli = (model.balance + model.withdrawn - START_BALANCE - model.unpaid) * 1000
            gain_milli = money_milli - model.grid_value_milli
            assert gain_milli <= SPREAD * model.flowed_wh, (
                f"{model.meter.name} gained {gain_milli / 1000} units over the grid's tariffs "
                f"with only {model.flowed_wh} Wh traded against metered energy"
            )


def test_no_coalition_beats_the_tariffs_and_every_interval_settles(suite: Suite) -> None:
    def machine() -> Any:
        return EconomicMachine(suite)

    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=8,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
