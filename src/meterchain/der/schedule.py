"""What a plan says: power flows per step, the cost, and what to do in the next interval.

The optimiser and the rule-based baseline both return a `DerSchedule`, so they can be compared
step by step and priced the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from meterchain.der.site import DerProblem
from meterchain.model import SetBatteryPower


def grid_cost(problem: DerProblem, import_w: Sequence[float], export_w: Sequence[float]) -> float:
    """What the site pays the grid for a plan, in currency units (negative: it earns)."""
    step_kwh = problem.step_h / 1000.0
    return sum(
        (buy * imported - sell * exported) * step_kwh
        for buy, sell, imported, exported in zip(
            problem.buy_price_per_kwh, problem.sell_price_per_kwh, import_w, export_w, strict=True
        )
    )


@dataclass(frozen=True)
class NextInterval:
    """The set-points for the first step of a plan, and the energy it expects to trade."""

    step_s: int
    import_wh: float
    export_wh: float
    battery_power_w: float
    curtailment_w: float
    deferrable_power_w: Mapping[str, float]
    thermal_power_w: Mapping[str, float] = field(default_factory=dict)

    @property
    def net_import_wh(self) -> float:
        """Energy bought minus energy sold in the interval; negative when the site sells."""
        return self.import_wh - self.export_wh

    def battery_command(self) -> SetBatteryPower:
        """The battery set-point as the device command (positive charges)."""
        return SetBatteryPower(power_w=self.battery_power_w)


@dataclass(frozen=True)
class BatteryPlan:
    """One battery's part of a plan (the schedule's own flows are the sums over batteries)."""

    name: str
    capacity_wh: float
    charge_w: tuple[float, ...]
    discharge_w: tuple[float, ...]
    soc_wh: tuple[float, ...]


@dataclass(frozen=True)
class DerSchedule:
    """A plan over the horizon. Powers are averages over each step; `soc_wh` is at each step's end.

    `cost` is the grid energy bill alone; `battery_wear_cost` is the batteries' wear,
    `demand_cost` the demand charges billed for the month with this plan's peak,
    `load_price_cost` what the loads' own prices add, `startup_cost` the loads' start-ups,
    `discomfort_cost` the price of the kelvin·hours spent outside the comfort bands, and
    `penalty` what the soft constraints (SoC outside its bounds, targets missed) added to the
    objective, reported apart so that nobody mistakes a penalty for money. `objective` is their
    sum: what the plan minimised.
    `marginal_value_per_kwh[t]` is the dual of step t's energy balance in the LP with the
    binaries fixed at the plan: what one more kWh of demand at step t would cost the site.
    `battery_value_per_kwh[t]` is the dual of the SoC balance at the end of step t: what one more
    kWh in the cells at that moment is worth over the rest of the horizon.
    """

    method: str
    step_s: int
    battery_capacity_wh: float
    import_w: tuple[float, ...]
    export_w: tuple[float, ...]
    charge_w: tuple[float, ...]
    discharge_w: tuple[float, ...]
    soc_wh: tuple[float, ...]
    curtailment_w: tuple[float, ...]
    deferrable_w: Mapping[str, tuple[float, ...]]
    cost: float
    battery_wear_cost: float = 0.0
    penalty: float = 0.0
    target_shortfall_wh: float = 0.0
    soc_outside_bounds_wh_steps: float = 0.0
    marginal_value_per_kwh: tuple[float, ...] | None = None
    battery_value_per_kwh: tuple[float, ...] | None = None
    optimal: bool = True
    mip_gap: float = 0.0
    solve_time_s: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    thermal_w: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    temperature_c: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    batteries: tuple[BatteryPlan, ...] = ()
    demand_cost: float = 0.0
    load_price_cost: float = 0.0
    startup_cost: float = 0.0
    discomfort_cost: float = 0.0
    discomfort_k_h: float = 0.0

    @property
    def objective(self) -> float:
        return (
            self.cost
            + self.battery_wear_cost
            + self.demand_cost
            + self.load_price_cost
            + self.startup_cost
            + self.discomfort_cost
            + self.penalty
        )

    @property
    def steps(self) -> int:
        return len(self.import_w)

    @property
    def step_h(self) -> float:
        return self.step_s / 3600.0

    @property
    def soc_fraction(self) -> tuple[float, ...]:
        if self.battery_capacity_wh <= 0:
            return tuple(0.0 for _ in self.soc_wh)
        return tuple(soc / self.battery_capacity_wh for soc in self.soc_wh)

    @property
    def battery_power_w(self) -> tuple[float, ...]:
        """Net battery power per step, positive while charging."""
        return tuple(c - d for c, d in zip(self.charge_w, self.discharge_w, strict=True))

    @property
    def import_wh(self) -> float:
        return sum(self.import_w) * self.step_h

    @property
    def export_wh(self) -> float:
        return sum(self.export_w) * self.step_h

    def next_interval(self) -> NextInterval:
        """What to do now: the first step of the plan."""
        return NextInterval(
            step_s=self.step_s,
            import_wh=self.import_w[0] * self.step_h,
            export_wh=self.export_w[0] * self.step_h,
            battery_power_w=self.charge_w[0] - self.discharge_w[0],
            curtailment_w=self.curtailment_w[0],
            deferrable_power_w={name: power[0] for name, power in self.deferrable_w.items()},
            thermal_power_w={name: power[0] for name, power in self.thermal_w.items()},
        )
