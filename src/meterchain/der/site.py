"""What the DER optimiser is told: the site's equipment and one horizon's forecasts and prices.

Units: energy in Wh, power in W (the average over a step), prices in currency units per kWh,
SoC as a fraction of the battery's capacity. Every value is checked when it is built, so a bad
site or forecast fails here, with a message that names the field, and never inside the solver.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

DEFAULT_STEP_S = 900
DEFAULT_STEPS = 96


class DerError(Exception):
    """Base of every error the DER package raises."""


class InvalidSite(DerError, ValueError):
    """A site, battery, deferrable load or forecast that cannot be right."""


def _finite(name: str, value: float) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise InvalidSite(f"{name} must be a finite number, got {value!r}")
    return number


def _at_least(name: str, value: float, minimum: float) -> float:
    number = _finite(name, value)
    if number < minimum:
        raise InvalidSite(f"{name} must be at least {minimum:g}, got {number:g}")
    return number


def _fraction(name: str, value: float) -> float:
    number = _finite(name, value)
    if not 0.0 <= number <= 1.0:
        raise InvalidSite(f"{name} must be a fraction between 0 and 1, got {number:g}")
    return number


def _series(name: str, values: Iterable[float], *, non_negative: bool) -> tuple[float, ...]:
    series = tuple(float(v) for v in values)
    for index, value in enumerate(series):
        if not math.isfinite(value):
            raise InvalidSite(f"{name}[{index}] must be a finite number, got {value!r}")
        if non_negative and value < 0:
            raise InvalidSite(f"{name}[{index}] must not be negative, got {value:g}")
    return series


@dataclass(frozen=True)
class Battery:
    """A stationary battery behind the meter.

    Efficiencies are one-way: storing `e` Wh from the AC side adds `e * charge_efficiency` Wh,
    and taking `e` Wh out of the cells delivers `e * discharge_efficiency` Wh on the AC side.
    `grid_charging` False lets it charge only from the PV surplus over the base load (the same
    surplus that surplus-only loads share); `grid_discharging` False keeps its energy
    for the site (it never makes the site export). `cycle_cost_per_kwh` prices the wear of each
    kWh discharged, so that a cycle is only made when it pays more than that.
    """

    capacity_wh: float
    max_charge_power_w: float
    max_discharge_power_w: float
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95
    soc_min_fraction: float = 0.1
    soc_max_fraction: float = 0.95
    grid_charging: bool = True
    grid_discharging: bool = True
    cycle_cost_per_kwh: float = 0.0

    def __post_init__(self) -> None:
        _at_least("battery cycle_cost_per_kwh", self.cycle_cost_per_kwh, 0.0)
        if _finite("battery capacity_wh", self.capacity_wh) <= 0:
            raise InvalidSite(f"battery capacity_wh must be positive, got {self.capacity_wh:g}")
        _at_least("battery max_charge_power_w", self.max_charge_power_w, 0.0)
        _at_least("battery max_discharge_power_w", self.max_discharge_power_w, 0.0)
        for name in ("charge_efficiency", "discharge_efficiency"):
            value = _finite(f"battery {name}", getattr(self, name))
            if not 0.0 < value <= 1.0:
                raise InvalidSite(f"battery {name} must be in (0, 1], got {value:g}")
        low = _fraction("battery soc_min_fraction", self.soc_min_fraction)
        high = _fraction("battery soc_max_fraction", self.soc_max_fraction)
        if low > high:
            raise InvalidSite(
                f"battery soc_min_fraction {low:g} is above soc_max_fraction {high:g}; swap them"
            )

    @property
    def soc_min_wh(self) -> float:
        return self.soc_min_fraction * self.capacity_wh

    @property
    def soc_max_wh(self) -> float:
        return self.soc_max_fraction * self.capacity_wh


@dataclass(frozen=True)
class DeferrableLoad:
    """A load that needs `energy_wh` somewhere in steps [start_step, end_step) of the horizon.

    `min_power_w` > 0 makes it semi-continuous: off, or between min and max power (a heat pump,
    an EV charger that cannot go below 6 A). `single_block` makes it run in one uninterrupted
    stretch (a washing machine), drawing at least min_power_w (or a token 1 W) in every step
    of it. `surplus_only` lets it draw only on PV surplus: the PV forecast
    above the base load, minus what is curtailed.
    """

    name: str
    energy_wh: float
    start_step: int
    end_step: int
    max_power_w: float
    min_power_w: float = 0.0
    surplus_only: bool = False
    single_block: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidSite("a deferrable load needs a non-empty name")
        label = f"deferrable load {self.name!r}"
        _at_least(f"{label} energy_wh", self.energy_wh, 0.0)
        if _finite(f"{label} max_power_w", self.max_power_w) <= 0:
            raise InvalidSite(f"{label} max_power_w must be positive, got {self.max_power_w:g}")
        low = _at_least(f"{label} min_power_w", self.min_power_w, 0.0)
        if low > self.max_power_w:
            raise InvalidSite(
                f"{label} min_power_w {low:g} is above its max_power_w {self.max_power_w:g}"
            )
        if self.start_step < 0 or self.end_step <= self.start_step:
            raise InvalidSite(
                f"{label} window [{self.start_step}, {self.end_step}) is empty or negative; "
                "end_step must be greater than start_step >= 0"
            )

    @property
    def window(self) -> range:
        return range(self.start_step, self.end_step)


@dataclass(frozen=True)
class Site:
    """The equipment behind one meter that does not change from one horizon to the next."""

    name: str
    battery: Battery | None = None
    pv_curtailable: bool = True
    import_limit_w: float | None = None
    export_limit_w: float | None = None

    def __post_init__(self) -> None:
        if self.import_limit_w is not None:
            _at_least(f"site {self.name!r} import_limit_w", self.import_limit_w, 0.0)
        if self.export_limit_w is not None:
            _at_least(f"site {self.name!r} export_limit_w", self.export_limit_w, 0.0)


@dataclass(frozen=True)
class DerProblem:
    """One horizon to plan: forecasts and prices per step, the battery's state, the loads to place.

    Series may be given as any sequence (lists, numpy arrays) and are stored as tuples.
    `initial_soc_fraction` is the measured SoC and may lie outside the battery's bounds (after a
    backup event, or a BMS that drifted); the optimiser brings it back. `target_soc_fraction`,
    when given, is the SoC wanted at the end of the horizon; `strict_target` makes missing it an
    error instead of a penalised shortfall (see docs/der.md).
    """

    site: Site
    pv_w: Sequence[float]
    load_w: Sequence[float]
    buy_price_per_kwh: Sequence[float]
    sell_price_per_kwh: Sequence[float]
    initial_soc_fraction: float = 0.5
    target_soc_fraction: float | None = None
    strict_target: bool = False
    deferrable_loads: Sequence[DeferrableLoad] = field(default_factory=tuple)
    step_s: int = DEFAULT_STEP_S

    def __post_init__(self) -> None:
        series = {
            "pv_w": _series("pv_w", self.pv_w, non_negative=True),
            "load_w": _series("load_w", self.load_w, non_negative=True),
            "buy_price_per_kwh": _series(
                "buy_price_per_kwh", self.buy_price_per_kwh, non_negative=False
            ),
            "sell_price_per_kwh": _series(
                "sell_price_per_kwh", self.sell_price_per_kwh, non_negative=False
            ),
        }
        lengths = {name: len(values) for name, values in series.items()}
        steps = lengths["pv_w"]
        if steps == 0:
            raise InvalidSite(
                "the horizon is empty: pv_w, load_w and the prices need one value a step"
            )
        if len(set(lengths.values())) != 1:
            described = ", ".join(f"{name} has {n}" for name, n in lengths.items())
            raise InvalidSite(f"every series needs one value per step, but {described}")
        for name, values in series.items():
            object.__setattr__(self, name, values)
        if self.step_s <= 0:
            raise InvalidSite(f"step_s must be a positive number of seconds, got {self.step_s}")
        _fraction("initial_soc_fraction", self.initial_soc_fraction)
        battery = self.site.battery
        if self.target_soc_fraction is not None:
            target = _fraction("target_soc_fraction", self.target_soc_fraction)
            if battery is None:
                raise InvalidSite("target_soc_fraction is set but the site has no battery")
            if not battery.soc_min_fraction <= target <= battery.soc_max_fraction:
                raise InvalidSite(
                    f"target_soc_fraction {target:g} is outside the battery's bounds "
                    f"[{battery.soc_min_fraction:g}, {battery.soc_max_fraction:g}]"
                )
        loads = tuple(self.deferrable_loads)
        object.__setattr__(self, "deferrable_loads", loads)
        names = [load.name for load in loads]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise InvalidSite(f"deferrable load names must be unique; repeated: {duplicates}")
        for load in loads:
            if load.end_step > steps:
                raise InvalidSite(
                    f"deferrable load {load.name!r} window [{load.start_step}, {load.end_step}) "
                    f"ends after the horizon of {steps} steps"
                )

    @property
    def steps(self) -> int:
        return len(self.pv_w)

    @property
    def step_h(self) -> float:
        return self.step_s / 3600.0

    @property
    def initial_soc_wh(self) -> float:
        battery = self.site.battery
        return 0.0 if battery is None else self.initial_soc_fraction * battery.capacity_wh
