"""What the DER optimiser is told: the site's equipment and one horizon's forecasts and prices.

Units: energy in Wh, power in W (the average over a step), prices in currency units per kWh,
SoC as a fraction of the battery's capacity, temperatures in °C. Every value is checked when it
is built, so a bad site or forecast fails here, with a message that names the field, and never
inside the solver.

What was measured at the start of the horizon (the battery's SoC and power, whether a load is
running and for how long, the room's temperature) is part of the problem too: a receding-horizon
controller re-plans every interval from it (see mpc.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

DEFAULT_STEP_S = 900
DEFAULT_STEPS = 96
NEVER_RAN_STEPS = 1_000_000  # how long a load that never ran has been off


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


def _positive(name: str, value: float) -> float:
    number = _finite(name, value)
    if number <= 0:
        raise InvalidSite(f"{name} must be positive, got {number:g}")
    return number


def _fraction(name: str, value: float) -> float:
    number = _finite(name, value)
    if not 0.0 <= number <= 1.0:
        raise InvalidSite(f"{name} must be a fraction between 0 and 1, got {number:g}")
    return number


def _whole(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSite(f"{name} must be a whole number, got {value!r}")
    if value < minimum:
        raise InvalidSite(f"{name} must be at least {minimum}, got {value}")
    return value


def _series(name: str, values: Iterable[float], *, non_negative: bool) -> tuple[float, ...]:
    series = tuple(float(v) for v in values)
    for index, value in enumerate(series):
        if not math.isfinite(value):
            raise InvalidSite(f"{name}[{index}] must be a finite number, got {value!r}")
        if non_negative and value < 0:
            raise InvalidSite(f"{name}[{index}] must not be negative, got {value:g}")
    return series


def _sized(name: str, values: Sequence[float], steps: int, *, non_negative: bool) -> None:
    if len(values) != steps:
        raise InvalidSite(f"{name} needs one value per step ({steps}), got {len(values)}")
    _series(name, values, non_negative=non_negative)


@dataclass(frozen=True)
class Battery:
    """A stationary battery behind the meter.

    Efficiencies are one-way: storing `e` Wh from the AC side adds `e * charge_efficiency` Wh,
    and taking `e` Wh out of the cells delivers `e * discharge_efficiency` Wh on the AC side.
    `grid_charging` False lets it charge only from the PV surplus over the base load (the same
    surplus that surplus-only loads share); `grid_discharging` False keeps its energy for the
    site: the site never exports more than its PV surplus in a step.

    Wear: `cell_price_per_kwh` (what new cells cost per kWh of capacity) spread over
    `cycle_life` full cycles of the usable window prices every kWh that goes into or out of the
    cells (`wear_cost_per_kwh`), so the battery only cycles when a cycle pays for the cells it
    uses up. `cycle_cost_per_kwh` is an older, cruder price on each kWh discharged.

    `ramp_limit_w_per_h` bounds how fast the net power (charge minus discharge) may change from
    one step to the next; `taper_soc_fraction` starts the constant-voltage phase of a CC-CV
    charge: above it the charge power falls linearly to `taper_end_power_fraction` of its
    maximum at a full battery.
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
    name: str = "battery"
    cell_price_per_kwh: float = 0.0
    cycle_life: float = 6000.0
    ramp_limit_w_per_h: float | None = None
    taper_soc_fraction: float | None = None
    taper_end_power_fraction: float = 0.1

    def __post_init__(self) -> None:
        label = f"battery {self.name!r}" if self.name != "battery" else "battery"
        if not self.name:
            raise InvalidSite("a battery needs a non-empty name")
        _at_least(f"{label} cycle_cost_per_kwh", self.cycle_cost_per_kwh, 0.0)
        _positive(f"{label} capacity_wh", self.capacity_wh)
        _at_least(f"{label} max_charge_power_w", self.max_charge_power_w, 0.0)
        _at_least(f"{label} max_discharge_power_w", self.max_discharge_power_w, 0.0)
        for name in ("charge_efficiency", "discharge_efficiency"):
            value = _finite(f"{label} {name}", getattr(self, name))
            if not 0.0 < value <= 1.0:
                raise InvalidSite(f"{label} {name} must be in (0, 1], got {value:g}")
        low = _fraction(f"{label} soc_min_fraction", self.soc_min_fraction)
        high = _fraction(f"{label} soc_max_fraction", self.soc_max_fraction)
        if low > high:
            raise InvalidSite(
                f"{label} soc_min_fraction {low:g} is above soc_max_fraction {high:g}; swap them"
            )
        _at_least(f"{label} cell_price_per_kwh", self.cell_price_per_kwh, 0.0)
        _positive(f"{label} cycle_life", self.cycle_life)
        if self.ramp_limit_w_per_h is not None:
            _positive(f"{label} ramp_limit_w_per_h", self.ramp_limit_w_per_h)
        if self.taper_soc_fraction is not None:
            taper = _fraction(f"{label} taper_soc_fraction", self.taper_soc_fraction)
            if taper >= 1.0:
                raise InvalidSite(
                    f"{label} taper_soc_fraction must be below 1 (a full battery), got {taper:g}"
                )
        _fraction(f"{label} taper_end_power_fraction", self.taper_end_power_fraction)

    @property
    def soc_min_wh(self) -> float:
        return self.soc_min_fraction * self.capacity_wh

    @property
    def soc_max_wh(self) -> float:
        return self.soc_max_fraction * self.capacity_wh

    @property
    def wear_cost_per_kwh(self) -> float:
        """Cell wear per kWh into or out of the cells: the cells' price over their lifetime
        throughput, which is twice (in and out) the usable window per cycle."""
        window = self.soc_max_fraction - self.soc_min_fraction
        if self.cell_price_per_kwh == 0 or window <= 0:
            return 0.0
        return self.cell_price_per_kwh / (2.0 * self.cycle_life * window)

    def max_charge_w_at(self, soc_wh: float) -> float:
        """The charge power the CC-CV taper allows at a given SoC (AC side)."""
        if self.taper_soc_fraction is None:
            return self.max_charge_power_w
        start_wh = self.taper_soc_fraction * self.capacity_wh
        if soc_wh <= start_wh:
            return self.max_charge_power_w
        slope = self.taper_slope_w_per_wh
        return max(0.0, self.max_charge_power_w - slope * (soc_wh - start_wh))

    @property
    def taper_slope_w_per_wh(self) -> float:
        """How many W of charge power the taper takes off per Wh above its start."""
        if self.taper_soc_fraction is None:
            return 0.0
        span_wh = (1.0 - self.taper_soc_fraction) * self.capacity_wh
        drop_w = (1.0 - self.taper_end_power_fraction) * self.max_charge_power_w
        return drop_w / span_wh


@dataclass(frozen=True)
class LoadState:
    """What a deferrable load was doing just before the horizon (a board measures it).

    `on_steps`: steps it has been running without a break up to now (0: it is off);
    `off_steps`: steps it has been off (0: it is running); `starts_made`: starts already counted
    against `max_starts`; `program_step`: for a load with a power profile, the step of its
    program that runs next (None: the program has not started).
    """

    on_steps: int = 0
    off_steps: int = NEVER_RAN_STEPS
    starts_made: int = 0
    program_step: int | None = None

    def __post_init__(self) -> None:
        _whole("load state on_steps", self.on_steps, 0)
        _whole("load state off_steps", self.off_steps, 0)
        _whole("load state starts_made", self.starts_made, 0)
        if self.program_step is not None:
            _whole("load state program_step", self.program_step, 0)
        if (self.on_steps > 0) == (self.off_steps > 0):
            raise InvalidSite(
                "a load is either running (on_steps > 0, off_steps 0) or off (off_steps > 0, "
                f"on_steps 0); got on_steps {self.on_steps}, off_steps {self.off_steps}"
            )

    @property
    def running(self) -> bool:
        return self.on_steps > 0


@dataclass(frozen=True)
class DeferrableLoad:
    """A load that needs `energy_wh` somewhere in steps [start_step, end_step) of the horizon.

    `min_power_w` > 0 makes it semi-continuous: off, or between min and max power (a heat pump,
    an EV charger that cannot go below 6 A). `single_block` makes it run in one uninterrupted
    stretch (a washing machine), drawing at least min_power_w (or a token 1 W) in every step
    of it. `surplus_only` lets it draw only on PV surplus: the PV forecast above the base load,
    minus what is curtailed.

    `power_profile_w` is a program with a shape (a washing machine heats, washes, spins): the
    power of each step from its start; the optimiser chooses only when it starts, and
    `energy_wh` must be the program's energy. `min_on_steps`/`min_off_steps` keep it on (off)
    at least that many steps once switched on (off); `startup_cost` is charged per start and
    `max_starts` caps the starts in the horizon (counting `state.starts_made`).
    `price_per_kwh` is a price on this load's own energy on top of the grid's (per step or one
    value): a fee, or, negative, what a kWh delivered to it earns (an EV charger billing its
    user). With `min_energy_wh` below `energy_wh` the load takes anything in between, and the
    plan decides how much.
    """

    name: str
    energy_wh: float
    start_step: int
    end_step: int
    max_power_w: float
    min_power_w: float = 0.0
    surplus_only: bool = False
    single_block: bool = False
    power_profile_w: Sequence[float] = ()
    min_on_steps: int = 1
    min_off_steps: int = 1
    startup_cost: float = 0.0
    max_starts: int | None = None
    price_per_kwh: float | Sequence[float] = 0.0
    min_energy_wh: float | None = None
    state: LoadState = field(default_factory=LoadState)

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidSite("a deferrable load needs a non-empty name")
        label = f"deferrable load {self.name!r}"
        _at_least(f"{label} energy_wh", self.energy_wh, 0.0)
        _positive(f"{label} max_power_w", self.max_power_w)
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
        profile = _series(f"{label} power_profile_w", self.power_profile_w, non_negative=True)
        object.__setattr__(self, "power_profile_w", profile)
        if profile:
            if max(profile) > self.max_power_w + 1e-9:
                raise InvalidSite(
                    f"{label} power_profile_w peaks at {max(profile):g} W, above its "
                    f"max_power_w {self.max_power_w:g}"
                )
            if profile[0] <= 0:
                raise InvalidSite(f"{label} power_profile_w must draw power in its first step")
            if self.state.program_step is not None and self.state.program_step >= len(profile):
                raise InvalidSite(
                    f"{label} state.program_step {self.state.program_step} is past the end of "
                    f"its {len(profile)}-step program"
                )
        elif self.state.program_step is not None:
            raise InvalidSite(f"{label} has a state.program_step but no power_profile_w")
        _whole(f"{label} min_on_steps", self.min_on_steps, 1)
        _whole(f"{label} min_off_steps", self.min_off_steps, 1)
        _at_least(f"{label} startup_cost", self.startup_cost, 0.0)
        if self.max_starts is not None:
            _whole(f"{label} max_starts", self.max_starts, 0)
        if isinstance(self.price_per_kwh, int | float):
            _finite(f"{label} price_per_kwh", self.price_per_kwh)
        else:
            prices = _series(f"{label} price_per_kwh", self.price_per_kwh, non_negative=False)
            object.__setattr__(self, "price_per_kwh", prices)
        if self.min_energy_wh is not None:
            least = _at_least(f"{label} min_energy_wh", self.min_energy_wh, 0.0)
            if least > self.energy_wh:
                raise InvalidSite(
                    f"{label} min_energy_wh {least:g} is above its energy_wh {self.energy_wh:g}"
                )
            if profile:
                raise InvalidSite(f"{label}: a program (power_profile_w) has a fixed energy")

    @property
    def window(self) -> range:
        return range(self.start_step, self.end_step)

    @property
    def least_energy_wh(self) -> float:
        return self.energy_wh if self.min_energy_wh is None else self.min_energy_wh

    @property
    def has_program(self) -> bool:
        return bool(self.power_profile_w)

    def price_at(self, step: int) -> float:
        if isinstance(self.price_per_kwh, int | float):
            return float(self.price_per_kwh)
        return self.price_per_kwh[step]


@dataclass(frozen=True)
class ThermalLoad:
    """An air conditioner, heat pump or electric water heater and the thermal mass it serves.

    The zone is one thermal capacitance (`capacitance_wh_per_k`) behind one thermal resistance
    to the outside (`resistance_k_per_w`): a 1R1C model, whose time constant is R·C hours. The
    machine draws up to `max_power_w` of electricity and moves `cop` times as much heat
    (`mode` "cool" takes heat out, "heat" puts it in). The COP depends on the outdoor
    temperature: `cop_at_reference` at `reference_outdoor_c`, changing by `cop_change_per_k`
    per kelvin above it, kept within [`cop_min`, `cop_max`] (an air conditioner loses about
    2-3 % of its COP per kelvin of outdoor heat; a resistive water heater has COP 1 and no
    change).

    Per step of the horizon: `outdoor_c` (or the tank's surroundings), the comfort band
    [`comfort_min_c`, `comfort_max_c`] and `heat_gain_w` (people, appliances and sun warming a
    room; hot water drawn from a tank is a negative gain). The band is soft: every kelvin·hour
    outside it costs `discomfort_per_kelvin_hour`, so a plan always exists and the machine
    never runs against a band it cannot hold.
    """

    name: str
    max_power_w: float
    capacitance_wh_per_k: float
    resistance_k_per_w: float
    initial_c: float
    outdoor_c: Sequence[float]
    comfort_min_c: Sequence[float]
    comfort_max_c: Sequence[float]
    heat_gain_w: Sequence[float] = ()
    mode: Literal["cool", "heat"] = "cool"
    cop_at_reference: float = 3.2
    reference_outdoor_c: float = 35.0
    cop_change_per_k: float = -0.08
    cop_min: float = 1.0
    cop_max: float = 8.0
    discomfort_per_kelvin_hour: float = 2.0

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidSite("a thermal load needs a non-empty name")
        label = f"thermal load {self.name!r}"
        _positive(f"{label} max_power_w", self.max_power_w)
        _positive(f"{label} capacitance_wh_per_k", self.capacitance_wh_per_k)
        _positive(f"{label} resistance_k_per_w", self.resistance_k_per_w)
        _finite(f"{label} initial_c", self.initial_c)
        if self.mode not in ("cool", "heat"):
            raise InvalidSite(f"{label} mode must be 'cool' or 'heat', got {self.mode!r}")
        _positive(f"{label} cop_at_reference", self.cop_at_reference)
        _finite(f"{label} reference_outdoor_c", self.reference_outdoor_c)
        _finite(f"{label} cop_change_per_k", self.cop_change_per_k)
        low = _positive(f"{label} cop_min", self.cop_min)
        if _finite(f"{label} cop_max", self.cop_max) < low:
            raise InvalidSite(f"{label} cop_max {self.cop_max:g} is below cop_min {low:g}")
        _at_least(f"{label} discomfort_per_kelvin_hour", self.discomfort_per_kelvin_hour, 0.0)
        for name in ("outdoor_c", "comfort_min_c", "comfort_max_c", "heat_gain_w"):
            values = _series(f"{label} {name}", getattr(self, name), non_negative=False)
            object.__setattr__(self, name, values)
        for t, (low_c, high_c) in enumerate(
            zip(self.comfort_min_c, self.comfort_max_c, strict=False)
        ):
            if low_c > high_c:
                raise InvalidSite(
                    f"{label} comfort_min_c[{t}] {low_c:g} is above comfort_max_c[{t}] {high_c:g}"
                )

    def check_steps(self, steps: int) -> None:
        label = f"thermal load {self.name!r}"
        for name in ("outdoor_c", "comfort_min_c", "comfort_max_c"):
            _sized(f"{label} {name}", getattr(self, name), steps, non_negative=False)
        if self.heat_gain_w:
            _sized(f"{label} heat_gain_w", self.heat_gain_w, steps, non_negative=False)

    def gains_w(self, steps: int) -> tuple[float, ...]:
        return tuple(self.heat_gain_w) if self.heat_gain_w else (0.0,) * steps


@dataclass(frozen=True)
class SocTarget:
    """A state of charge wanted at the end of `step` (e.g. full before the evening peak).

    Soft like the end-of-horizon target: met whenever it can be, else penalised and reported.
    `battery` names one battery; None means every battery of the site.
    """

    step: int
    soc_fraction: float
    battery: str | None = None

    def __post_init__(self) -> None:
        _whole("soc target step", self.step, 0)
        _fraction("soc target soc_fraction", self.soc_fraction)


@dataclass(frozen=True)
class DemandCharge:
    """A Group A demand charge (ANEEL REN 1000/2021; docs/der.md cites the rules).

    The month's billed demand is the larger of the highest 15-minute average import and the
    contracted demand, times `price_per_kw`; when the measured demand exceeds the contracted
    one by more than `tolerance_fraction` (5 %), the whole excess over the contract is charged
    again at `overrun_multiplier` (2) times the price. `steps` marks the steps of the horizon
    that count (a post: ponta or fora de ponta in the blue tariff; None: every step), and
    `peak_so_far_kw` is the highest demand already registered this billing month.
    """

    name: str
    price_per_kw: float
    contracted_kw: float
    steps: Sequence[bool] | None = None
    tolerance_fraction: float = 0.05
    overrun_multiplier: float = 2.0
    peak_so_far_kw: float = 0.0

    def __post_init__(self) -> None:
        label = f"demand charge {self.name!r}"
        _at_least(f"{label} price_per_kw", self.price_per_kw, 0.0)
        _at_least(f"{label} contracted_kw", self.contracted_kw, 0.0)
        _fraction(f"{label} tolerance_fraction", self.tolerance_fraction)
        _at_least(f"{label} overrun_multiplier", self.overrun_multiplier, 0.0)
        _at_least(f"{label} peak_so_far_kw", self.peak_so_far_kw, 0.0)
        if self.steps is not None:
            object.__setattr__(self, "steps", tuple(bool(s) for s in self.steps))

    def counts(self, step: int) -> bool:
        return self.steps is None or self.steps[step]

    def billed_cost(self, peak_kw: float) -> float:
        """What the month's demand costs with this peak: the charge and any overrun."""
        billed = max(peak_kw, self.contracted_kw) * self.price_per_kw
        if peak_kw > (1 + self.tolerance_fraction) * self.contracted_kw + 1e-9:
            excess = peak_kw - self.contracted_kw
            billed += self.overrun_multiplier * self.price_per_kw * excess
        return billed


@dataclass(frozen=True)
class Site:
    """The equipment behind one meter that does not change from one horizon to the next.

    `battery` is the site's battery, `batteries` any more (each with its own name); the
    optimiser plans all of them (`all_batteries`).
    """

    name: str
    battery: Battery | None = None
    pv_curtailable: bool = True
    import_limit_w: float | None = None
    export_limit_w: float | None = None
    batteries: Sequence[Battery] = ()

    def __post_init__(self) -> None:
        if self.import_limit_w is not None:
            _at_least(f"site {self.name!r} import_limit_w", self.import_limit_w, 0.0)
        if self.export_limit_w is not None:
            _at_least(f"site {self.name!r} export_limit_w", self.export_limit_w, 0.0)
        object.__setattr__(self, "batteries", tuple(self.batteries))
        names = [b.name for b in self.all_batteries]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise InvalidSite(
                f"site {self.name!r} has batteries with the same name {repeated}; name each one"
            )

    @property
    def all_batteries(self) -> tuple[Battery, ...]:
        first = (self.battery,) if self.battery is not None else ()
        return first + tuple(self.batteries)


@dataclass(frozen=True)
class DerProblem:
    """One horizon to plan: forecasts and prices per step, the measured state, what to place.

    Series may be given as any sequence (lists, numpy arrays) and are stored as tuples.
    `initial_soc_fraction` is the measured SoC (of every battery, unless `initial_soc_fractions`
    gives one per battery) and may lie outside the battery's bounds (after a backup event, or a
    BMS that drifted); the optimiser brings it back. `initial_battery_power_w` (one per battery,
    + charging) is where a ramp limit starts from. `target_soc_fraction`, when given, is the SoC
    wanted at the end of the horizon and `soc_targets` are more along the way; `strict_target`
    makes missing the end target an error instead of a penalised shortfall (see docs/der.md).
    `import_limit_w`/`export_limit_w` are per-step limits (a feeder's schedule) on top of the
    site's own.
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
    thermal_loads: Sequence[ThermalLoad] = field(default_factory=tuple)
    initial_soc_fractions: Sequence[float] | None = None
    initial_battery_power_w: Sequence[float] | None = None
    soc_targets: Sequence[SocTarget] = field(default_factory=tuple)
    demand_charges: Sequence[DemandCharge] = field(default_factory=tuple)
    import_limit_w: Sequence[float] | None = None
    export_limit_w: Sequence[float] | None = None

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
        batteries = self.site.all_batteries
        self._check_battery_state(batteries)
        self._check_targets(batteries, steps)
        for name in ("import_limit_w", "export_limit_w"):
            limits = getattr(self, name)
            if limits is not None:
                _sized(name, limits, steps, non_negative=True)
                object.__setattr__(self, name, tuple(float(v) for v in limits))
        self._check_loads(steps)
        charges = tuple(self.demand_charges)
        object.__setattr__(self, "demand_charges", charges)
        for charge in charges:
            if charge.steps is not None and len(charge.steps) != steps:
                raise InvalidSite(
                    f"demand charge {charge.name!r} steps needs one flag per step ({steps}), "
                    f"got {len(charge.steps)}"
                )

    def _check_battery_state(self, batteries: tuple[Battery, ...]) -> None:
        for name in ("initial_soc_fractions", "initial_battery_power_w"):
            values = getattr(self, name)
            if values is None:
                continue
            values = tuple(float(v) for v in values)
            if len(values) != len(batteries):
                raise InvalidSite(
                    f"{name} needs one value per battery ({len(batteries)}), got {len(values)}"
                )
            object.__setattr__(self, name, values)
            for battery, value in zip(batteries, values, strict=True):
                if name == "initial_soc_fractions":
                    _fraction(f"{name} of battery {battery.name!r}", value)
                else:
                    _finite(f"{name} of battery {battery.name!r}", value)

    def _check_targets(self, batteries: tuple[Battery, ...], steps: int) -> None:
        targets = tuple(self.soc_targets)
        object.__setattr__(self, "soc_targets", targets)
        if self.target_soc_fraction is not None:
            target = _fraction("target_soc_fraction", self.target_soc_fraction)
            if not batteries:
                raise InvalidSite("target_soc_fraction is set but the site has no battery")
            for battery in batteries:
                if not battery.soc_min_fraction <= target <= battery.soc_max_fraction:
                    raise InvalidSite(
                        f"target_soc_fraction {target:g} is outside the bounds of battery "
                        f"{battery.name!r} [{battery.soc_min_fraction:g}, "
                        f"{battery.soc_max_fraction:g}]"
                    )
        names = {b.name: b for b in batteries}
        for wanted in targets:
            self._check_target(wanted, names, batteries, steps)

    @staticmethod
    def _check_target(
        target: SocTarget, names: dict[str, Battery], batteries: tuple[Battery, ...], steps: int
    ) -> None:
        if target.step >= steps:
            raise InvalidSite(
                f"soc target at step {target.step} is after the horizon of {steps} steps"
            )
        if target.battery is not None and target.battery not in names:
            raise InvalidSite(
                f"soc target names battery {target.battery!r}, but the site has "
                f"{sorted(names) or 'no battery'}"
            )
        if not batteries:
            raise InvalidSite("a soc target is set but the site has no battery")
        for battery in [names[target.battery]] if target.battery else batteries:
            if not battery.soc_min_fraction <= target.soc_fraction <= battery.soc_max_fraction:
                raise InvalidSite(
                    f"soc target {target.soc_fraction:g} at step {target.step} is outside "
                    f"the bounds of battery {battery.name!r} "
                    f"[{battery.soc_min_fraction:g}, {battery.soc_max_fraction:g}]"
                )

    def _check_loads(self, steps: int) -> None:
        loads = tuple(self.deferrable_loads)
        thermal = tuple(self.thermal_loads)
        object.__setattr__(self, "deferrable_loads", loads)
        object.__setattr__(self, "thermal_loads", thermal)
        names = [load.name for load in loads] + [load.name for load in thermal]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise InvalidSite(f"load names must be unique; repeated: {duplicates}")
        for load in loads:
            label = f"deferrable load {load.name!r}"
            if load.end_step > steps:
                raise InvalidSite(
                    f"{label} window [{load.start_step}, {load.end_step}) "
                    f"ends after the horizon of {steps} steps"
                )
            if not isinstance(load.price_per_kwh, int | float) and len(load.price_per_kwh) != steps:
                raise InvalidSite(
                    f"{label} price_per_kwh needs one value per step ({steps}), "
                    f"got {len(load.price_per_kwh)}"
                )
            if load.has_program:
                first = load.state.program_step or 0
                energy = sum(load.power_profile_w[first:]) * self.step_h
                if abs(energy - load.energy_wh) > 1e-6 * max(1.0, energy):
                    what = "the rest of its program" if first else "its program"
                    raise InvalidSite(
                        f"{label} energy_wh {load.energy_wh:g} is not the {energy:g} Wh "
                        f"{what} draws at {self.step_s} s steps; set energy_wh to {energy:g}"
                    )
        for thermal_load in thermal:
            thermal_load.check_steps(steps)

    @property
    def steps(self) -> int:
        return len(self.pv_w)

    @property
    def step_h(self) -> float:
        return self.step_s / 3600.0

    @property
    def initial_soc_wh(self) -> float:
        """The first battery's measured energy (0 without a battery)."""
        batteries = self.site.all_batteries
        return self.initial_soc_wh_of(0) if batteries else 0.0

    def initial_soc_wh_of(self, index: int) -> float:
        battery = self.site.all_batteries[index]
        fractions = self.initial_soc_fractions
        fraction = fractions[index] if fractions is not None else self.initial_soc_fraction
        return fraction * battery.capacity_wh

    def import_limit_at(self, step: int) -> float:
        """The import limit in force at a step (inf: none)."""
        limit = math.inf if self.site.import_limit_w is None else self.site.import_limit_w
        if self.import_limit_w is not None:
            limit = min(limit, self.import_limit_w[step])
        return limit

    def export_limit_at(self, step: int) -> float:
        limit = math.inf if self.site.export_limit_w is None else self.site.export_limit_w
        if self.export_limit_w is not None:
            limit = min(limit, self.export_limit_w[step])
        return limit
