"""A board's trading configuration, set from the web interface: checked, kept, applied.

The prosumer changes it in the web interface; the operator's monitor sends it to the board as
a `ConfigUpdate`; the board checks it against its own equipment (a battery reserve needs a
battery), keeps it in its store, switches the relay if asked, and answers with a `ConfigAck`
naming the first interval it applies to (the next one it plans) or why it refused. From then
on `ConfiguredPlanner` plans with it: the battery reserve and target state of charge bound the
MILP, deferrable loads are placed in their windows, and every order's limit respects the
maximum buy and minimum sell prices. The `fixed` strategy skips the optimiser altogether.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from meterchain.agents.messages import ConfigAck, ConfigUpdate, TariffNotice, TradingConfig
from meterchain.agents.planning import DerPlanner, HouseholdPlan
from meterchain.agents.runtime import Envelope, Performative
from meterchain.der.site import DeferrableLoad, DerProblem, Site
from meterchain.meters.errors import MeterError
from meterchain.model import Order, RelayState, SetRelay, Side
from meterchain.store.records import Records

if TYPE_CHECKING:
    from meterchain.agents.prosumer import ProsumerAgent

log = logging.getLogger(__name__)

NO_PRACTICAL_LIMIT_W = 1e6  # makes a battery-less site with deferrable loads go to the MILP


class BoardConfigHandler:
    """One board's configuration: the version in force and the interval it took effect."""

    def __init__(self, records: Records, site: Site, *, step_s: int, timezone: str) -> None:
        self.records = records
        self.site = site
        self.step_s = step_s
        self.zone = ZoneInfo(timezone)
        kept = records.get("config", "current")
        self.config: TradingConfig | None = (
            None if kept is None else TradingConfig.model_validate(kept["config"])
        )
        self.version: int = 0 if kept is None else int(kept["version"])

    def problem_with(self, config: TradingConfig) -> str | None:
        """Why this board cannot apply `config` (None: it can)."""
        battery = self.site.battery
        wants_battery = (
            config.battery_reserve_fraction is not None or config.target_soc_fraction is not None
        )
        if wants_battery and battery is None:
            return "this board has no battery: leave the battery reserve and target SoC empty"
        if battery is not None:
            reserve = config.battery_reserve_fraction
            if reserve is not None and reserve > battery.soc_max_fraction:
                return (
                    f"battery reserve {reserve:.0%} is above the battery's maximum state of "
                    f"charge {battery.soc_max_fraction:.0%}"
                )
            target = config.target_soc_fraction
            low = max(reserve or 0.0, battery.soc_min_fraction)
            if target is not None and not low <= target <= battery.soc_max_fraction:
                return (
                    f"target state of charge {target:.0%} must lie between the reserve "
                    f"{low:.0%} and the maximum {battery.soc_max_fraction:.0%}"
                )
        for load in config.deferrable_loads:
            if load.window_start == load.window_end:
                return f"deferrable load {load.name!r}: its window starts and ends at the same time"
        names = [load.name for load in config.deferrable_loads]
        if len(set(names)) != len(names):
            return "deferrable loads need different names"
        return None

    def effective_from(self, now: datetime) -> datetime:
        """The first interval not planned yet: the next interval after the last one with
        orders, and never one that has started."""
        prepared = [int(k) for k in self.records.all("orders")]
        next_start = (math.floor(now.timestamp() / self.step_s) + 1) * self.step_s
        if prepared:
            next_start = max(next_start, max(prepared) + self.step_s)
        return datetime.fromtimestamp(next_start, UTC)

    async def receive(
        self, agent: ProsumerAgent, envelope: Envelope, update: ConfigUpdate
    ) -> ConfigAck:
        """Check, keep and apply an update; answer the sender."""
        ack = await self._decide(agent, update)
        await agent.reply(envelope, Performative.INFORM, ack)
        return ack

    async def _decide(self, agent: ProsumerAgent, update: ConfigUpdate) -> ConfigAck:
        def refuse(reason: str) -> ConfigAck:
            log.warning("%s refused configuration %d: %s", agent.name, update.version, reason)
            return ConfigAck(
                meter_id=update.meter_id, version=update.version, accepted=False, reason=reason
            )

        if update.meter_id != agent.meter_id:
            return refuse(f"this board serves meter {agent.meter_id}, not {update.meter_id}")
        if update.version < self.version:
            return refuse(
                f"version {update.version} is older than the one in force, {self.version}"
            )
        problem = self.problem_with(update.config)
        if problem is not None:
            return refuse(problem)
        effective = self.effective_from(agent.clock.now())
        if update.version == self.version and update.config == self.config:
            return ConfigAck(
                meter_id=update.meter_id,
                version=update.version,
                accepted=True,
                effective_from=effective,
            )
        relay = RelayState(update.config.relay)
        current_relay = "on" if self.config is None else self.config.relay  # a board starts on
        if current_relay != update.config.relay:
            try:
                await agent.meter.command(SetRelay(relay))
            except MeterError as exc:
                return refuse(f"the meter did not switch its relay {relay.value}: {exc}")
        self.config, self.version = update.config, update.version
        self.records.put(
            "config",
            "current",
            {
                "version": update.version,
                "config": update.config.model_dump(),
                "effective_from": effective.isoformat(),
                "requested_by": update.requested_by,
            },
        )
        log.info("%s applies configuration %d from %s", agent.name, update.version, effective)
        return ConfigAck(
            meter_id=update.meter_id,
            version=update.version,
            accepted=True,
            effective_from=effective,
        )


class ConfiguredPlanner(DerPlanner):
    """The DER planner, bounded by the board's trading configuration (if one was set)."""

    handler: BoardConfigHandler | None = None

    @property
    def config(self) -> TradingConfig | None:
        return None if self.handler is None else self.handler.config

    def problem(
        self,
        interval_start: datetime,
        tariffs: TariffNotice,
        soc_fraction: float | None,
        rooms_c: dict[str, float] | None = None,
    ) -> DerProblem:
        problem = super().problem(interval_start, tariffs, soc_fraction, rooms_c)
        config = self.config
        if config is None or self.handler is None:
            return problem
        return configure_problem(problem, config, interval_start, self.handler.zone)

    async def plan_async(
        self,
        interval_start: datetime,
        tariffs: TariffNotice,
        soc_fraction: float | None,
        now: datetime,
    ) -> HouseholdPlan:
        config = self.config
        if config is not None and config.strategy == "fixed":
            problem = super().problem(interval_start, tariffs, soc_fraction)
            return fixed_plan(problem, config, self.meter_id, interval_start, now)
        plan = await super().plan_async(interval_start, tariffs, soc_fraction, now)
        return plan if config is None else limit_prices(plan, config)

    def plan(
        self,
        interval_start: datetime,
        tariffs: TariffNotice,
        soc_fraction: float | None,
        now: datetime,
    ) -> HouseholdPlan:
        config = self.config
        if config is not None and config.strategy == "fixed":
            problem = super().problem(interval_start, tariffs, soc_fraction)
            return fixed_plan(problem, config, self.meter_id, interval_start, now)
        plan = super().plan(interval_start, tariffs, soc_fraction, now)
        return plan if config is None else limit_prices(plan, config)


def configure_problem(
    problem: DerProblem, config: TradingConfig, interval_start: datetime, zone: ZoneInfo
) -> DerProblem:
    """The planning problem with the reserve, target SoC and deferrable loads applied."""
    site = problem.site
    battery = site.battery
    target = problem.target_soc_fraction
    if battery is not None:
        if config.battery_reserve_fraction is not None:
            reserve = min(config.battery_reserve_fraction, battery.soc_max_fraction)
            battery = replace(battery, soc_min_fraction=max(reserve, 0.0))
        if config.target_soc_fraction is not None:
            target = config.target_soc_fraction
        if target is not None:
            target = min(max(target, battery.soc_min_fraction), battery.soc_max_fraction)
    # The web's loads come beside the board's own ([site.der], relay loads), never instead.
    configured = deferrable_loads(config, interval_start, problem.steps, problem.step_s, zone)
    loads = [*problem.deferrable_loads, *configured]
    import_limit = site.import_limit_w
    if loads and battery is None and import_limit is None and site.export_limit_w is None:
        import_limit = NO_PRACTICAL_LIMIT_W
    site = replace(site, battery=battery, import_limit_w=import_limit)
    return replace(problem, site=site, target_soc_fraction=target, deferrable_loads=loads)


def deferrable_loads(
    config: TradingConfig, interval_start: datetime, steps: int, step_s: int, zone: ZoneInfo
) -> list[DeferrableLoad]:
    """Each load's next window within the horizon, in steps from `interval_start`.

    Inside a window already under way only the part of the energy its remaining steps stand
    for is placed (the load is taken as spread over its window): a re-plan each interval must
    not ask for the whole energy again.
    """
    loads = []
    local = interval_start.astimezone(zone)
    for setting in config.deferrable_loads:
        for day in (-1, 0, 1):
            base = (local + timedelta(days=day)).replace(hour=0, minute=0, second=0, microsecond=0)
            start = _at(base, setting.window_start)
            end = _at(base, setting.window_end)
            if end <= start:
                end += timedelta(days=1)
            first = math.ceil((start - local).total_seconds() / step_s)
            last = math.floor((end - local).total_seconds() / step_s)
            if last <= 0:
                continue
            window_steps = max(1, round((end - start).total_seconds() / step_s))
            lo, hi = max(first, 0), min(last, steps)
            if hi <= lo:
                continue
            share = min(1.0, (last - lo) / window_steps)
            energy = setting.energy_wh * share
            capacity_wh = setting.max_power_w * (hi - lo) * step_s / 3600
            loads.append(
                DeferrableLoad(
                    name=setting.name,
                    energy_wh=min(energy, capacity_wh),
                    start_step=lo,
                    end_step=hi,
                    max_power_w=setting.max_power_w,
                )
            )
            break
    return loads


def _at(day: datetime, hhmm: str) -> datetime:
    hours, minutes = (int(part) for part in hhmm.split(":"))
    return day.replace(hour=hours, minute=minutes)


def limit_prices(plan: HouseholdPlan, config: TradingConfig) -> HouseholdPlan:
    """Orders whose limits respect the maximum buy and minimum sell prices."""
    orders = []
    for order in plan.orders:
        limit = order.limit_price
        if order.side is Side.BUY and config.max_buy_price is not None:
            limit = min(limit, config.max_buy_price)
        if order.side is Side.SELL and config.min_sell_price is not None:
            limit = max(limit, config.min_sell_price)
        orders.append(replace(order, limit_price=limit))
    return replace(plan, orders=orders)


def fixed_plan(
    problem: DerProblem,
    config: TradingConfig,
    meter_id: str,
    interval_start: datetime,
    now: datetime,
) -> HouseholdPlan:
    """Fixed limits: bid the forecast net load at the maximum buy price (default retail),
    offer the surplus at the minimum sell price (default feed-in); the battery stays idle."""
    net_wh = (problem.load_w[0] - problem.pv_w[0]) * problem.step_h
    buy = config.max_buy_price if config.max_buy_price is not None else problem.buy_price_per_kwh[0]
    sell = (
        config.min_sell_price
        if config.min_sell_price is not None
        else problem.sell_price_per_kwh[0]
    )
    prefix = f"{meter_id}-{int(interval_start.timestamp())}"
    orders = []
    if net_wh >= 0.5:
        orders.append(Order(f"{prefix}-0-buy", meter_id, Side.BUY, round(net_wh), buy, now))
    elif net_wh <= -0.5:
        orders.append(Order(f"{prefix}-0-sell", meter_id, Side.SELL, round(-net_wh), sell, now))
    return HouseholdPlan(
        orders=orders,
        battery_power_w=0.0 if problem.site.battery is not None else None,
        expected_import_wh=max(net_wh, 0.0),
        expected_export_wh=max(-net_wh, 0.0),
    )
