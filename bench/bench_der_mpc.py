"""Receding-horizon planning: re-plan speed, and what forecast errors cost over a week.

Run from the repository root: `.venv/bin/python bench/bench_der_mpc.py` (writes
bench/results/der_mpc.json).

1. Re-plan speed. A Fortaleza house with a 10 kWh battery, a bedroom air conditioner and two
   deferrable loads (an EV, a washing machine's program) is re-planned every 15 minutes over the
   next 24 hours (96 steps) for a day, with forecasts that are a little wrong each time. Warm:
   one kept HiGHS model (`RecedingHorizon`); cold: a model built per re-plan (`optimise`).
   Targets: warm median under 5 ms, cold median under 30 ms.

2. Forecast error over a week. The same house lives a week of "true" weather and load that its
   forecasts do not know: PV with passing clouds, a load with noise, outdoor temperatures off
   the typical day. Three ways to run it, each priced on the truth by `meterchain.der.evaluate`
   (energy at tarifa branca, discomfort outside the comfort band, battery wear):
   * perfect foresight: one plan for the whole week made with the truth (the lower bound);
   * day-ahead: a plan made at midnight from the forecasts, followed blindly all day;
   * MPC: re-planned every 15 minutes from the measured state and updated forecasts
     (clear-sky PV scaled by the measured clear-sky index, load persistence, the typical
     outdoor day corrected by the measured bias), first step applied.
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.common import write_result
from bench.der_cases import (
    BRANCA,
    DAY,
    FEED_IN_PER_KWH,
    STEP_S,
    STEPS,
    bedroom_ac,
    ev_and_washer,
    house_w,
    mpc_house,
    pv_w,
    timing,
)
from meterchain.der import (
    Battery,
    DeferrableLoad,
    DerProblem,
    PlanFlows,
    RecedingHorizon,
    Site,
    advance_load,
    evaluate,
    optimise,
)
from meterchain.der.forecast import load_forecast_w, pv_forecast_w
from meterchain.der.thermal import next_temperature_c
from meterchain.der.weather import OutdoorForecaster, typical_outdoor_c

DAYS = 7
BATTERY = Battery(10_000, 5_000, 5_000, cell_price_per_kwh=2_000.0, cycle_life=6_000)
STEP_H = STEP_S / 3600


# -- 1. re-plan speed ------------------------------------------------------------------------


def replan_speed(progress: Progress) -> dict[str, Any]:
    rng = random.Random(20261124)
    pv_day = pv_w(DAY, 2 * STEPS, 5_000)
    mpc = RecedingHorizon()
    loads = ev_and_washer()
    room, soc = 27.0, 0.5
    warm_s, cold_s, methods = [], [], []
    task = progress.add_task("re-plans, 96 steps, warm and cold", total=STEPS)
    for first in range(STEPS):
        problem = mpc_house(first, loads=loads, room_c=room, soc=soc, rng=rng, pv_day_w=pv_day)
        started = time.perf_counter()
        plan = mpc.plan(problem)
        warm = time.perf_counter() - started
        started = time.perf_counter()
        cold = optimise(problem)
        cold_s.append(time.perf_counter() - started)
        if first:  # the first re-plan builds the kept model: it is a cold solve
            warm_s.append(warm)
        methods.append(plan.method)
        if abs(plan.objective - cold.objective) > 1e-6 * max(1.0, abs(cold.objective)):
            raise AssertionError(f"re-plan {first}: warm {plan.objective} != cold {cold.objective}")
        step = plan.next_interval()
        room, soc = plan.temperature_c["ac"][0], plan.soc_fraction[0]
        loads = [
            moved
            for load in loads
            if (moved := advance_load(load, step.deferrable_power_w[load.name], STEP_H))
        ]
        progress.advance(task)
    return {
        "steps": STEPS,
        "equipment": "10 kWh battery, 1.2 kW AC (1R1C), EV 1.4-7 kW, washer program",
        "warm": timing(warm_s),
        "cold": timing(cold_s),
        "targets_ms": {"warm_median": 5, "cold_median": 30},
        "model_builds": mpc.builds,
        "methods": {m: methods.count(m) for m in sorted(set(methods))},
    }


# -- 2. a week of forecast errors ------------------------------------------------------------


@dataclass
class Truth:
    """What really happens, per step, over the week and one day beyond (the last horizon)."""

    pv_w: list[float]
    load_w: list[float]
    outdoor_c: list[float]
    clear_sky_w: list[float]


def truth(rng: random.Random) -> Truth:
    steps = (DAYS + 1) * STEPS
    clear = pv_w(DAY, steps, 5_000)
    pv, load, outdoor = [], [], []
    typical = typical_outdoor_c(DAY, steps, STEP_S)
    house = house_w(DAY, steps)
    cloud_state = weather_state = load_state = 0.0
    day_clearness = [1 - 0.5 * rng.betavariate(2, 4) for _ in range(DAYS + 1)]
    day_offset = [rng.gauss(0.0, 0.8) for _ in range(DAYS + 1)]
    for k in range(steps):
        cloud_state = 0.8 * cloud_state + rng.gauss(0.0, 0.15)
        pv.append(clear[k] * min(1.0, max(0.05, day_clearness[k // STEPS] + cloud_state)))
        load_state = 0.8 * load_state + rng.gauss(0.0, 0.12)
        load.append(house[k] * math.exp(load_state))
        weather_state = 0.95 * weather_state + rng.gauss(0.0, 0.25)
        outdoor.append(typical[k] + day_offset[k // STEPS] + weather_state)
    return Truth(pv, load, outdoor, clear)


def day_loads(day: int) -> list[DeferrableLoad]:
    """Each day's EV and washer, with windows in absolute steps of the week."""
    base = day * STEPS
    return [
        replace(
            load,
            name=f"{load.name}-{day}",
            start_step=load.start_step + base,
            end_step=load.end_step + base,
        )
        for load in ev_and_washer()
    ]


def week_problem(data: Truth, *, room_c: float) -> DerProblem:
    """The whole week as one problem, on the truth: what perfect foresight plans, and what
    every realised week is priced against."""
    steps = DAYS * STEPS
    start = DAY
    ac = bedroom_ac(start, steps, room_c, data.outdoor_c[:steps])
    return DerProblem(
        site=Site("house", BATTERY),
        pv_w=data.pv_w[:steps],
        load_w=data.load_w[:steps],
        buy_price_per_kwh=BRANCA.prices(start, steps, STEP_S),
        sell_price_per_kwh=[FEED_IN_PER_KWH] * steps,
        initial_soc_fraction=0.5,
        target_soc_fraction=0.5,
        deferrable_loads=[load for day in range(DAYS) for load in day_loads(day)],
        thermal_loads=[ac],
        step_s=STEP_S,
    )


@dataclass
class Plant:
    """The house itself: applies set-points to the truth and records what flowed."""

    data: Truth
    soc_wh: float = BATTERY.capacity_wh * 0.5
    room_c: float = 27.0
    imports: list[float] = field(default_factory=list)
    exports: list[float] = field(default_factory=list)
    charge: list[float] = field(default_factory=list)
    discharge: list[float] = field(default_factory=list)
    ac_w: list[float] = field(default_factory=list)
    loads: dict[str, list[float]] = field(default_factory=dict)

    def step(self, k: int, battery_w: float, ac_w: float, load_w: dict[str, float]) -> None:
        b = BATTERY
        if battery_w >= 0:
            room = max(0.0, b.soc_max_wh - self.soc_wh) / b.charge_efficiency / STEP_H
            charge, discharge = min(battery_w, b.max_charge_w_at(self.soc_wh), room), 0.0
        else:
            stored = max(0.0, self.soc_wh - b.soc_min_wh) * b.discharge_efficiency / STEP_H
            charge, discharge = 0.0, min(-battery_w, b.max_discharge_power_w, stored)
        self.soc_wh += STEP_H * (b.charge_efficiency * charge - discharge / b.discharge_efficiency)
        ac = bedroom_ac(DAY, 1, self.room_c, [self.data.outdoor_c[k]])
        self.room_c = next_temperature_c(
            ac,
            self.room_c,
            outdoor_c=self.data.outdoor_c[k],
            gain_w=300.0,
            power_w=ac_w,
            step_h=STEP_H,
        )
        demand = self.data.load_w[k] + ac_w + sum(load_w.values()) + charge - discharge
        net = demand - self.data.pv_w[k]
        self.imports.append(max(0.0, net))
        self.exports.append(max(0.0, -net))
        self.charge.append(charge)
        self.discharge.append(discharge)
        self.ac_w.append(ac_w)
        for name in self.loads:
            self.loads[name].append(load_w.get(name, 0.0))

    def flows(self) -> PlanFlows:
        return PlanFlows(
            import_w=self.imports,
            export_w=self.exports,
            charge_w={BATTERY.name: self.charge},
            discharge_w={BATTERY.name: self.discharge},
            deferrable_w=self.loads,
            thermal_w={"ac": self.ac_w},
        )


class Forecaster:
    """What the board knows at step k: its measurements so far and the offline models."""

    def __init__(self, data: Truth) -> None:
        self.data = data
        self.outdoor = OutdoorForecaster()
        self.index = 1.0

    def observe(self, k: int) -> None:
        moment = DAY + timedelta(seconds=(k + 0.5) * STEP_S)
        self.outdoor.observe(moment, self.data.outdoor_c[k])

    def horizon(self, k: int) -> tuple[list[float], list[float], list[float]]:
        data = self.data
        recent = slice(max(0, k - 8), k)
        measured, clear = data.pv_w[recent], data.clear_sky_w[recent]
        if sum(clear) > 0 and max(clear) >= 50:
            self.index = sum(measured) / max(1e-9, sum(clear))
        pv = list(
            pv_forecast_w(
                data.clear_sky_w[k : k + STEPS],
                measured_recent_w=measured,
                clear_sky_recent_w=clear,
                default_index=self.index,
            )
        )
        history = data.load_w[max(0, k - 7 * STEPS) : k] or [450.0]
        load = list(load_forecast_w(history, horizon_steps=STEPS))
        start = DAY + timedelta(seconds=k * STEP_S)
        return pv, load, list(self.outdoor.forecast(start, STEPS, STEP_S))


def horizon_problem(
    k: int, forecaster: Forecaster, plant: Plant, loads: list[DeferrableLoad]
) -> DerProblem:
    """The problem the board solves at step k: loads whose window ends inside the horizon, in
    steps relative to now."""
    pv, load, outdoor = forecaster.horizon(k)
    start = DAY + timedelta(seconds=k * STEP_S)
    relative = [
        replace(x, start_step=max(0, x.start_step - k), end_step=x.end_step - k)
        for x in loads
        if x.end_step - k <= STEPS
    ]
    return DerProblem(
        site=Site("house", BATTERY),
        pv_w=pv,
        load_w=load,
        buy_price_per_kwh=BRANCA.prices(start, STEPS, STEP_S),
        sell_price_per_kwh=[FEED_IN_PER_KWH] * STEPS,
        initial_soc_fraction=min(1.0, max(0.0, plant.soc_wh / BATTERY.capacity_wh)),
        target_soc_fraction=0.5,
        deferrable_loads=relative,
        thermal_loads=[bedroom_ac(start, STEPS, plant.room_c, outdoor)],
        step_s=STEP_S,
    )


def run_mpc(data: Truth, progress: Progress) -> tuple[Plant, list[float]]:
    plant = Plant(data, loads={x.name: [] for d in range(DAYS) for x in day_loads(d)})
    forecaster = Forecaster(data)
    mpc = RecedingHorizon()
    loads = [x for d in range(DAYS) for x in day_loads(d)]
    solve_s = []
    task = progress.add_task("week, MPC (672 re-plans)", total=DAYS * STEPS)
    for k in range(DAYS * STEPS):
        problem = horizon_problem(k, forecaster, plant, loads)
        started = time.perf_counter()
        plan = mpc.plan(problem, marginal_values=False)
        solve_s.append(time.perf_counter() - started)
        step = plan.next_interval()
        drawn = {name: step.deferrable_power_w.get(name, 0.0) for name in plant.loads}
        plant.step(k, step.battery_power_w, step.thermal_power_w["ac"], drawn)
        forecaster.observe(k)
        moved = []
        for load in loads:
            if load.end_step - k <= STEPS:  # it was in the plan: it moves on with the plan
                shifted = advance_load(
                    replace(
                        load, start_step=max(0, load.start_step - k), end_step=load.end_step - k
                    ),
                    drawn[load.name],
                    STEP_H,
                )
                if shifted is not None:
                    moved.append(
                        replace(
                            shifted,
                            start_step=shifted.start_step + k + 1,
                            end_step=shifted.end_step + k + 1,
                        )
                    )
            else:
                moved.append(load)
        loads = moved
        progress.advance(task)
    return plant, solve_s


def run_day_ahead(data: Truth, progress: Progress) -> Plant:
    plant = Plant(data, loads={x.name: [] for d in range(DAYS) for x in day_loads(d)})
    forecaster = Forecaster(data)
    task = progress.add_task("week, day-ahead (7 plans)", total=DAYS)
    for day in range(DAYS):
        k0 = day * STEPS
        problem = horizon_problem(k0, forecaster, plant, day_loads(day))
        plan = optimise(problem, marginal_values=False)
        for t in range(STEPS):
            drawn = {
                name: plan.deferrable_w[name][t] if name in plan.deferrable_w else 0.0
                for name in plant.loads
            }
            plant.step(k0 + t, plan.battery_power_w[t], plan.thermal_w["ac"][t], drawn)
            forecaster.observe(k0 + t)
        progress.advance(task)
    return plant


def priced(week: DerProblem, flows: PlanFlows) -> dict[str, Any]:
    """The week's cost on the truth; the battery left below (above) the 50 % it started with is
    charged (credited) at what refilling it off-peak costs, so runs that end with different
    SoCs compare fairly."""
    checked = evaluate(week, flows)
    end_wh = next(iter(checked.end_soc_wh.values()))
    refill_wh = (0.5 * BATTERY.capacity_wh - end_wh) / BATTERY.charge_efficiency
    refill = refill_wh / 1000 * BRANCA.off_peak_per_kwh
    return {
        "cost": round(checked.cost + refill, 2),
        "cost_before_refill": round(checked.cost, 2),
        "refill_cost": round(refill, 2),
        "energy_cost": round(checked.energy_cost, 2),
        "discomfort_k_h": round(checked.discomfort_k_h, 2),
        "discomfort_cost": round(checked.discomfort_cost, 2),
        "wear_cost": round(checked.wear_cost, 2),
        "end_soc_wh": round(next(iter(checked.end_soc_wh.values())), 0),
        "feasible": checked.feasible,
        "violations": list(checked.violations[:3]),
    }


def forecast_error_week(progress: Progress) -> dict[str, Any]:
    data = truth(random.Random(7))
    week = week_problem(data, room_c=27.0)
    task = progress.add_task("week, perfect foresight (one 672-step plan)", total=1)
    started = time.perf_counter()
    perfect = optimise(week, marginal_values=False, time_limit_s=120.0)
    perfect_s = time.perf_counter() - started
    progress.advance(task)
    ahead = run_day_ahead(data, progress)
    mpc, solve_s = run_mpc(data, progress)
    results = {
        "perfect_foresight": {
            **priced(week, PlanFlows.of(perfect)),
            "solve_s": round(perfect_s, 2),
            "method": perfect.method,
            "optimal": perfect.optimal,
        },
        "day_ahead": priced(week, ahead.flows()),
        "mpc": {**priced(week, mpc.flows()), "replan": timing(solve_s)},
    }
    best = results["perfect_foresight"]["cost"]
    for name in ("day_ahead", "mpc"):
        results[name]["above_perfect_foresight"] = round(results[name]["cost"] - best, 2)
    results["truth"] = {
        "pv_kwh": round(sum(data.pv_w[: DAYS * STEPS]) * STEP_H / 1000, 1),
        "load_kwh": round(sum(data.load_w[: DAYS * STEPS]) * STEP_H / 1000, 1),
        "outdoor_c": [round(min(data.outdoor_c), 1), round(max(data.outdoor_c), 1)],
    }
    return results


def main() -> int:
    console = Console()
    results: dict[str, Any] = {}
    with Progress(console=console, transient=True) as progress:
        results["replan_96_steps"] = replan_speed(progress)
        results["forecast_error_week"] = forecast_error_week(progress)
    path = write_result("der_mpc", results)
    table = Table(title="Receding horizon: 96 steps of 15 min, battery + AC + EV + washer")
    table.add_column("measure")
    table.add_column("value", justify="right")
    speed = results["replan_96_steps"]
    table.add_row(
        "warm re-plan median / p95 (target < 5 ms)",
        f"{speed['warm']['median_ms']} / {speed['warm']['p95_ms']} ms",
    )
    table.add_row(
        "cold re-plan median / p95 (target < 30 ms)",
        f"{speed['cold']['median_ms']} / {speed['cold']['p95_ms']} ms",
    )
    week = results["forecast_error_week"]
    for name in ("perfect_foresight", "day_ahead", "mpc"):
        row = week[name]
        extra = (
            f" (+R$ {row['above_perfect_foresight']:.2f})" if name != "perfect_foresight" else ""
        )
        table.add_row(
            f"week, {name.replace('_', ' ')}: cost / discomfort",
            f"R$ {row['cost']:.2f}{extra} / {row['discomfort_k_h']} K·h",
        )
    console.print(table)
    console.print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
