"""A board's `[site.der]` configuration turned into what the optimiser plans with.

The configuration speaks in kW, kWh and times of day; a horizon needs W, Wh and steps. Tariffs
become price series (tarifa branca, Group A), limit windows per-step limits, SoC targets at
times of day `SocTarget`s, and daily deferrable loads the loads of this horizon — with what
was already delivered today subtracted and their running state carried (`DailyLoads`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from meterchain.config import (
    BatteryConfig,
    DeferrableLoadConfig,
    DerConfig,
    DevicesConfig,
    SwitchedLoadConfig,
)
from meterchain.der.site import (
    NEVER_RAN_STEPS,
    Battery,
    DeferrableLoad,
    DemandCharge,
    LoadState,
    Site,
    SocTarget,
)
from meterchain.der.tariffs import GroupATariff, TarifaBranca


def _time(value: str) -> time | None:
    """HH:MM as a time; None for 24:00 (the end of the day)."""
    hours, minutes = (int(part) for part in value.split(":"))
    return None if hours == 24 else time(hours, minutes)


def _at(day: date, value: str, zone: ZoneInfo) -> datetime:
    moment = _time(value)
    if moment is None:
        return datetime.combine(day + timedelta(days=1), time(0), zone)
    return datetime.combine(day, moment, zone)


def site_from(config: DerConfig, name: str) -> Site:
    batteries = [
        Battery(
            capacity_wh=b.capacity_kwh * 1000,
            max_charge_power_w=b.charge_kw * 1000,
            max_discharge_power_w=b.discharge_kw * 1000,
            charge_efficiency=b.charge_efficiency,
            discharge_efficiency=b.discharge_efficiency,
            soc_min_fraction=b.soc_min,
            soc_max_fraction=b.soc_max,
            grid_charging=b.grid_charging,
            grid_discharging=b.grid_discharging,
            name=b.name,
            cell_price_per_kwh=b.cell_price_per_kwh,
            cycle_life=b.cycle_life,
            ramp_limit_w_per_h=None
            if b.ramp_limit_kw_per_h is None
            else b.ramp_limit_kw_per_h * 1000,
            taper_soc_fraction=b.taper_soc,
            taper_end_power_fraction=b.taper_end_power_fraction,
        )
        for b in config.batteries
    ]
    return Site(
        name=name,
        battery=batteries[0] if batteries else None,
        batteries=batteries[1:],
        pv_curtailable=config.pv_curtailable,
        import_limit_w=None if config.import_limit_kw is None else config.import_limit_kw * 1000,
        export_limit_w=None if config.export_limit_kw is None else config.export_limit_kw * 1000,
    )


def buy_prices(
    config: DerConfig, start: datetime, steps: int, step_s: int, timezone: str, flat: float
) -> tuple[float, ...]:
    """The buy price of each step: the configured tariff, else the grid's flat price."""
    if config.tarifa_branca is not None:
        t = config.tarifa_branca
        peak = _time(t.peak_start) or time(0)
        branca = TarifaBranca(
            off_peak_per_kwh=t.off_peak_per_kwh,
            intermediate_per_kwh=t.intermediate_per_kwh,
            peak_per_kwh=t.peak_per_kwh,
            peak_start=peak,
        )
        return branca.prices(start, steps, step_s, timezone)
    if config.group_a is not None:
        return group_a(config).prices(start, steps, step_s, timezone)
    return (flat,) * steps


def group_a(config: DerConfig) -> GroupATariff:
    a = config.group_a
    assert a is not None
    return GroupATariff(
        modality=a.modality,
        energy_peak_per_kwh=a.energy_peak_per_kwh,
        energy_off_peak_per_kwh=a.energy_off_peak_per_kwh,
        demand_per_kw=a.demand_per_kw,
        contracted_kw=a.contracted_kw,
        demand_peak_per_kw=a.demand_peak_per_kw,
        contracted_peak_kw=a.contracted_peak_kw,
        peak_start=_time(a.peak_start) or time(0),
        tolerance_fraction=a.tolerance_fraction,
        overrun_multiplier=a.overrun_multiplier,
    )


def demand_charges(
    config: DerConfig,
    start: datetime,
    steps: int,
    step_s: int,
    timezone: str,
    *,
    peak_so_far_kw: float = 0.0,
) -> list[DemandCharge]:
    if config.group_a is None:
        return []
    return group_a(config).demand_charges(
        start, steps, step_s, timezone, peak_so_far_kw=peak_so_far_kw
    )


def _minutes_local(moment: datetime, zone: ZoneInfo) -> float:
    local = moment.astimezone(zone)
    return local.hour * 60 + local.minute + local.second / 60


def _inside(minute: float, start: str, end: str) -> bool:
    """Whether a local minute of the day falls in [start, end), across midnight if need be."""
    first = _clock(start)
    last = _clock(end)
    return first <= minute < last if first <= last else (minute >= first or minute < last)


def _clock(value: str) -> int:
    hours, minutes = (int(part) for part in value.split(":"))
    return hours * 60 + minutes


def limits(
    config: DerConfig, start: datetime, steps: int, step_s: int, timezone: str
) -> tuple[list[float] | None, list[float] | None]:
    """Per-step import and export limits from the limit windows (None: no window applies)."""
    if not config.limit_windows:
        return None, None
    zone = ZoneInfo(timezone)
    imports, exports = [], []
    for k in range(steps):
        minute = _minutes_local(start + timedelta(seconds=(k + 0.5) * step_s), zone)
        import_w = export_w = math.inf
        for window in config.limit_windows:
            if _inside(minute, window.start, window.end):
                if window.import_limit_kw is not None:
                    import_w = min(import_w, window.import_limit_kw * 1000)
                if window.export_limit_kw is not None:
                    export_w = min(export_w, window.export_limit_kw * 1000)
        imports.append(import_w if math.isfinite(import_w) else 1e12)
        exports.append(export_w if math.isfinite(export_w) else 1e12)
    return imports, exports


def soc_targets(
    config: DerConfig, start: datetime, steps: int, step_s: int, timezone: str
) -> list[SocTarget]:
    """Each configured daily target at every time of day it falls on inside the horizon (at
    the end of the step that ends there)."""
    zone = ZoneInfo(timezone)
    out = []
    for target in config.soc_targets:
        day = start.astimezone(zone).date()
        for offset in range(0, steps * step_s // 86400 + 2):
            moment = _at(day + timedelta(days=offset), target.at, zone)
            step = round((moment - start).total_seconds() / step_s) - 1
            if 0 <= step < steps:
                out.append(SocTarget(step, target.soc, target.battery))
    return out


@dataclass
class _Window:
    config: DeferrableLoadConfig
    opens: datetime
    closes: datetime

    @property
    def key(self) -> tuple[str, str]:
        return self.config.name, self.opens.isoformat()


@dataclass
class DailyLoads:
    """The configured daily loads, with what each day's window has already received."""

    configs: list[DeferrableLoadConfig]
    timezone: str
    step_s: int
    delivered_wh: dict[tuple[str, str], float] = field(default_factory=dict)
    states: dict[str, LoadState] = field(default_factory=dict)

    def _windows(self, start: datetime, steps: int) -> list[_Window]:
        zone = ZoneInfo(self.timezone)
        end = start + timedelta(seconds=steps * self.step_s)
        out = []
        for config in self.configs:
            day = start.astimezone(zone).date() - timedelta(days=1)
            for offset in range(0, steps * self.step_s // 86400 + 3):
                opens = _at(day + timedelta(days=offset), config.earliest, zone)
                closes = _at(day + timedelta(days=offset), config.latest, zone)
                if closes <= opens:
                    closes += timedelta(days=1)
                if closes > start and closes <= end:
                    out.append(_Window(config, opens, closes))
                    break
        return out

    def horizon(self, start: datetime, steps: int) -> list[DeferrableLoad]:
        """The loads whose window closes inside the horizon, with the energy still needed."""
        step_h = self.step_s / 3600
        loads = []
        for window in self._windows(start, steps):
            c = window.config
            state = self.states.get(c.name, LoadState())
            done = self.delivered_wh.get(window.key, 0.0)
            first = max(0, math.ceil((window.opens - start).total_seconds() / self.step_s - 1e-9))
            last = int((window.closes - start).total_seconds() // self.step_s)
            program = [p * 1000 for p in c.program_kw]
            if program:
                step = state.program_step
                rest = program[step:] if step is not None else program
                if step is None and done > 0:
                    continue  # the program ran and finished in this window
                energy = sum(rest) * step_h
                if step is not None:
                    first = 0
            else:
                energy = max(0.0, c.energy_kwh * 1000 - done)
                if energy <= 1e-9 and not state.running:
                    continue
            if last <= first:
                continue
            least = None
            if c.min_energy_kwh is not None and not program:
                least = max(0.0, min(energy, c.min_energy_kwh * 1000 - done))
            if not program:  # a window almost over asks only what still fits in it
                fits = c.max_power_kw * 1000 * (last - (0 if state.running else first)) * step_h
                if energy > fits:
                    energy = fits
                    least = None if least is None else min(least, fits)
            loads.append(
                DeferrableLoad(
                    name=c.name,
                    energy_wh=energy,
                    start_step=0 if state.running else first,
                    end_step=last,
                    max_power_w=c.max_power_kw * 1000,
                    min_power_w=c.min_power_kw * 1000,
                    surplus_only=c.surplus_only,
                    single_block=c.single_block,
                    power_profile_w=program,
                    min_on_steps=c.min_on_steps,
                    min_off_steps=c.min_off_steps,
                    startup_cost=c.startup_cost,
                    max_starts=c.max_starts,
                    price_per_kwh=c.price_per_kwh,
                    min_energy_wh=least,
                    state=state,
                )
            )
        return loads

    def record(self, start: datetime, power_w: dict[str, float]) -> None:
        """What each load drew in the interval that began at `start`."""
        step_h = self.step_s / 3600
        windows = {w.config.name: w for w in self._windows(start, 2 * 86400 // self.step_s)}
        for config in self.configs:
            drew = power_w.get(config.name, 0.0)
            window = windows.get(config.name)
            if window is not None and window.opens <= start < window.closes:
                self.delivered_wh[window.key] = (
                    self.delivered_wh.get(window.key, 0.0) + drew * step_h
                )
            state = self.states.get(config.name, LoadState())
            ran = drew > 1e-3
            program_step = None
            if config.program_kw and (ran or state.program_step is not None):
                nxt = (state.program_step or 0) + 1
                program_step = nxt if nxt < len(config.program_kw) else None
            if ran:
                starts = state.starts_made + (0 if state.running else 1)
                self.states[config.name] = LoadState(
                    on_steps=state.on_steps + 1,
                    off_steps=0,
                    starts_made=starts,
                    program_step=program_step,
                )
            else:
                off = min(NEVER_RAN_STEPS, state.off_steps + 1) if not state.running else 1
                self.states[config.name] = LoadState(
                    on_steps=0,
                    off_steps=off,
                    starts_made=state.starts_made,
                    program_step=program_step,
                )


def with_devices(
    der: DerConfig | None, devices: DevicesConfig, step_s: int = 900
) -> DerConfig | None:
    """A board's `[site.der]` with what its `[devices]` section adds to the plan: the battery
    it drives (when `[site.der]` names none) and its relay-switched deferrable loads. A relay
    is off or on at the load's power for whole steps, so a load's daily energy is rounded up
    to whole steps (at least what it needs, at most that)."""
    loads = []
    for load in devices.loads:
        if load.power_w is None or load.energy_wh is None:
            continue
        step_wh = load.power_w * step_s / 3600
        steps = math.ceil(load.energy_wh / step_wh - 1e-9)
        loads.append(
            DeferrableLoadConfig.model_validate(
                {
                    "name": load.name,
                    "energy_kwh": steps * step_wh / 1000,
                    "min_energy_kwh": load.energy_wh / 1000,
                    "earliest": f"{load.start_hour:02d}:00",
                    "latest": f"{load.end_hour:02d}:00",
                    "max_power_kw": load.power_w / 1000,
                    "min_power_kw": load.power_w / 1000,
                }
            )
        )
    battery = None
    if devices.battery is not None and devices.battery_capacity_wh and devices.battery_max_w:
        battery = BatteryConfig.model_validate(
            {
                "capacity_kwh": devices.battery_capacity_wh / 1000,
                "charge_kw": devices.battery_max_w / 1000,
                "discharge_kw": devices.battery_max_w / 1000,
            }
        )
    if not loads and (battery is None or (der is not None and der.batteries)):
        return der
    zone = devices.loads[0].timezone if devices.loads else "America/Fortaleza"
    base = der or DerConfig.model_validate({"timezone": zone})
    batteries = base.batteries or ([battery] if battery is not None else [])
    return base.model_copy(
        update={"batteries": batteries, "deferrable_loads": [*base.deferrable_loads, *loads]}
    )


def with_thermal_relays(devices: DevicesConfig, der: DerConfig | None) -> DevicesConfig:
    """A board's `[devices]` with the relays of its `[[site.der.thermal]]` loads, so the board
    opens them and switches them by name as the plan of each interval says."""
    if der is None or not der.thermal:
        return devices
    relays = [SwitchedLoadConfig(name=t.name, url=t.url) for t in der.thermal]
    return devices.model_copy(update={"loads": [*devices.loads, *relays]})
