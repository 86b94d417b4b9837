"""Plan a site's batteries, loads and PV over a horizon: the MILP of formulation.py, by HiGHS.

How the awkward cases are handled (docs/der.md says more):

* A start SoC outside [soc_min, soc_max] becomes a hard floor (or ceiling) that the SoC never
  crosses, and the gap to the real bound is a soft constraint with a penalty per Wh per step
  that is larger than any gain the prices could offer; so the battery comes back into its
  bounds as fast as its power and the site's limits allow, and then stays there.
* SoC targets (at the end of the horizon and along it) are soft by default, with a penalty per
  Wh larger than the dearest way of charging: met whenever they can be, and when they cannot the
  plan still runs and reports the shortfall. `strict_target=True` makes an end shortfall an
  error.
* Solving starts from the LP relaxation and only falls back to branch and bound when the
  relaxation's binaries cannot be read off (see `KeptModel.solve`); the result is optimal
  either way.
* An infeasible problem is explained, never just "infeasible": first by pre-checks with exact
  arithmetic on each constraint group, then, if the solver still finds no solution, by
  re-solving with slack variables on the energy balance, each deferrable load's energy and the
  strict target, minimising the slack, and naming each group whose slack is non-zero.

`KeptModel` holds one HiGHS model and edits it for the next problem of the same shape; that is
what the receding-horizon controller (mpc.py) re-plans with. `optimise` builds one and solves
once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import highspy
import numpy as np

from meterchain.der.formulation import (
    OBJECTIVE_SCALE,
    TOLERANCE_WH,
    Formulation,
    overrun_thresholds_w,
    penalty_per_kwh,
    program_of,
    shape,
)
from meterchain.der.milp import FloatArray
from meterchain.der.schedule import BatteryPlan, DerSchedule, grid_cost
from meterchain.der.site import DeferrableLoad, DerError, DerProblem
from meterchain.der.thermal import discomfort_k_h

__all__ = [
    "OBJECTIVE_SCALE",
    "InfeasibleProblem",
    "KeptModel",
    "SolverFailed",
    "cost_to_go",
    "optimise",
    "precheck",
]

_SLACK_WH = 1e-6  # what the diagnosis counts as a broken constraint
_REPAIR_ALTERNATIVES = 3  # other program starts tried before branch and bound
_INF = math.inf


class InfeasibleProblem(DerError):
    """No plan satisfies the constraints; `violations` says which ones, in words."""

    def __init__(self, site_name: str, violations: Sequence[str]) -> None:
        self.site_name = site_name
        self.violations = tuple(violations)
        super().__init__(f"site {site_name!r} cannot be planned: " + "; ".join(self.violations))


class SolverFailed(DerError):
    """HiGHS stopped without a usable plan (time limit before any solution, numerical trouble)."""


@dataclass
class Solved:
    x: FloatArray
    method: str
    optimal: bool
    mip_gap: float


_INFEASIBLE = (
    highspy.HighsModelStatus.kInfeasible,
    highspy.HighsModelStatus.kUnboundedOrInfeasible,
)


class KeptModel:
    """One HiGHS model of one problem shape, edited in place for each new problem of that shape.

    `load(problem)` pushes the problem's bounds, costs and coefficients (only what changed);
    `solve()` finds the optimum, from the LP relaxation when it can; `polish(x)` fixes the
    binaries and returns the LP's duals. HiGHS holds the LP relaxation between solves (the
    binaries are made integral only for branch and bound), and every temporary change (fixed
    binaries) is undone before a method returns.
    """

    def __init__(
        self,
        problem: DerProblem,
        *,
        time_limit_s: float = 10.0,
        mip_rel_gap: float = 1e-6,
        elastic: bool = False,
        pin_first_step_w: float | None = None,
    ) -> None:
        self.formulation = Formulation(problem, elastic=elastic)
        self.held = self.formulation.values(problem, pin_first_step_w=pin_first_step_w)
        self.solver = self.formulation.milp.highs(
            self.held, time_limit_s=time_limit_s, mip_rel_gap=mip_rel_gap, relaxed=True
        )
        self.time_limit_s = time_limit_s
        self.mip_rel_gap = mip_rel_gap
        self.problem = problem
        self.last_x: FloatArray | None = None

    def fits(self, problem: DerProblem) -> bool:
        """Whether `problem` has this model's shape (then `load` can take it)."""
        return self.formulation.shape == shape(problem, elastic=self.formulation.elastic)

    def load(self, problem: DerProblem, *, pin_first_step_w: float | None = None) -> None:
        values = self.formulation.values(problem, pin_first_step_w=pin_first_step_w)
        self.formulation.milp.push(self.solver, self.held, values, relaxed=True)
        self.held = values
        self.problem = problem

    def objective(self, x: FloatArray) -> float:
        """The objective at `x`, in currency units."""
        return float(np.dot(self.held.col_cost, x)) / OBJECTIVE_SCALE

    # -- solving ---------------------------------------------------------------------------

    def solve(
        self, *, start: FloatArray | None = None, started: float | None = None
    ) -> Solved | None:
        """(solution, method, optimal, MIP gap), or None if no plan satisfies the constraints.

        1. The LP relaxation. If its binaries can be read off its solution (no simultaneous
           charge and discharge, loads at or above their minimum power, one block, ...) and
           every row then holds, that point is optimal for the MILP: the relaxation bounds
           the MILP from below and this point is feasible at the same cost.
        2. Else the deferrable loads' on/off pattern is guessed from it (the start the
           relaxation leaned on most, the steps a semi-continuous load used most), fixed, and
           the LP solved again. If that plan's cost equals the relaxation's bound it is
           optimal; if not, it becomes the MILP's starting solution (else the binaries of
           `start`, a solution the caller knows such as the last plan shifted by one step).
        3. HiGHS's branch and bound.
        """
        began = time.perf_counter() if started is None else started
        integral = self.held.integral
        mixed = bool(integral.any())
        if mixed:
            relaxed = self._relaxation_first()
            if isinstance(relaxed, Solved):
                return relaxed
            self._set_integrality(integral)
            if relaxed is not None:
                everything = np.arange(len(relaxed), dtype=np.int32)
                self.solver.setSolution(len(relaxed), everything, relaxed)
            elif start is not None:
                # the binaries of a known plan: HiGHS completes them into a start if it can
                binaries = self.formulation.milp.binaries[integral]
                values = np.clip(np.round(start[binaries]), 0.0, 1.0)
                self.solver.setSolution(len(binaries), binaries, values)
        try:
            self.solver.run()
            status = self.solver.getModelStatus()
            info = self.solver.getInfo()
            found = info.primal_solution_status == 2
            x = np.asarray(self.solver.getSolution().col_value, dtype=np.float64)
        finally:
            if mixed:  # back to the relaxation (which clears the status read above)
                self._set_integrality(np.zeros(len(integral), dtype=np.bool_))
        if status in _INFEASIBLE:
            return None
        if not found:
            raise SolverFailed(
                f"HiGHS stopped with '{self.solver.modelStatusToString(status)}' and no plan "
                f"for site {self.problem.site.name!r} after {time.perf_counter() - began:.1f} s; "
                "raise time_limit_s or shorten the horizon"
            )
        optimal = status == highspy.HighsModelStatus.kOptimal
        mip_gap = float(info.mip_gap) if mixed and math.isfinite(info.mip_gap) else 0.0
        return Solved(x, "milp" if mixed else "lp", optimal, mip_gap)

    def polish(self, x: FloatArray) -> tuple[FloatArray, FloatArray] | None:
        """Solution and row duals of the LP left when every binary is fixed at its value in `x`:
        exact values where branch and bound left binaries a tolerance away from 0 or 1, and the
        duals that price energy."""
        binaries = self.formulation.milp.binaries
        if len(binaries):
            fixed = np.clip(np.round(x[binaries]), 0.0, 1.0)
            relaxed = ~self.held.integral
            fixed[relaxed] = x[binaries][relaxed]  # relaxed binaries keep their LP value
            self.solver.changeColsBounds(len(binaries), binaries, fixed, fixed)
            self.solver.run()
        status = self.solver.getModelStatus()
        solution = self.solver.getSolution()
        result = None
        if status == highspy.HighsModelStatus.kOptimal and solution.dual_valid:
            result = (
                np.asarray(solution.col_value, dtype=np.float64),
                np.asarray(solution.row_dual, dtype=np.float64),
            )
        self._restore_binaries()
        return result

    def _set_integrality(self, integral: np.ndarray) -> None:
        binaries = self.formulation.milp.binaries
        if len(binaries):
            kinds = np.asarray(integral, dtype=np.uint8)
            self.solver.changeColsIntegrality(len(binaries), binaries, kinds)

    def _restore_binaries(self) -> None:
        binaries = self.formulation.milp.binaries
        if len(binaries):
            self.solver.changeColsBounds(
                len(binaries),
                binaries,
                self.held.col_lower[binaries],
                self.held.col_upper[binaries],
            )

    def _relaxation_first(self) -> Solved | FloatArray | None:
        """An optimal Solved found by LPs alone; else a starting solution for the MILP (or
        None)."""
        self.solver.run()
        if self.solver.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        solution = self.solver.getSolution()
        x = np.asarray(solution.col_value, dtype=np.float64)
        bound = float(self.solver.getInfo().objective_function_value)
        gap = max(1e-9, self.mip_rel_gap)
        read = self.read_binaries(x)
        if read is not None:
            # reading a binary off can only cost something if the binary has a cost itself
            # (a start-up): then the bound must still be met
            cost = float(np.dot(self.held.col_cost, read))
            if cost <= bound + gap * max(1.0, abs(bound)):
                return Solved(read, "lp-relaxation", True, 0.0)
        price = (
            np.asarray(solution.row_dual, dtype=np.float64)[self.formulation.balance_rows].tolist()
            if solution.dual_valid
            else None
        )
        guess, alternatives = self._deferrable_guess(x, price)
        start: FloatArray | None = None
        best = math.inf
        attempts = [guess] + [{**guess, **alternative} for alternative in alternatives]
        for attempt in attempts[: 1 + _REPAIR_ALTERNATIVES] if guess else []:
            fixed = np.asarray(list(attempt), dtype=np.int32)
            values = np.asarray(list(attempt.values()), dtype=np.float64)
            self.solver.changeColsBounds(len(fixed), fixed, values, values)
            self.solver.run()
            solved_lp = self.solver.getModelStatus() == highspy.HighsModelStatus.kOptimal
            if solved_lp:
                repaired = np.asarray(self.solver.getSolution().col_value, dtype=np.float64)
                read = self.read_binaries(repaired)
                cost = math.inf if read is None else float(np.dot(self.held.col_cost, read))
                if read is not None and cost <= bound + gap * max(1.0, abs(bound)):
                    # the relaxation bounds the MILP from below: within the gap, optimal
                    self._restore_binaries()
                    return Solved(read, "lp-relaxation-repaired", True, 0.0)
                if read is not None and cost < best:
                    best, start = cost, read
            self.solver.changeColsBounds(
                len(fixed), fixed, self.held.col_lower[fixed], self.held.col_upper[fixed]
            )
        return start

    def read_binaries(self, x: FloatArray) -> FloatArray | None:
        """`x` with its integral binaries read off its continuous part, if every row then
        holds; None if not."""
        form, held, problem = self.formulation, self.held, self.problem
        candidate = x.copy()
        if form.grid_mode is not None:
            # importing and exporting at once: net them (only their difference enters any
            # other row); the cost check after the read-off says whether that cost anything
            both = np.minimum(candidate[form.imp], candidate[form.exp])
            candidate[form.imp] -= both
            candidate[form.exp] -= both
        read = form.read_off
        mask = held.integral[read.indicator_k]
        if mask.any():
            positive = x[read.indicator_cols[mask]] > 1e-6
            candidate[read.indicator_bins[mask]] = positive.astype(np.float64)
        running = {load.name: load.state.running for load in problem.deferrable_loads}
        for start, on, previous, name in zip(
            read.switch_bins, read.switch_on, read.switch_prev, read.switch_load, strict=True
        ):
            now = candidate[on] > 0.5
            before = candidate[previous] > 0.5 if previous >= 0 else running[name]
            candidate[start] = 1.0 if now and not before else 0.0
        thresholds = overrun_thresholds_w(problem)
        for binary, col, name in zip(
            read.above_bins, read.above_cols, read.above_name, strict=True
        ):
            candidate[binary] = 1.0 if x[col] > thresholds[name] + 1e-6 else 0.0
        programs = form.program_binaries
        if len(programs):
            values = candidate[programs]
            rounded = np.round(values)
            if np.any(np.abs(values - rounded) > 1e-6):
                return None
            candidate[programs] = rounded
        if form.milp.satisfied(held, candidate):
            return candidate
        return None

    def _deferrable_guess(
        self, x: FloatArray, price: Sequence[float] | None
    ) -> tuple[dict[int, float], list[dict[int, float]]]:
        """A plausible on/off value for the deferrable loads' binaries, from the relaxation;
        and alternatives for the programs (each other start the relaxation used)."""
        problem, form = self.problem, self.formulation
        step_h, guess = problem.step_h, {}
        alternatives: list[dict[int, float]] = []
        cheaper: dict[int, float] = {}  # every on-off load on its cheapest steps at once
        cost = price if price is not None else [0.0] * problem.steps
        for load, lay in zip(problem.deferrable_loads, form.loads, strict=True):
            program_start = lay.program_start
            if program_start is not None and lay.program is not None:
                allowed = [
                    a for a in range(problem.steps) if self.held.col_upper[program_start[a]] > 0
                ]
                if not allowed:
                    continue
                span = len(lay.program)
                ranked = sorted(
                    allowed,
                    key=lambda a: (
                        -round(float(x[program_start[a]]), 6),
                        sum(cost[a : a + span]),
                    ),
                )
                for a in allowed:
                    guess[int(program_start[a])] = 1.0 if a == ranked[0] else 0.0
                for other in ranked[1:]:
                    if x[program_start[other]] <= 1e-6:
                        break
                    alternatives.append(
                        {int(program_start[a]): 1.0 if a == other else 0.0 for a in allowed}
                    )
                continue
            if lay.on is None or _has_sequencing_rules(load):
                continue
            power, window = lay.power, list(load.window)
            if load.energy_wh <= 0 or not window:
                continue
            # At least one step: a load of almost no energy still runs once (the ceil of ~0 is
            # 0, and the guess below would divide by its zero steps).
            fewest = max(1, math.ceil(load.energy_wh / (load.max_power_w * step_h) - 1e-9))
            chosen: list[int] = []
            if fewest > len(window):
                chosen = []
            elif load.single_block:
                # the block that holds most of the energy the relaxation gave the load; ties
                # go to the block where energy is cheapest by the relaxation's duals
                energy = {t: float(x[power[t]]) for t in window}
                first = min(
                    range(load.start_step, load.end_step - fewest + 1),
                    key=lambda a: (
                        -round(sum(energy[t] for t in range(a, a + fewest)), 6),
                        sum(cost[a : a + fewest]),
                    ),
                )
                chosen = list(range(first, first + fewest))
            else:
                used = sorted(window, key=lambda t: -float(x[power[t]]))
                count = sum(1 for t in window if x[power[t]] > 1e-6)
                low = max(load.min_power_w, 1e-9)
                most = math.floor(load.energy_wh / (low * step_h) + 1e-9)
                runs = max(fewest, min(count, most))
                chosen = used[:runs]
                # another guess: the steps where running costs least, counting the PV the
                # relaxation exported there as cheap and the rest at the buy price
                drawn = load.energy_wh / (runs * step_h)
                buy, sell = problem.buy_price_per_kwh, problem.sell_price_per_kwh
                costs = {}
                for t in window:
                    cheap = float(x[form.exp[t]] + x[power[t]])
                    costs[t] = sell[t] * min(drawn, cheap) + buy[t] * max(0.0, drawn - cheap)
                cheapest = sorted(window, key=lambda t: (costs[t], -float(x[power[t]])))
                cheap_steps = cheapest[:runs]
                if set(cheap_steps) != set(chosen):
                    alternative = {int(lay.on[t]): 1.0 if t in cheap_steps else 0.0 for t in window}
                    if lay.start is not None:
                        first_on = min(cheap_steps)
                        for t in range(problem.steps):
                            alternative[int(lay.start[t])] = 1.0 if t == first_on else 0.0
                    cheaper.update(alternative)
            for t in window:
                guess[int(lay.on[t])] = 1.0 if t in chosen else 0.0
            if lay.start is not None:
                for t in range(problem.steps):
                    guess[int(lay.start[t])] = 1.0 if chosen and t == chosen[0] else 0.0
        if cheaper:
            alternatives.insert(0, cheaper)
        return guess, alternatives


def _has_sequencing_rules(load: DeferrableLoad) -> bool:
    return (
        load.min_on_steps > 1
        or load.min_off_steps > 1
        or load.max_starts is not None
        or load.startup_cost > 0
        or load.state.running
    )


# -- the plan --------------------------------------------------------------------------------


def optimise(
    problem: DerProblem,
    *,
    time_limit_s: float = 10.0,
    mip_rel_gap: float = 1e-6,
    marginal_values: bool = True,
) -> DerSchedule:
    """The cheapest plan for the horizon; raises InfeasibleProblem saying what cannot be met.

    With `marginal_values`, the duals of the LP with every binary fixed at the plan price energy
    at each step (`DerSchedule.marginal_value_per_kwh`) and energy in the first battery
    (`DerSchedule.battery_value_per_kwh`); orders.py builds limit prices from them.
    """
    violations = precheck(problem)
    if violations:
        raise InfeasibleProblem(problem.site.name, violations)
    model = KeptModel(problem, time_limit_s=time_limit_s, mip_rel_gap=mip_rel_gap)
    return plan_with(model, problem, time_limit_s=time_limit_s, marginal_values=marginal_values)


def plan_with(
    model: KeptModel,
    problem: DerProblem,
    *,
    time_limit_s: float,
    marginal_values: bool = True,
    start: FloatArray | None = None,
    started: float | None = None,
) -> DerSchedule:
    """Solve the problem `model` holds and turn the solution into a schedule."""
    began = time.perf_counter() if started is None else started
    solved = model.solve(start=start, started=began)
    if solved is None:
        raise InfeasibleProblem(problem.site.name, _diagnose(problem, time_limit_s=time_limit_s))
    x = solved.x
    marginal: tuple[float, ...] | None = None
    battery_value: tuple[float, ...] | None = None
    row_dual: FloatArray | None = None
    if marginal_values or solved.method == "milp":
        polished = model.polish(x)
        if polished is not None:
            x, row_dual = polished
    form = model.formulation
    if marginal_values and row_dual is not None:
        marginal = tuple(
            float(row_dual[r]) / (OBJECTIVE_SCALE / 1000.0) / problem.step_h
            for r in form.balance_rows
        )
        if form.batteries:
            battery_value = tuple(
                -float(row_dual[r]) * 1000.0 / OBJECTIVE_SCALE for r in form.batteries[0].soc_rows
            )
    model.last_x = x
    return _schedule(
        problem,
        form,
        x,
        method=solved.method,
        optimal=solved.optimal,
        mip_gap=solved.mip_gap,
        solve_time_s=time.perf_counter() - began,
        marginal=marginal,
        battery_value=battery_value,
    )


def cost_to_go(
    problem: DerProblem,
    first_step_net_import_w: float,
    *,
    time_limit_s: float = 10.0,
    model: KeptModel | None = None,
) -> float | None:
    """The best objective (currency, penalties included) over the horizon with step 0's net
    import pinned to `first_step_net_import_w` and step 0's grid bill left out; None if no plan
    fits. Comparing two pins prices a block of energy traded in step 0 (see orders.py).

    With `model` (a kept model holding `problem`), the pin is pushed into it and taken out
    again afterwards, instead of building a model."""
    if first_step_net_import_w > problem.import_limit_at(0) + 1e-9:
        return None
    if -first_step_net_import_w > problem.export_limit_at(0) + 1e-9:
        return None
    if model is None:
        model = KeptModel(
            problem, time_limit_s=time_limit_s, pin_first_step_w=first_step_net_import_w
        )
        solved = model.solve()
        return None if solved is None else model.objective(solved.x)
    model.load(problem, pin_first_step_w=first_step_net_import_w)
    try:
        solved = model.solve()
        return None if solved is None else model.objective(solved.x)
    finally:
        model.load(problem)


def _values(x: FloatArray, cols: Sequence[int] | np.ndarray) -> tuple[float, ...]:
    return tuple(np.maximum(0.0, x[np.asarray(cols, dtype=np.int64)]).tolist())


def _sum(series: Sequence[tuple[float, ...]], steps: int) -> tuple[float, ...]:
    if not series:
        return (0.0,) * steps
    return tuple(float(sum(values)) for values in zip(*series, strict=True))


def _schedule(
    problem: DerProblem,
    form: Formulation,
    x: FloatArray,
    *,
    method: str,
    optimal: bool,
    mip_gap: float,
    solve_time_s: float,
    marginal: tuple[float, ...] | None,
    battery_value: tuple[float, ...] | None,
) -> DerSchedule:
    steps, step_h = problem.steps, problem.step_h
    import_w = _values(x, form.imp)
    export_w = _values(x, form.exp)
    plans = []
    below = above = short = 0.0
    wear = 0.0
    notes = []
    for index, lay in enumerate(form.batteries):
        battery = lay.battery
        charge, discharge = _values(x, lay.charge), _values(x, lay.discharge)
        plans.append(
            BatteryPlan(
                battery.name,
                battery.capacity_wh,
                charge,
                discharge,
                tuple(x[lay.soc].tolist()),
            )
        )
        below += sum(_values(x, lay.below))
        above += sum(_values(x, lay.above))
        shortfalls = _values(x, lay.short)
        missed = sum(s for s in shortfalls if s > TOLERANCE_WH)
        short += missed
        if missed > 0:
            which = f"battery {battery.name!r} " if len(form.batteries) > 1 else ""
            notes.append(
                f"{which}target SoC missed by {_wh(missed)} Wh: the battery cannot get there in "
                "time"
            )
        wear += (
            (
                battery.wear_cost_per_kwh
                * (
                    battery.charge_efficiency * sum(charge)
                    + sum(discharge) / battery.discharge_efficiency
                )
                + battery.cycle_cost_per_kwh * sum(discharge)
            )
            * step_h
            / 1000.0
        )
        if sum(_values(x, lay.below)) + sum(_values(x, lay.above)) > 0:
            fraction = problem.initial_soc_wh_of(index) / battery.capacity_wh
            notes.append(
                f"SoC started at {fraction:.0%}, outside "
                f"[{battery.soc_min_fraction:.0%}, {battery.soc_max_fraction:.0%}]; "
                "the plan brings it back as fast as the limits allow"
            )
    deferrable = {}
    load_price_cost = startup_cost = 0.0
    for load, load_lay in zip(problem.deferrable_loads, form.loads, strict=True):
        power = _values(x, load_lay.power)
        deferrable[load.name] = power
        prices = np.broadcast_to(np.asarray(load.price_per_kwh, dtype=np.float64), (steps,))
        load_price_cost += float(np.dot(prices, power)) * step_h / 1000
        if load_lay.start is not None:
            starts = sum(1 for c in load_lay.start if x[c] > 0.5)
            startup_cost += load.startup_cost * starts
    thermal_w, temperature_c = {}, {}
    discomfort_cost = discomfort_total = 0.0
    for thermal, thermal_lay in zip(problem.thermal_loads, form.thermal, strict=True):
        thermal_w[thermal.name] = _values(x, thermal_lay.power)
        temperatures = tuple(x[thermal_lay.temperature].tolist())
        temperature_c[thermal.name] = temperatures
        k_h = discomfort_k_h(thermal, temperatures, step_h)
        discomfort_total += k_h
        discomfort_cost += thermal.discomfort_per_kelvin_hour * k_h
    demand_cost = 0.0
    for demand in problem.demand_charges:
        counted = [w for t, w in enumerate(import_w) if demand.counts(t)]
        peak_kw = max([demand.peak_so_far_kw, *(w / 1000.0 for w in counted)])
        demand_cost += demand.billed_cost(peak_kw)
    batteries = problem.site.all_batteries
    return DerSchedule(
        method=method,
        step_s=problem.step_s,
        battery_capacity_wh=sum(b.capacity_wh for b in batteries),
        import_w=import_w,
        export_w=export_w,
        charge_w=_sum([p.charge_w for p in plans], steps),
        discharge_w=_sum([p.discharge_w for p in plans], steps),
        soc_wh=_sum([p.soc_wh for p in plans], steps),
        curtailment_w=_values(x, form.curt),
        deferrable_w=deferrable,
        cost=grid_cost(problem, import_w, export_w),
        battery_wear_cost=wear,
        penalty=penalty_per_kwh(problem) / 1000.0 * ((below + above) + short),
        target_shortfall_wh=short,
        soc_outside_bounds_wh_steps=below + above,
        marginal_value_per_kwh=marginal,
        battery_value_per_kwh=battery_value,
        optimal=optimal,
        mip_gap=mip_gap,
        solve_time_s=solve_time_s,
        notes=tuple(notes),
        thermal_w=thermal_w,
        temperature_c=temperature_c,
        batteries=tuple(plans),
        demand_cost=demand_cost,
        load_price_cost=load_price_cost,
        startup_cost=startup_cost,
        discomfort_cost=discomfort_cost,
        discomfort_k_h=discomfort_total,
    )


# -- explanations ----------------------------------------------------------------------------


def _wh(energy_wh: float) -> str:
    """An energy for a message: whole Wh, or two significant digits below 10 Wh."""
    return f"{energy_wh:.0f}" if abs(energy_wh) >= 10 else f"{energy_wh:.2g}"


def _steps_text(first: int, last: int) -> str:
    return f"step {first}" if first == last else f"steps [{first}, {last + 1})"


def _runs(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """Maximal stretches of consecutive True values, as (first, last) pairs."""
    runs: list[tuple[int, int]] = []
    for t, flag in enumerate(flags):
        if not flag:
            continue
        if runs and runs[-1][1] == t - 1:
            runs[-1] = (runs[-1][0], t)
        else:
            runs.append((t, t))
    return runs


def _surplus_w(problem: DerProblem) -> list[float]:
    return [max(0.0, pv - load) for pv, load in zip(problem.pv_w, problem.load_w, strict=True)]


def _deferrable_max_w(problem: DerProblem) -> list[float]:
    total = [0.0] * problem.steps
    for load in problem.deferrable_loads:
        for t in load.window:
            total[t] += load.max_power_w
    return total


def precheck(problem: DerProblem) -> list[str]:
    """Constraints that cannot be met whatever the plan, found by arithmetic before any solve.

    Every bound here is optimistic (the batteries are assumed able to give their full power),
    so a problem flagged here is certainly infeasible.
    """
    problems: list[str] = []
    step_h, site = problem.step_h, problem.site
    batteries = site.all_batteries
    minutes = problem.step_s / 60
    discharge_max = sum(b.max_discharge_power_w for b in batteries)
    charge_max = sum(b.max_charge_power_w for b in batteries)
    surplus = _surplus_w(problem)
    limited = site.import_limit_w is not None or problem.import_limit_w is not None
    for load in problem.deferrable_loads:
        where = f"deferrable load {load.name!r} needs {load.energy_wh:g} Wh in {_window(load)}"
        need_wh = load.least_energy_wh
        program = program_of(load, step_h)
        if program is not None:
            if load.state.program_step is not None:
                left = len(program) - load.state.program_step
                if left > problem.steps:
                    problems.append(
                        f"deferrable load {load.name!r} is running a program with {left} steps "
                        f"left, longer than the {problem.steps}-step horizon; lengthen the horizon"
                    )
            elif len(program) > len(load.window):
                problems.append(
                    f"deferrable load {load.name!r} runs a {len(program)}-step program but its "
                    f"window {_window(load)} has only {len(load.window)} steps; widen its window"
                )
            elif load.surplus_only and not any(
                all(p <= surplus[a + k] + 1e-9 for k, p in enumerate(program))
                for a in range(load.start_step, load.end_step - len(program) + 1)
            ):
                problems.append(
                    f"{where} from PV surplus only, but the forecast surplus over the base load "
                    f"is too small for its {len(program)}-step program at any start"
                )
            continue
        at_full_power = load.max_power_w * len(load.window) * step_h
        if need_wh > at_full_power + TOLERANCE_WH:
            problems.append(
                f"{where} but at most {at_full_power:g} Wh fits at its "
                f"{load.max_power_w:g} W maximum power; widen its window or lower its energy_wh"
            )
            continue
        if load.surplus_only:
            fits = sum(min(load.max_power_w, surplus[t]) for t in load.window) * step_h
            if need_wh > fits + TOLERANCE_WH:
                problems.append(
                    f"{where} from PV surplus only, but the forecast surplus over the base load "
                    f"allows at most {_wh(fits)} Wh there"
                )
                continue
        if limited:
            fits = step_h * sum(
                min(
                    load.max_power_w,
                    max(
                        0.0,
                        problem.import_limit_at(t)
                        + problem.pv_w[t]
                        + discharge_max
                        - problem.load_w[t],
                    ),
                )
                for t in load.window
            )
            if need_wh > fits + TOLERANCE_WH:
                problems.append(
                    f"{where} but at most {_wh(fits)} Wh fits under the "
                    f"{_limit_text(problem)} import limit (counting the PV forecast, the base "
                    f"load, with {_battery_help(discharge_max)}); widen its window, lower its "
                    "energy_wh or raise the import limit"
                )
                continue
        if load.min_power_w > 0 and load.energy_wh > 0 and load.min_energy_wh is None:
            low_wh, high_wh = load.min_power_w * step_h, load.max_power_w * step_h
            fewest = math.ceil(load.energy_wh / high_wh - 1e-9)
            most = min(len(load.window), math.floor(load.energy_wh / low_wh + 1e-9))
            if fewest > most:
                problems.append(
                    f"deferrable load {load.name!r} needs {load.energy_wh:g} Wh, but each "
                    f"{minutes:g}-minute step it runs takes between {low_wh:g} and {high_wh:g} Wh "
                    f"(min_power_w {load.min_power_w:g}, max_power_w {load.max_power_w:g}) and "
                    "no whole number of steps adds up to it; change energy_wh or lower min_power_w"
                )
        state = load.state
        if state.running and state.on_steps < load.min_on_steps:
            pinned = load.min_on_steps - state.on_steps
            if load.start_step > 0 or load.end_step < pinned:
                problems.append(
                    f"deferrable load {load.name!r} has run {state.on_steps} steps of its "
                    f"minimum {load.min_on_steps}, so it stays on in steps [0, {pinned}), but its "
                    f"window is {_window(load)}; start its window at 0 while it runs"
                )
    if limited:
        need = [
            load - pv - discharge_max for pv, load in zip(problem.pv_w, problem.load_w, strict=True)
        ]
        over = [n > problem.import_limit_at(t) + 1e-6 for t, n in enumerate(need)]
        for first, last in _runs(over):
            worst = max(problem.load_w[first : last + 1])
            problems.append(
                f"the base load cannot be supplied in {_steps_text(first, last)}: "
                f"up to {worst:g} W of load against the {_limit_text(problem, first)} import limit "
                f"plus the PV forecast, with {_battery_help(discharge_max)}"
            )
    export_limited = site.export_limit_w is not None or problem.export_limit_w is not None
    if not site.pv_curtailable and export_limited:
        deferrable_max = _deferrable_max_w(problem)
        thermal_max = sum(t.max_power_w for t in problem.thermal_loads)
        excess = [
            pv - load - charge_max - deferrable_max[t] - thermal_max
            for t, (pv, load) in enumerate(zip(problem.pv_w, problem.load_w, strict=True))
        ]
        over = [e > problem.export_limit_at(t) + 1e-6 for t, e in enumerate(excess)]
        for first, last in _runs(over):
            worst = max(excess[first : last + 1])
            problems.append(
                f"the PV in {_steps_text(first, last)} cannot go anywhere: up to {worst:.0f} W "
                f"more than the load, the battery and the deferrable loads can take, above the "
                f"{problem.export_limit_at(first):g} W export limit; make the PV curtailable or "
                "raise the export limit"
            )
    return problems


def _limit_text(problem: DerProblem, step: int | None = None) -> str:
    if problem.import_limit_w is None:
        return f"{problem.site.import_limit_w:g} W"
    if step is not None:
        return f"{problem.import_limit_at(step):g} W"
    return "time-varying"


def _battery_help(discharge_max_w: float) -> str:
    if discharge_max_w > 0:
        return f"{discharge_max_w:g} W from the battery"
    return "no battery to help"


def _window(load: DeferrableLoad) -> str:
    return f"steps [{load.start_step}, {load.end_step})"


def _diagnose(problem: DerProblem, *, time_limit_s: float) -> list[str]:
    """Re-solve with slack on each constraint group; name the groups that needed slack."""
    model = KeptModel(problem, time_limit_s=time_limit_s, elastic=True)
    form = model.formulation
    model._set_integrality(model.held.integral)
    model.solver.run()
    if model.solver.getInfo().primal_solution_status != 2:
        return [
            "the solver found no plan, and the diagnosis could not finish either "
            f"({model.solver.modelStatusToString(model.solver.getModelStatus())})"
        ]
    x = np.asarray(model.solver.getSolution().col_value)
    step_h, site = problem.step_h, problem.site
    batteries = site.all_batteries
    found: list[str] = []
    limited = site.import_limit_w is not None or problem.import_limit_w is not None
    for load, lay in zip(problem.deferrable_loads, form.loads, strict=True):
        assert lay.short is not None and lay.over is not None
        short = float(x[lay.short])
        over = float(x[lay.over])
        if short > _SLACK_WH:
            limits = []
            if limited:
                limits.append(f"the {_limit_text(problem)} import limit")
            if load.surplus_only:
                limits.append("the forecast PV surplus")
            if batteries:
                limits.append("the energy left in the battery")
            limits.append("the other loads")
            given = ", ".join(limits[:-1]) + " and " + limits[-1] if len(limits) > 1 else limits[0]
            found.append(
                f"deferrable load {load.name!r} needs {load.energy_wh:g} Wh in {_window(load)} "
                f"but at most {_wh(load.least_energy_wh - short)} Wh can be delivered there "
                f"(given {given})"
            )
        if over > _SLACK_WH:
            found.append(
                f"deferrable load {load.name!r} needs exactly {load.energy_wh:g} Wh in "
                f"{_window(load)} but its minimum power and single-block rule force at least "
                f"{_wh(load.energy_wh + over)} Wh"
            )
    assert form.unserved is not None and form.spilled is not None
    unserved = [float(x[c]) * step_h for c in form.unserved]
    for first, last in _runs([u > _SLACK_WH for u in unserved]):
        energy = sum(unserved[first : last + 1])
        limit = (
            f"the {_limit_text(problem, first)} import limit" if limited else "the grid connection"
        )
        found.append(
            f"the site cannot cover its demand in {_steps_text(first, last)}: {_wh(energy)} Wh "
            f"short under {limit}, even with the battery's stored energy"
        )
    spilled = [float(x[c]) * step_h for c in form.spilled]
    for first, last in _runs([s > _SLACK_WH for s in spilled]):
        energy = sum(spilled[first : last + 1])
        export_limited = site.export_limit_w is not None or problem.export_limit_w is not None
        limit = (
            f"exports are capped at {problem.export_limit_at(first):g} W"
            if export_limited
            else "exports are capped"
        )
        found.append(
            f"the site cannot get rid of {_wh(energy)} Wh of PV in {_steps_text(first, last)}: "
            f"the PV is not curtailable, the battery cannot take it and {limit}"
        )
    if problem.strict_target and problem.target_soc_fraction is not None:
        for battery_lay in form.batteries:
            short = float(x[battery_lay.short[-1]])
            if short > _SLACK_WH:
                target = problem.target_soc_fraction
                reachable = target - short / battery_lay.battery.capacity_wh
                found.append(
                    f"the battery cannot reach the target SoC of {target:.0%} by the end of the "
                    f"horizon: at most {reachable:.0%} is reachable with its charge power and the "
                    "energy available"
                )
    if not found:
        found.append(
            "the solver reported no feasible plan, but relaxing the energy balance, the "
            "deferrable loads and the target one by one did not locate the cause; check the "
            "battery's SoC bounds, the loads' states and the limits against the forecasts"
        )
    return found
