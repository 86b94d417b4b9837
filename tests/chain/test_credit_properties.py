"""Credit is conserved and no account goes negative, across random sequences on a real node.

A hypothesis state machine tops meters up, posts batches of trades, settles deliveries and
redeems credit, and after every step compares the chain with a plain Python model
(`meterchain.chain.batch.settle_meter`): every balance exactly, the market's token holdings
against the sum of all internal balances plus escrow, and the token supply against what was
minted and burnt.
"""

from __future__ import annotations

from typing import Any

import pytest
from contract_suite import (
    BASELINE,
    FEED_IN,
    GRID,
    INTERVAL,
    MAX_POWER_W,
    RETAIL,
    TREASURY,
    Meter,
    Suite,
    deploy_test_suite,
    trade,
)
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from web3 import Web3

from meterchain.chain.batch import (
    MeterAccountState,
    Metered,
    Position,
    advance,
    compute_positions,
    measure_reading,
    settle_meter,
)
from meterchain.chain.errors import TransactionReverted
from meterchain.chain.node import dev_account
from meterchain.chain.signing import OrderSide

START_BALANCE = 600  # cents per meter: small, so escrows fail and shortfalls happen
START_GRID = 50_000


@pytest.fixture(scope="module")
def suite(w3: Web3) -> Suite:
    built = deploy_test_suite(w3, fund=False)
    treasury = built.credit(TREASURY)
    for meter in built.meters:
        treasury.mint(meter.owner.address, START_BALANCE)
        built.market(meter.owner).deposit(meter.name, START_BALANCE)
    treasury.mint(dev_account(GRID).address, START_GRID)
    built.market(GRID).deposit_grid(START_GRID)
    return built


class CreditMachine(RuleBasedStateMachine):
    """One random life of the market; the chain is reverted to the start afterwards."""

    def __init__(self, suite: Suite) -> None:
        super().__init__()
        self.suite = suite
        self.snapshot = suite.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
        suite.nonces.clear()
        self.market = suite.market()
        self.credit = suite.credit(TREASURY)
        self.balances = {m.id: START_BALANCE for m in suite.meters}
        # The meters' true registers, and what the chain last settled (baseline (0, 0)).
        self.registers: dict[bytes, tuple[int, int]] = {m.id: (0, 0) for m in suite.meters}
        self.accounts = {m.id: MeterAccountState(BASELINE, 0, 0) for m in suite.meters}
        self.grid = START_GRID
        self.escrow = 0
        self.supply = START_BALANCE * len(suite.meters) + START_GRID
        self.interval = INTERVAL
        self.positions: list[Position] = []

    def teardown(self) -> None:
        self.suite.w3.provider.make_request("evm_revert", [self.snapshot])  # type: ignore[arg-type]

    def meter(self, index: int) -> Meter:
        return self.suite.meters[index % len(self.suite.meters)]

    @rule(index=st.integers(0, 3), amount=st.integers(1, 5_000))
    def top_up(self, index: int, amount: int) -> None:
        meter = self.meter(index)
        self.credit.mint(meter.owner.address, amount)
        self.suite.market(meter.owner).deposit(meter.name, amount)
        self.balances[meter.id] += amount
        self.supply += amount

    @rule(index=st.integers(0, 3), fraction=st.floats(0.0, 1.0))
    def redeem(self, index: int, fraction: float) -> None:
        meter = self.meter(index)
        amount = int(self.balances[meter.id] * fraction)
        if amount == 0:
            return
        owner_market = self.suite.market(meter.owner)
        owner_market.request_withdrawal(meter.name, amount)
        self.suite.w3.provider.make_request("evm_increaseTime", [owner_market.withdrawal_delay])  # type: ignore[arg-type]
        owner_market.withdraw(meter.name, meter.owner.address)
        self.suite.credit(meter.owner).approve(dev_account(TREASURY).address, amount)
        self.credit.redeem_from(meter.owner.address, amount)
        self.balances[meter.id] -= amount
        self.supply -= amount

    def post_batch(self, deals: list[tuple[int, int, int, int]]) -> None:
        """Each deal is (buyer, seller offset, Wh, price): the seller is never the buyer."""
        orders, trades = [], []
        for buyer, offset, quantity, price in deals:
            buyer_meter, seller_meter = self.meter(buyer), self.meter(buyer + 1 + offset % 3)
            buy = self.suite.order(
                buyer_meter, OrderSide.BUY, quantity, price + 5, interval=self.interval
            )
            sell = self.suite.order(
                seller_meter, OrderSide.SELL, quantity, max(price - 5, 0), interval=self.interval
            )
            orders += [buy, sell]
            trades.append(trade(buy, sell, quantity, price))
        positions = compute_positions(trades)
        if any(p.locked(RETAIL) > self.balances[p.meter_id] for p in positions):
            with pytest.raises(TransactionReverted) as caught:
                self.market.settle_batch(self.interval, trades, orders)
            assert caught.value.error_name == "InsufficientBalance"
            event("batch refused: a meter cannot cover what its trades lock")
            return
        self.market.settle_batch(self.interval, trades, orders)
        for position in positions:
            self.balances[position.meter_id] -= position.locked(RETAIL)
            self.escrow += position.locked(RETAIL)
        self.positions = positions
        event("batch settled")

    @rule(
        deals=st.lists(
            st.tuples(
                st.integers(0, 3), st.integers(0, 2), st.integers(1, 4_000), st.integers(30, 80)
            ),
            max_size=4,
        ),
        usage=st.lists(
            st.tuples(st.integers(0, 2_500), st.integers(0, 2_500)), min_size=4, max_size=4
        ),
        read=st.lists(st.booleans(), min_size=4, max_size=4),
    )
    def settle_interval(
        self, deals: list[tuple[int, int, int, int]], usage: list[tuple[int, int]], read: list[bool]
    ) -> None:
        """One interval: a batch of trades (if any), then its delivery from signed readings."""
        if deals:
            self.post_batch(deals)
        self.settle_delivery(usage, read)

    def settle_delivery(self, usage: list[tuple[int, int]], read: list[bool]) -> None:
        by_meter = {p.meter_id: p for p in self.positions}
        readings = []
        metered: dict[bytes, Metered] = {}
        for meter, (imported, exported), has_reading in zip(
            self.suite.meters, usage, read, strict=True
        ):
            start = self.registers[meter.id]
            self.registers[meter.id] = (start[0] + imported, start[1] + exported)
            if not has_reading:
                continue  # its energy settles with its next reading, as a gap
            signed = self.suite.reading(
                meter, imported, exported, interval=self.interval, start=start
            )
            readings.append(signed)
            found = measure_reading(
                signed.reading, self.accounts[meter.id], max_power_w=MAX_POWER_W, interval_s=900
            )
            assert isinstance(found, Metered), found
            metered[meter.id] = found
            self.accounts[meter.id] = advance(self.accounts[meter.id], signed.reading)
        expected_grid = self.grid
        for meter in self.suite.meters:
            position = by_meter.get(meter.id)
            if position is None and meter.id not in metered:
                continue
            result = settle_meter(position, metered.get(meter.id, Metered()), RETAIL, FEED_IN)
            funds = self.balances[meter.id] + result.credits
            paid = min(result.debit, funds)
            if paid < result.debit:
                event("shortfall absorbed by the grid")
            self.balances[meter.id] = funds - paid
            expected_grid += paid - (result.credits - result.locked)
            self.escrow -= result.locked
        assert expected_grid >= 0, "START_GRID is sized so the grid never runs dry here"
        self.market.settle_delivery(self.interval, readings)
        event("delivery settled" + (" after a batch" if self.positions else ""))
        self.grid = expected_grid
        self.positions = []
        self.interval += 900

    @invariant()
    def balances_match_the_model_and_are_never_negative(self) -> None:
        for meter in self.suite.meters:
            assert self.market.balance_of(meter.id) == self.balances[meter.id] >= 0
        assert self.market.grid_balance() == self.grid >= 0
        assert self.market.escrow_total() == self.escrow >= 0

    @invariant()
    def credit_is_conserved(self) -> None:
        held = self.credit.balance_of(self.market.address)
        assert held == sum(self.balances.values()) + self.grid + self.escrow
        assert self.credit.total_supply() == self.supply


def test_credit_is_conserved_and_no_account_goes_negative(suite: Suite) -> None:
    def machine() -> Any:
        return CreditMachine(suite)

    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=6,
            stateful_step_count=10,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
