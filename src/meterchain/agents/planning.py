"""What a household plans for the next interval: orders, a battery and an AC set-point.

The plan comes from the DER optimiser over a rolling horizon at the grid's tariffs, re-made
every interval from the measured state (a receding horizon); the orders' limit prices come from
the marginal value of energy to the household. An air conditioner under "plan" control is part
of the plan (a thermal load whose room temperature the board measures); under "thermostat"
control it holds the top of its comfort band, and the plan only forecasts what that draws.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from meterchain.agents.messages import TariffNotice
from meterchain.der.site import DerProblem, Site, ThermalLoad
from meterchain.model import Order, Side

if TYPE_CHECKING:  # the solver (highspy) loads only when a plan is made, not at start-up
    from meterchain.config import AirConditionerConfig, DerConfig
    from meterchain.der.mpc import RecedingHorizon
    from meterchain.der.schedule import DerSchedule
    from meterchain.der.weather import OutdoorForecaster

Forecast = Callable[[datetime, int], tuple[list[float], list[float]]]
"""(start, steps) -> (pv_w, load_w) per step."""


@dataclass(frozen=True)
class HouseholdPlan:
    orders: list[Order]
    battery_power_w: float | None
    expected_import_wh: float
    expected_export_wh: float
    thermal_power_w: dict[str, float] = field(default_factory=dict)
    deferrable_power_w: dict[str, float] = field(default_factory=dict)


class AirConditionerDevice(Protocol):
    """What a board reads from and tells its air conditioner (room and outdoor sensors)."""

    async def room_c(self) -> float: ...

    async def outdoor_c(self) -> float: ...

    async def set_power_w(self, power_w: float) -> None: ...

    async def hold_c(self, setpoint_c: float, step_s: int) -> None:
        """Run as its own thermostat at `setpoint_c` through the coming interval."""
        ...


@dataclass
class AirConditionerControl:
    """An air conditioner the planner runs (or forecasts, under thermostat control).

    Without a `device` (a board's `[[site.der.thermal]]` load behind a relay, no sensor) the
    planner tracks the room or tank with the 1R1C model from the powers it set (`tracked`), and
    `on_off` makes each planned power the relay's: off, or on at full power.
    """

    name: str
    config: AirConditionerConfig
    device: AirConditionerDevice | None
    timezone: str
    forecaster: OutdoorForecaster
    on_off: bool = False
    tracked: tuple[datetime, float, float] | None = None  # (moment, °C then, W since)

    def band_c(self, moment: datetime) -> tuple[float, float]:
        return self.config.comfort_band_c(moment, self.timezone)

    def load(self, start: datetime, steps: int, step_s: int, room_c: float) -> ThermalLoad:
        """The optimiser's view of the air conditioner over the horizon from `start`."""
        from meterchain.config import ThermalLoadConfig

        moments = [start + timedelta(seconds=(k + 1) * step_s) for k in range(steps)]
        bands = [self.band_c(m) for m in moments]
        c = self.config
        board = c if isinstance(c, ThermalLoadConfig) else None
        if board is not None and board.surroundings_c is not None:
            outdoor = [board.surroundings_c] * steps
        else:
            outdoor = list(self.forecaster.forecast(start, steps, step_s))
        if board is not None:  # the gain of each step, by the local hour of its middle
            middle = timedelta(seconds=step_s / 2)
            gains = [board.gain_w(m - middle, self.timezone) for m in moments]
        else:
            gains = [c.heat_gain_w] * steps
        return ThermalLoad(
            name=self.name,
            max_power_w=c.max_power_kw * 1000,
            capacitance_wh_per_k=c.capacitance_wh_per_k,
            resistance_k_per_w=c.resistance_k_per_w,
            initial_c=room_c,
            outdoor_c=outdoor,
            comfort_min_c=[low for low, _ in bands],
            comfort_max_c=[high for _, high in bands],
            heat_gain_w=gains,
            mode=board.mode if board is not None else "cool",
            cop_at_reference=c.cop_at_reference,
            reference_outdoor_c=c.reference_outdoor_c,
            cop_change_per_k=c.cop_change_per_k,
            cop_min=board.cop_min if board is not None else 1.0,
            cop_max=board.cop_max if board is not None else 8.0,
            discomfort_per_kelvin_hour=c.discomfort_per_kelvin_hour,
        )

    def modelled_c(self, moment: datetime, step_s: int) -> float:
        """Without a sensor: the temperature at `moment` by the model, from the last tracked
        one under the power set then (one interval), and off after it (no plan, no switching)."""
        if self.tracked is None:
            return self.config.initial_c
        at, temperature, power = self.tracked
        steps = round((moment - at).total_seconds() / step_s)
        if steps <= 0:
            return temperature
        from meterchain.der.thermal import temperatures_c

        load = self.load(at, steps, step_s, temperature)
        return temperatures_c(load, [power] + [0.0] * (steps - 1), step_s / 3600)[-1]

    def track(self, interval_start: datetime, power_w: float, step_s: int) -> None:
        """The interval that begins at `interval_start` runs at `power_w`."""
        self.tracked = (interval_start, self.modelled_c(interval_start, step_s), power_w)

    def switched_w(self, planned_w: float) -> float:
        """What the machine draws for a planned power: a relay is off, or on at full power."""
        if not self.on_off:
            return planned_w
        full = self.config.max_power_kw * 1000
        return full if planned_w >= full / 2 else 0.0

    def thermostat_w(self, load: ThermalLoad, step_h: float) -> list[float]:
        """What an ideal inverter thermostat holding the top of the band would draw per step."""
        from meterchain.der.thermal import next_temperature_c, power_to_reach_w

        room, out = load.initial_c, []
        for t, outdoor in enumerate(load.outdoor_c):
            target = min(room, load.comfort_max_c[t])
            gain = load.gains_w(len(load.outdoor_c))[t]
            power = power_to_reach_w(
                load, room, target, outdoor_c=outdoor, gain_w=gain, step_h=step_h
            )
            room = next_temperature_c(
                load, room, outdoor_c=outdoor, gain_w=gain, power_w=power, step_h=step_h
            )
            out.append(power)
        return out


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
        air_conditioners: list[AirConditionerControl] | None = None,
        equipment: DerConfig | None = None,
    ) -> None:
        self.site = site
        self.forecast = forecast
        self.meter_id = meter_id
        self.horizon_steps = horizon_steps
        self.step_s = step_s
        self.flexible_orders = flexible_orders
        self.target_soc_fraction = target_soc_fraction
        self.executor = executor
        self.air_conditioners = list(air_conditioners or [])
        # a board's [site.der]: batteries, daily loads, tariffs, limits, SoC targets
        self.equipment = equipment
        self.daily = None
        self.month_peak: tuple[tuple[int, int], float] = ((0, 0), 0.0)
        if equipment is not None:
            from meterchain.der.equipment import DailyLoads, site_from
            from meterchain.der.weather import OutdoorForecaster

            self.site = site_from(equipment, site.name)
            self.daily = DailyLoads(equipment.deferrable_loads, equipment.timezone, step_s)
            # [[site.der.thermal]]: relay-switched, no sensor, the room tracked by its model
            zone = equipment.timezone
            self.air_conditioners += [
                AirConditionerControl(
                    t.name, t, None, zone, OutdoorForecaster(timezone=zone), on_off=True
                )
                for t in equipment.thermal
            ]
        # In this process (a board), one kept model re-planned each interval; a process pool
        # (the simulation) plans cold, with the same result.
        self.horizon: RecedingHorizon | None = None

    def problem(
        self,
        interval_start: datetime,
        tariffs: TariffNotice,
        soc_fraction: float | None,
        rooms_c: dict[str, float] | None = None,
    ) -> DerProblem:
        """The optimisation problem for the horizon that starts with `interval_start`, with the
        rooms' measured temperatures (`rooms_c`, by air conditioner) when there are any."""
        pv_w, load_w = self.forecast(interval_start, self.horizon_steps)
        steps = len(pv_w)
        thermal = []
        for control in self.air_conditioners:
            room = (rooms_c or {}).get(control.name)
            if room is None:
                room = (
                    control.modelled_c(interval_start, self.step_s)
                    if control.device is None
                    else control.config.initial_c
                )
            load = control.load(interval_start, steps, self.step_s, room)
            if control.config.control == "plan":
                thermal.append(load)
            else:  # the thermostat runs it: the plan only expects its consumption
                drawn = control.thermostat_w(load, self.step_s / 3600)
                load_w = [w + p for w, p in zip(load_w, drawn, strict=True)]
        export_limit = tariffs.max_export_w
        site = self.site
        if export_limit is not None and site.export_limit_w != export_limit:
            site = replace(site, export_limit_w=export_limit)
        if self.equipment is not None:
            return self._equipment_problem(
                interval_start, tariffs, soc_fraction, site, pv_w, load_w, thermal
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
            step_s=self.step_s,
            thermal_loads=thermal,
        )

    def _equipment_problem(
        self,
        interval_start: datetime,
        tariffs: TariffNotice,
        soc_fraction: float | None,
        site: Site,
        pv_w: list[float],
        load_w: list[float],
        thermal: list[ThermalLoad],
    ) -> DerProblem:
        """The problem of a board configured with [site.der] (see meterchain.der.equipment)."""
        from meterchain.der import equipment as eq

        config, steps, step_s = self.equipment, len(pv_w), self.step_s
        assert config is not None and self.daily is not None
        zone = config.timezone
        imports, exports = eq.limits(config, interval_start, steps, step_s, zone)
        month, peak = self.month_peak
        now = (interval_start.year, interval_start.month)
        return DerProblem(
            site=site,
            pv_w=pv_w,
            load_w=load_w,
            buy_price_per_kwh=eq.buy_prices(
                config, interval_start, steps, step_s, zone, tariffs.retail_price
            ),
            sell_price_per_kwh=[tariffs.feed_in_price] * steps,
            initial_soc_fraction=soc_fraction if soc_fraction is not None else 0.5,
            target_soc_fraction=config.end_soc if site.all_batteries else None,
            deferrable_loads=self.daily.horizon(interval_start, steps),
            step_s=step_s,
            thermal_loads=thermal,
            soc_targets=eq.soc_targets(config, interval_start, steps, step_s, zone)
            if site.all_batteries
            else (),
            demand_charges=eq.demand_charges(
                config,
                interval_start,
                steps,
                step_s,
                zone,
                peak_so_far_kw=peak if month == now else 0.0,
            ),
            import_limit_w=imports,
            export_limit_w=exports,
        )

    def record(self, interval_start: datetime, plan: HouseholdPlan) -> None:
        """What the plan set in motion for this interval: daily loads' energy, month's peak,
        the temperature of thermal loads without a sensor."""
        if self.daily is not None:
            self.daily.record(interval_start, plan.deferrable_power_w)
        for control in self.air_conditioners:
            if control.device is None:
                power = plan.thermal_power_w.get(control.name, 0.0)
                control.track(interval_start, power, self.step_s)
        month, peak = self.month_peak
        now = (interval_start.year, interval_start.month)
        drawn_kw = plan.expected_import_wh / (self.step_s / 3600) / 1000
        self.month_peak = (now, max(drawn_kw, peak if month == now else 0.0))

    def plan(
        self,
        interval_start: datetime,
        tariffs: TariffNotice,
        soc_fraction: float | None,
        now: datetime,
    ) -> HouseholdPlan:
        """Plan in this thread (with the kept model of a receding horizon)."""
        from meterchain.der.mpc import RecedingHorizon

        problem = self.problem(interval_start, tariffs, soc_fraction)
        if self.horizon is None:
            self.horizon = RecedingHorizon(time_limit_s=5.0, mip_rel_gap=1e-4)
        plan = self._switched(solve_plan(problem, self._request(interval_start, now), self.horizon))
        self.record(interval_start, plan)
        return plan

    def _switched(self, plan: HouseholdPlan) -> HouseholdPlan:
        """The plan with each relay-switched thermal load's power as its relay will draw it."""
        switched = {c.name: c for c in self.air_conditioners if c.on_off}
        if not switched:
            return plan
        powers = {
            name: switched[name].switched_w(power) if name in switched else power
            for name, power in plan.thermal_power_w.items()
        }
        return replace(plan, thermal_power_w=powers)

    async def plan_async(
        self,
        interval_start: datetime,
        tariffs: TariffNotice,
        soc_fraction: float | None,
        now: datetime,
    ) -> HouseholdPlan:
        """Plan without blocking the event loop: in `executor` (a process pool spreads the
        MILPs of many households over the cores, each planned cold), else in a thread with the
        kept model of a receding horizon. The air conditioners' sensors are read first and
        their set-points applied after."""
        rooms = await self._read_rooms(now)
        problem = self.problem(interval_start, tariffs, soc_fraction, rooms)
        request = self._request(interval_start, now)
        if not _needs_solver(problem):
            plan = solve_plan(problem, request)
        else:
            loop = asyncio.get_running_loop()
            if self.executor is None:
                from meterchain.der.mpc import RecedingHorizon

                if self.horizon is None:
                    self.horizon = RecedingHorizon(time_limit_s=5.0, mip_rel_gap=1e-4)
                plan = await loop.run_in_executor(None, solve_plan, problem, request, self.horizon)
            else:
                plan = await loop.run_in_executor(self.executor, solve_plan, problem, request)
        plan = self._switched(plan)
        await self._apply_rooms(plan, interval_start)
        self.record(interval_start, plan)
        return plan

    async def _read_rooms(self, now: datetime) -> dict[str, float]:
        rooms = {}
        for control in self.air_conditioners:
            if control.device is None:  # no sensor: problem() takes the modelled temperature
                continue
            rooms[control.name] = await control.device.room_c()
            control.forecaster.observe(now, await control.device.outdoor_c())
        return rooms

    async def _apply_rooms(self, plan: HouseholdPlan, interval_start: datetime) -> None:
        for control in self.air_conditioners:
            if control.device is None:  # its relay is switched with the interval's loads
                continue
            if control.config.control == "plan":
                await control.device.set_power_w(plan.thermal_power_w.get(control.name, 0.0))
            else:  # its own thermostat holds the top of the band through the interval
                _, top = control.band_c(interval_start + timedelta(seconds=self.step_s))
                await control.device.hold_c(top, self.step_s)

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
        and not problem.thermal_loads
        and not problem.deferrable_loads
    )


def solve_plan(
    problem: DerProblem, request: PlanRequest, horizon: RecedingHorizon | None = None
) -> HouseholdPlan:
    """The plan for a problem: a module-level function so a process pool can run it (cold);
    with `horizon`, its kept model is re-planned warm (same plan, less time)."""
    if not _needs_solver(problem):
        return _inflexible_plan(problem, request)
    from meterchain.der.optimiser import optimise
    from meterchain.der.orders import orders_for_next_interval

    if horizon is not None:
        schedule = horizon.plan(problem)
        model = horizon.model
    else:
        schedule = optimise(problem, time_limit_s=5.0, mip_rel_gap=1e-4)
        model = None
    side = _trading_side(problem, schedule)
    orders = orders_for_next_interval(
        problem,
        schedule,
        meter_id=request.meter_id,
        submitted_at=request.now,
        order_id_prefix=f"{request.meter_id}-{request.interval}",
        flexible=request.flexible_orders,
        only_side=side,
        model=model,
    )
    orders = [order for order in orders if order.side is side]
    nxt = schedule.next_interval()
    return HouseholdPlan(
        orders=orders,
        battery_power_w=nxt.battery_power_w if problem.site.battery is not None else None,
        expected_import_wh=nxt.import_wh,
        expected_export_wh=nxt.export_wh,
        thermal_power_w=dict(nxt.thermal_power_w),
        deferrable_power_w=dict(nxt.deferrable_power_w),
    )


def _trading_side(problem: DerProblem, schedule: DerSchedule) -> Side:
    """The one side a site trades on in an interval (a market refuses a meter on both).

    The side of the planned exchange; with none, a battery buys while the sun covers the load
    (to store a neighbour's surplus) and sells otherwise.
    """
    from meterchain.der.orders import planned_exchange

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
