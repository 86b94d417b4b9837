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
from meterchain.der.orders import orders_for_next_interval
from meterchain.der.site import DerProblem, Site
from meterchain.model import Order

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
    ) -> None:
        self.site = site
        self.forecast = forecast
        self.meter_id = meter_id
        self.horizon_steps = horizon_steps
        self.step_s = step_s
        self.flexible_orders = flexible_orders

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
            step_s=self.step_s,
        )
        schedule = optimise(problem, time_limit_s=5.0, mip_rel_gap=1e-4)
        orders = orders_for_next_interval(
            problem,
            schedule,
            meter_id=self.meter_id,
            submitted_at=now,
            order_id_prefix=f"{self.meter_id}-{int(interval_start.timestamp())}",
            flexible=self.flexible_orders,
        )
        nxt = schedule.next_interval()
        return HouseholdPlan(
            orders=orders,
            battery_power_w=nxt.battery_power_w if site.battery is not None else None,
            expected_import_wh=nxt.import_wh,
            expected_export_wh=nxt.export_wh,
        )
