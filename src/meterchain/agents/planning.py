"""What a household plans for the next interval: orders and a battery set-point.

The plan comes from the DER optimiser over a rolling horizon at the grid's tariffs; the
orders' limit prices come from the marginal value of energy to the household.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from meterchain.agents.messages import TariffNotice
from meterchain.der.optimiser import optimise
from meterchain.der.orders import orders_for_next_interval, planned_exchange
from meterchain.der.schedule import DerSchedule
from meterchain.der.site import DerProblem, Site
from meterchain.model import Order, Side

Forecast = Callable[[datetime, int], tuple[list[float], list[float]]]
"""(start, steps) -> (pv_w, load_w) per step."""


@dataclass(frozen=True)
class HouseholdPlan:
    orders: list[Order]
    battery_power_w: float | None
    expected_import_wh: float
    expected_export_wh: float


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
    ) -> None:
        self.site = site
        self.forecast = forecast
        self.meter_id = meter_id
        self.horizon_steps = horizon_steps
        self.step_s = step_s
        self.flexible_orders = flexible_orders
        self.target_soc_fraction = target_soc_fraction

    def plan(
        self,
        interval_start: datetime,
        tariffs: TariffNotice,
        soc_fraction: float | None,
        now: datetime,
    ) -> HouseholdPlan:
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
        problem = DerProblem(
            site=site,
            pv_w=pv_w,
            load_w=load_w,
            buy_price_per_kwh=[tariffs.retail_price] * steps,
            sell_price_per_kwh=[tariffs.feed_in_price] * steps,
            initial_soc_fraction=soc_fraction if soc_fraction is not None else 0.5,
            # A rolling horizon must not sell the battery empty at its end: energy left over
            # is worth something tomorrow. The target is soft (penalised), never infeasible.
            target_soc_fraction=self.target_soc_fraction if site.battery is not None else None,
            step_s=self.step_s,
        )
        if site.battery is None and site.export_limit_w is None and site.import_limit_w is None:
            return self._inflexible_plan(problem, interval_start, now)
        schedule = optimise(problem, time_limit_s=5.0, mip_rel_gap=1e-4)
        orders = orders_for_next_interval(
            problem,
            schedule,
            meter_id=self.meter_id,
            submitted_at=now,
            order_id_prefix=f"{self.meter_id}-{int(interval_start.timestamp())}",
            flexible=self.flexible_orders,
        )
        orders = self._one_side(orders, problem, schedule)
        nxt = schedule.next_interval()
        return HouseholdPlan(
            orders=orders,
            battery_power_w=nxt.battery_power_w if site.battery is not None else None,
            expected_import_wh=nxt.import_wh,
            expected_export_wh=nxt.export_wh,
        )

    @staticmethod
    def _one_side(orders: list[Order], problem: DerProblem, schedule: DerSchedule) -> list[Order]:
        """Keep the orders of one side: a market refuses a meter that both buys and sells.

        The side is that of the planned exchange; with none, a battery buys while the sun
        covers the load (to store a neighbour's surplus) and sells otherwise.
        """
        planned = planned_exchange(problem, schedule)
        if planned:
            side = planned[0].side
        else:
            side = Side.BUY if problem.pv_w[0] >= problem.load_w[0] else Side.SELL
        return [order for order in orders if order.side is side]

    def _inflexible_plan(
        self, problem: DerProblem, interval_start: datetime, now: datetime
    ) -> HouseholdPlan:
        """A site with nothing to shift trades its net load at the grid's prices.

        This is what the MILP and the LP duals give for such a site (tests compare the two),
        without building a model: the energy it buys is worth the retail price to it, and the
        energy it sells the feed-in price.
        """
        net_wh = (problem.load_w[0] - problem.pv_w[0]) * problem.step_h
        buy_price, sell_price = problem.buy_price_per_kwh[0], problem.sell_price_per_kwh[0]
        orders = []
        prefix = f"{self.meter_id}-{int(interval_start.timestamp())}"
        if net_wh >= 0.5:
            orders.append(
                Order(f"{prefix}-0-buy", self.meter_id, Side.BUY, round(net_wh), buy_price, now)
            )
        elif net_wh <= -0.5 and sell_price >= 0:
            orders.append(
                Order(f"{prefix}-0-sell", self.meter_id, Side.SELL, round(-net_wh), sell_price, now)
            )
        return HouseholdPlan(
            orders=orders,
            battery_power_w=None,
            expected_import_wh=max(net_wh, 0.0),
            expected_export_wh=max(-net_wh, 0.0),
        )
