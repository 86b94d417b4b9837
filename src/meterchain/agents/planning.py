"""What a household plans for the next interval: orders and a battery set-point.

The plan comes from the DER optimiser over a rolling horizon at the grid's tariffs; the
orders' limit prices come from the marginal value of energy to the household.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from meterchain.agents.messages import TariffNotice
from meterchain.der.optimiser import optimise
from meterchain.der.orders import orders_for_next_interval, planned_exchange
from meterchain.der.schedule import DerSchedule
from meterchain.der.site import DeferrableLoad, DerProblem, Site
from meterchain.model import Order, Side

Forecast = Callable[[datetime, int], tuple[list[float], list[float]]]
"""(start, steps) -> (pv_w, load_w) per step."""


@dataclass(frozen=True)
class HouseholdPlan:
    orders: list[Order]
    battery_power_w: float | None
    expected_import_wh: float
    expected_export_wh: float
    #: each relay-switched deferrable load's power in the interval (0: off)
    deferrable_power_w: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DailyLoad:
    """A relay-switched load that needs `energy_wh` every day between two local hours."""

    name: str
    power_w: float
    energy_wh: float
    start_hour: int
    end_hour: int
    timezone: str = "America/Fortaleza"


class DailyLoads:
    """The board's deferrable loads for each horizon, and the energy each got so far today.

    The planner places what a load still needs in the rest of today's window (or in
    tomorrow's, once today's has passed), switched on or off at its power: in whole steps
    (a relay is on for an interval or off), no more than the window still holds.
    """

    def __init__(self, loads: Sequence[DailyLoad]) -> None:
        self.loads = {load.name: load for load in loads}
        self._delivered_wh: dict[tuple[str, date], float] = {}

    def _day(self, load: DailyLoad, moment: datetime) -> date:
        return moment.astimezone(ZoneInfo(load.timezone)).date()

    def record(self, name: str, interval_start: datetime, energy_wh: float) -> None:
        """The load ran in the interval that starts at `interval_start`."""
        key = (name, self._day(self.loads[name], interval_start))
        self._delivered_wh[key] = self._delivered_wh.get(key, 0.0) + energy_wh

    def for_horizon(self, start: datetime, steps: int, step_s: int) -> list[DeferrableLoad]:
        """The loads as the optimiser takes them, for `steps` steps of `step_s` from `start`."""
        placed = []
        for load in self.loads.values():
            zone = ZoneInfo(load.timezone)
            local = start.astimezone(zone)
            for day in (local.date(), local.date() + timedelta(days=1)):
                opens = datetime(day.year, day.month, day.day, tzinfo=zone)
                window = (
                    opens + timedelta(hours=load.start_hour),
                    opens + timedelta(hours=load.end_hour),
                )
                first = max(0, _steps_until(start, window[0], step_s))
                last = min(steps, _steps_until(start, window[1], step_s))
                needed = load.energy_wh - self._delivered_wh.get((load.name, day), 0.0)
                step_wh = load.power_w * step_s / 3600
                on_steps = min(math.ceil(needed / step_wh - 1e-9), last - first)
                if on_steps > 0:
                    placed.append(
                        DeferrableLoad(
                            name=load.name,
                            energy_wh=on_steps * step_wh,
                            start_step=first,
                            end_step=last,
                            max_power_w=load.power_w,
                            min_power_w=load.power_w,  # a relay: off, or on at full power
                        )
                    )
                    break
        return placed


def _steps_until(start: datetime, moment: datetime, step_s: int) -> int:
    return int((moment - start).total_seconds() // step_s)


class DerPlanner:
    """Plans with the MILP over `horizon_steps` steps of `step_s` seconds."""

    def __init__(
        self,
        site: Site,
        forecast: Forecast,
        *,
        meter_id: str,
        horizon_steps: int = 96,
        step_s: int = 900,
        flexible_orders: bool = False,
        target_soc_fraction: float = 0.5,
        executor: Executor | None = None,
        daily_loads: DailyLoads | None = None,
    ) -> None:
        self.site = site
        self.forecast = forecast
        self.meter_id = meter_id
        self.horizon_steps = horizon_steps
        self.step_s = step_s
        self.flexible_orders = flexible_orders
        self.target_soc_fraction = target_soc_fraction
        self.executor = executor
        self.daily_loads = daily_loads

    def problem(
        self, interval_start: datetime, tariffs: TariffNotice, soc_fraction: float | None
    ) -> DerProblem:
        """The optimisation problem for the horizon that starts with `interval_start`."""
        pv_w, load_w = self.forecast(interval_start, self.horizon_steps)
        steps = len(pv_w)
        export_limit = tariffs.max_export_w
        site = self.site
        if export_limit is not None and site.export_limit_w != export_limit:
            site = Site(
                name=site.name,
                battery=site.battery,
                pv_curtailable=site.pv_curtailable,
                import_limit_w=site.import_limit_w,
                export_limit_w=export_limit,
            )
        return DerProblem(
            site=site,
            pv_w=pv_w,
            load_w=load_w,
            buy_price_per_kwh=[tariffs.retail_price] * steps,
            sell_price_per_kwh=[tariffs.feed_in_price] * steps,
            initial_soc_fraction=soc_fraction if soc_fraction is not None else 0.5,
            # A rolling horizon must not sell the battery empty at its end: energy left over
            # is worth something tomorrow. The target is soft (penalised), never infeasible.
            target_soc_fraction=self.target_soc_fraction if site.battery is not None else None,
            deferrable_loads=(
                self.daily_loads.for_horizon(interval_start, steps, self.step_s)
                if self.daily_loads is not None
                else ()
            ),
            step_s=self.step_s,
        )

    def plan(
        self,
        interval_start: datetime,
        tariffs: TariffNotice,
        soc_fraction: float | None,
        now: datetime,
    ) -> HouseholdPlan:
        """Plan in this thread."""
        problem = self.problem(interval_start, tariffs, soc_fraction)
        return solve_plan(problem, self._request(interval_start, now))

    async def plan_async(
        self,
        interval_start: datetime,
        tariffs: TariffNotice,
        soc_fraction: float | None,
        now: datetime,
    ) -> HouseholdPlan:
        """Plan without blocking the event loop: in `executor` (a process pool spreads the
        MILPs of many households over the cores), else in a thread."""
        problem = self.problem(interval_start, tariffs, soc_fraction)
        request = self._request(interval_start, now)
        if not _needs_solver(problem):
            return solve_plan(problem, request)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, solve_plan, problem, request)

    def _request(self, interval_start: datetime, now: datetime) -> PlanRequest:
        return PlanRequest(
            self.meter_id, int(interval_start.timestamp()), now, self.flexible_orders
        )


@dataclass(frozen=True)
class PlanRequest:
    """Who plans which interval: what `solve_plan` needs beside the problem (picklable)."""

    meter_id: str
    interval: int
    now: datetime
    flexible_orders: bool


def _needs_solver(problem: DerProblem) -> bool:
    site = problem.site
    return not (
        site.battery is None
        and site.export_limit_w is None
        and site.import_limit_w is None
        and not problem.deferrable_loads
    )


def solve_plan(problem: DerProblem, request: PlanRequest) -> HouseholdPlan:
    """The plan for a problem: a module-level function so a process pool can run it."""
    if not _needs_solver(problem):
        return _inflexible_plan(problem, request)
    schedule = optimise(problem, time_limit_s=5.0, mip_rel_gap=1e-4)
    side = _trading_side(problem, schedule)
    orders = orders_for_next_interval(
        problem,
        schedule,
        meter_id=request.meter_id,
        submitted_at=request.now,
        order_id_prefix=f"{request.meter_id}-{request.interval}",
        flexible=request.flexible_orders,
        only_side=side,
    )
    orders = [order for order in orders if order.side is side]
    nxt = schedule.next_interval()
    return HouseholdPlan(
        orders=orders,
        battery_power_w=nxt.battery_power_w if problem.site.battery is not None else None,
        expected_import_wh=nxt.import_wh,
        expected_export_wh=nxt.export_wh,
        deferrable_power_w=dict(nxt.deferrable_power_w),
    )


def _trading_side(problem: DerProblem, schedule: DerSchedule) -> Side:
    """The one side a site trades on in an interval (a market refuses a meter on both).

    The side of the planned exchange; with none, a battery buys while the sun covers the load
    (to store a neighbour's surplus) and sells otherwise.
    """
    planned = planned_exchange(problem, schedule)
    if planned:
        return planned[0].side
    return Side.BUY if problem.pv_w[0] >= problem.load_w[0] else Side.SELL


def _inflexible_plan(problem: DerProblem, request: PlanRequest) -> HouseholdPlan:
    """A site with nothing to shift trades its net load at the grid's prices.

    This is what the MILP and the LP duals give for such a site (tests compare the two),
    without building a model: the energy it buys is worth the retail price to it, and the
    energy it sells the feed-in price.
    """
    net_wh = (problem.load_w[0] - problem.pv_w[0]) * problem.step_h
    buy_price, sell_price = problem.buy_price_per_kwh[0], problem.sell_price_per_kwh[0]
    orders = []
    prefix = f"{request.meter_id}-{request.interval}"
    if net_wh >= 0.5:
        orders.append(
            Order(
                f"{prefix}-0-buy", request.meter_id, Side.BUY, round(net_wh), buy_price, request.now
            )
        )
    elif net_wh <= -0.5 and sell_price >= 0:
        orders.append(
            Order(
                f"{prefix}-0-sell",
                request.meter_id,
                Side.SELL,
                round(-net_wh),
                sell_price,
                request.now,
            )
        )
    return HouseholdPlan(
        orders=orders,
        battery_power_w=None,
        expected_import_wh=max(net_wh, 0.0),
        expected_export_wh=max(-net_wh, 0.0),
    )
