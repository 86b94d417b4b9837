"""Plan a site's battery, deferrable loads and PV over a horizon: a MILP solved by HiGHS.

Per step t (powers in W, averaged over the step; SoC in Wh at the end of the step):

    import - export + discharge - charge - curtail - sum(deferrable) = load - pv
    soc[t] = soc[t-1] + step_h * (charge_efficiency * charge - discharge / discharge_efficiency)
    charge <= Pc * b,  discharge <= Pd * (1 - b)          b binary: never both at once
    import <= Mi * g,  export <= Me * (1 - g)             g binary, only where sell >= buy
    curtail <= pv;  import <= import limit;  export <= export limit

and the objective is the grid bill, sum(buy * import - sell * export) * step_kWh, plus the soft
penalties below. How the awkward cases are handled (docs/der.md says more):

* A start SoC outside [soc_min, soc_max] becomes a hard floor (or ceiling) that the SoC never
  crosses, and the gap to the real bound is a soft constraint with a penalty per Wh per step
  that is larger than any gain the prices could offer; so the battery comes back into its
  bounds as fast as its power and the site's limits allow, and then stays there.
* The target SoC at the end of the horizon is soft by default, with a penalty per Wh larger
  than the dearest way of charging: it is met whenever it can be, and when it cannot the plan
  still runs and reports the shortfall. `strict_target=True` makes a shortfall an error.
* Solving starts from the LP relaxation and only falls back to branch and bound when the
  relaxation's binaries cannot be read off (see `optimise`); the result is optimal either way.
* An infeasible problem is explained, never just "infeasible": first by pre-checks with exact
  arithmetic on each constraint group, then, if the solver still finds no solution, by
  re-solving with slack variables on the energy balance, each deferrable load's energy and the
  strict target, minimising the slack, and naming each group whose slack is non-zero.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import highspy
import numpy as np
import numpy.typing as npt

from meterchain.der.schedule import DerSchedule, grid_cost
from meterchain.der.site import DeferrableLoad, DerError, DerProblem

IntArray = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float64]

# The objective is in thousandths of a currency unit: with powers in W and 15-minute steps the
# coefficients are then near 0.1-1, well inside HiGHS's tolerances.
OBJECTIVE_SCALE = 1000.0
TOLERANCE_WH = 1e-3
_SLACK_WH = 1e-6  # what the diagnosis counts as a broken constraint
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
class _Model:
    """A MILP being assembled: columns with bounds and costs, rows in compressed-row form."""

    cost: list[float] = field(default_factory=list)
    lower: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    integer: list[int] = field(default_factory=list)
    row_lower: list[float] = field(default_factory=list)
    row_upper: list[float] = field(default_factory=list)
    row_start: list[int] = field(default_factory=list)
    row_index: list[int] = field(default_factory=list)
    row_value: list[float] = field(default_factory=list)
    # How to read each binary off a solution of the LP relaxation: 1 when its indicator column
    # is positive; a block-start binary is 1 where its load switches on.
    indicator: dict[int, int] = field(default_factory=dict)
    switch_on: dict[int, tuple[int, int | None]] = field(default_factory=dict)

    def cols(
        self, lower: Sequence[float], upper: Sequence[float], cost: Sequence[float]
    ) -> list[int]:
        first = len(self.cost)
        self.lower.extend(lower)
        self.upper.extend(upper)
        self.cost.extend(cost)
        return list(range(first, len(self.cost)))

    def col(self, lower: float, upper: float, cost: float = 0.0) -> int:
        return self.cols([lower], [upper], [cost])[0]

    def binary(self, indicator: int | None = None) -> int:
        index = self.col(0.0, 1.0)
        self.integer.append(index)
        if indicator is not None:
            self.indicator[index] = indicator
        return index

    def row(self, cols: Sequence[int], values: Sequence[float], lower: float, upper: float) -> int:
        self.row_start.append(len(self.row_index))
        self.row_index.extend(cols)
        self.row_value.extend(values)
        self.row_lower.append(lower)
        self.row_upper.append(upper)
        return len(self.row_lower) - 1

    def highs(self, *, time_limit_s: float, mip_rel_gap: float) -> highspy.Highs:
        solver = highspy.Highs()  # type: ignore[no-untyped-call]
        solver.setOptionValue("output_flag", False)
        solver.setOptionValue("time_limit", float(time_limit_s))
        solver.setOptionValue("mip_rel_gap", float(mip_rel_gap))
        solver.setOptionValue("threads", 1)
        empty_int: IntArray = np.zeros(0, dtype=np.int32)
        solver.addCols(
            len(self.cost),
            np.asarray(self.cost, dtype=np.float64),
            np.asarray(self.lower, dtype=np.float64),
            np.asarray(self.upper, dtype=np.float64),
            0,
            empty_int,
            empty_int,
            np.zeros(0, dtype=np.float64),
        )
        solver.addRows(
            len(self.row_lower),
            np.asarray(self.row_lower, dtype=np.float64),
            np.asarray(self.row_upper, dtype=np.float64),
            len(self.row_index),
            np.asarray(self.row_start, dtype=np.int32),
            np.asarray(self.row_index, dtype=np.int32),
            np.asarray(self.row_value, dtype=np.float64),
        )
        if self.integer:
            solver.changeColsIntegrality(
                len(self.integer),
                np.asarray(self.integer, dtype=np.int32),
                np.ones(len(self.integer), dtype=np.uint8),
            )
        return solver


@dataclass
class _Layout:
    """Where each quantity of the problem lives in the model."""

    imp: list[int]
    exp: list[int]
    curt: list[int]
    balance_rows: list[int]
    charge: list[int] = field(default_factory=list)
    discharge: list[int] = field(default_factory=list)
    soc: list[int] = field(default_factory=list)
    soc_rows: list[int] = field(default_factory=list)
    below: list[int] = field(default_factory=list)
    above: list[int] = field(default_factory=list)
    target_short: int | None = None
    deferrable: dict[str, dict[int, int]] = field(default_factory=dict)
    deferrable_on: dict[str, dict[int, int]] = field(default_factory=dict)
    deferrable_start: dict[str, dict[int, int]] = field(default_factory=dict)
    deferrable_block: dict[str, dict[int, int]] = field(default_factory=dict)
    unserved: list[int] = field(default_factory=list)
    spilled: list[int] = field(default_factory=list)
    deferrable_short: dict[str, int] = field(default_factory=dict)
    deferrable_over: dict[str, int] = field(default_factory=dict)


def penalty_per_kwh(problem: DerProblem) -> float:
    """The price of a soft constraint: above any gain a kWh could bring at these prices."""
    prices = [*problem.buy_price_per_kwh, *problem.sell_price_per_kwh]
    dearest = max(abs(p) for p in prices)
    battery = problem.site.battery
    efficiency = 1.0 if battery is None else battery.charge_efficiency
    efficiency *= 1.0 if battery is None else battery.discharge_efficiency
    return 2.0 * dearest / efficiency + 1.0


def _fixed_block_steps(load: DeferrableLoad, step_h: float) -> int | None:
    """How many steps a fixed-power single-block load runs, or None if it is not one."""
    if not (load.single_block and load.min_power_w == load.max_power_w and load.energy_wh > 0):
        return None
    steps = round(load.energy_wh / (load.max_power_w * step_h))
    exact = abs(steps * load.max_power_w * step_h - load.energy_wh) <= TOLERANCE_WH
    return steps if exact and 1 <= steps <= len(load.window) else None


def _surplus_w(problem: DerProblem) -> list[float]:
    return [max(0.0, pv - load) for pv, load in zip(problem.pv_w, problem.load_w, strict=True)]


def _deferrable_max_w(problem: DerProblem) -> list[float]:
    total = [0.0] * problem.steps
    for load in problem.deferrable_loads:
        for t in load.window:
            total[t] += load.max_power_w
    return total


def _build(
    problem: DerProblem, *, elastic: bool = False, first_step_net_w: float | None = None
) -> tuple[_Model, _Layout]:
    """The MILP for `problem`.

    `elastic` adds slack to the groups that can make it infeasible and minimises that slack
    alone (the diagnosis). `first_step_net_w` pins step 0's net import and drops step 0's grid
    cost from the objective (what the order pricing needs).
    """
    model = _Model()
    steps, step_h = problem.steps, problem.step_h
    site, battery = problem.site, problem.site.battery
    scale = 0.0 if elastic else OBJECTIVE_SCALE
    penalty = 0.0 if elastic else penalty_per_kwh(problem) / 1000.0 * OBJECTIVE_SCALE
    charge_max = battery.max_charge_power_w if battery else 0.0
    discharge_max = battery.max_discharge_power_w if battery else 0.0
    deferrable_max = _deferrable_max_w(problem)
    import_limit = _INF if site.import_limit_w is None else site.import_limit_w
    export_limit = _INF if site.export_limit_w is None else site.export_limit_w

    # Upper bounds from physics keep every big-M finite: a site never needs to import more than
    # it can consume, nor export more than it can produce.
    import_ub = [
        min(import_limit, load + deferrable_max[t] + charge_max)
        for t, load in enumerate(problem.load_w)
    ]
    export_ub = [min(export_limit, pv + discharge_max) for pv in problem.pv_w]
    if battery is not None and not battery.grid_discharging:
        # Only the PV surplus over the base load may leave the site (see below).
        export_ub = [min(ub, s) for ub, s in zip(export_ub, _surplus_w(problem), strict=True)]
    import_cost = [scale * buy * step_h / 1000.0 for buy in problem.buy_price_per_kwh]
    export_cost = [-scale * sell * step_h / 1000.0 for sell in problem.sell_price_per_kwh]
    if first_step_net_w is not None:
        import_cost[0] = export_cost[0] = 0.0
    layout = _Layout(
        imp=model.cols([0.0] * steps, import_ub, import_cost),
        exp=model.cols([0.0] * steps, export_ub, export_cost),
        curt=model.cols(
            [0.0] * steps,
            list(problem.pv_w) if site.pv_curtailable else [0.0] * steps,
            [0.0] * steps,
        ),
        balance_rows=[],
    )
    if elastic:
        weight = 10.0 * step_h  # per W of a step: 10 per Wh, so deferrable loads give way first
        layout.unserved = model.cols([0.0] * steps, [_INF] * steps, [weight] * steps)
        layout.spilled = model.cols([0.0] * steps, [_INF] * steps, [weight] * steps)

    if battery is not None:
        soc0 = problem.initial_soc_wh
        floor, ceiling = min(battery.soc_min_wh, soc0), max(battery.soc_max_wh, soc0)
        layout.charge = model.cols([0.0] * steps, [charge_max] * steps, [0.0] * steps)
        wear = scale * battery.cycle_cost_per_kwh * step_h / 1000.0
        layout.discharge = model.cols([0.0] * steps, [discharge_max] * steps, [wear] * steps)
        layout.soc = model.cols([floor] * steps, [ceiling] * steps, [0.0] * steps)
        for t in range(steps):
            cols = [layout.soc[t], layout.charge[t], layout.discharge[t]]
            values = [
                1.0,
                -battery.charge_efficiency * step_h,
                step_h / battery.discharge_efficiency,
            ]
            if t > 0:
                cols.append(layout.soc[t - 1])
                values.append(-1.0)
            rhs = soc0 if t == 0 else 0.0
            layout.soc_rows.append(model.row(cols, values, rhs, rhs))
            if charge_max > 0 and discharge_max > 0:
                mode = model.binary(layout.charge[t])  # 1: may charge, 0: may discharge
                model.row([layout.charge[t], mode], [1.0, -charge_max], -_INF, 0.0)
                model.row([layout.discharge[t], mode], [1.0, discharge_max], -_INF, discharge_max)
        if floor < battery.soc_min_wh:
            gap = battery.soc_min_wh - floor
            layout.below = model.cols([0.0] * steps, [gap] * steps, [penalty] * steps)
            for t in range(steps):
                model.row([layout.soc[t], layout.below[t]], [1.0, 1.0], battery.soc_min_wh, _INF)
        if ceiling > battery.soc_max_wh:
            gap = ceiling - battery.soc_max_wh
            layout.above = model.cols([0.0] * steps, [gap] * steps, [penalty] * steps)
            for t in range(steps):
                model.row([layout.soc[t], layout.above[t]], [1.0, -1.0], -_INF, battery.soc_max_wh)
        if problem.target_soc_fraction is not None:
            target_wh = problem.target_soc_fraction * battery.capacity_wh
            if elastic:
                short_ub, short_cost = _INF, (1.0 if problem.strict_target else 0.0)
            else:
                short_ub, short_cost = (0.0 if problem.strict_target else _INF), penalty
            layout.target_short = model.col(0.0, short_ub, short_cost)
            model.row([layout.soc[-1], layout.target_short], [1.0, 1.0], target_wh, _INF)

    for t in range(steps):
        buy, sell = problem.buy_price_per_kwh[t], problem.sell_price_per_kwh[t]
        if sell >= buy and import_ub[t] > 0 and export_ub[t] > 0:
            # Importing and exporting at once would pay (or break even): forbid it.
            mode = model.binary(layout.imp[t])  # 1: may import, 0: may export
            model.row([layout.imp[t], mode], [1.0, -import_ub[t]], -_INF, 0.0)
            model.row([layout.exp[t], mode], [1.0, export_ub[t]], -_INF, export_ub[t])

    surplus = _surplus_w(problem)
    surplus_users: dict[int, list[int]] = {}
    for load in problem.deferrable_loads:
        power: dict[int, int] = {}
        for t in load.window:
            upper = min(load.max_power_w, surplus[t]) if load.surplus_only else load.max_power_w
            power[t] = model.col(0.0, upper)
            if load.surplus_only:
                surplus_users.setdefault(t, []).append(power[t])
        layout.deferrable[load.name] = power
        cols, values = list(power.values()), [step_h] * len(power)
        if elastic:
            layout.deferrable_short[load.name] = model.col(0.0, _INF, 1.0)
            layout.deferrable_over[load.name] = model.col(0.0, _INF, 1.0)
            cols += [layout.deferrable_short[load.name], layout.deferrable_over[load.name]]
            values += [1.0, -1.0]
        model.row(cols, values, load.energy_wh, load.energy_wh)
        block = _fixed_block_steps(load, step_h)
        if block is not None:
            # A fixed-power block (a washing machine): choose its start, not its power per
            # step. This start-time formulation's LP relaxation is a mix of whole blocks, so
            # it is far tighter than on/off binaries per step.
            first_steps = range(load.start_step, load.end_step - block + 1)
            block_start = {a: model.binary() for a in first_steps}
            layout.deferrable_block[load.name] = block_start
            for a, col in block_start.items():
                model.switch_on[col] = (power[a], power[a - 1] if a > load.start_step else None)
            model.row(
                list(block_start.values()), [1.0] * len(block_start), 0.0 if elastic else 1.0, 1.0
            )
            for t in load.window:
                covering = [block_start[a] for a in block_start if a <= t < a + block]
                model.row(
                    [power[t], *covering], [1.0] + [-load.max_power_w] * len(covering), 0.0, 0.0
                )
        elif load.min_power_w > 0 or load.single_block:
            on = {t: model.binary(power[t]) for t in load.window}
            layout.deferrable_on[load.name] = on
            floor = load.min_power_w
            if load.single_block and floor == 0 and load.energy_wh > 0:
                # "on" must mean drawing power, or a block could idle inside itself; the floor
                # is small enough that the whole window at the floor never exceeds the energy
                floor = min(1.0, load.energy_wh / (len(load.window) * step_h))
            for t in load.window:
                model.row([power[t], on[t]], [1.0, -load.max_power_w], -_INF, 0.0)
                if floor > 0:
                    model.row([power[t], on[t]], [1.0, -floor], 0.0, _INF)
            if load.single_block:
                starts = []
                for t in load.window:
                    start = model.binary()
                    model.switch_on[start] = (on[t], on[t - 1] if t > load.start_step else None)
                    layout.deferrable_start.setdefault(load.name, {})[t] = start
                    starts.append(start)
                    cols = [on[t], start] + ([on[t - 1]] if t > load.start_step else [])
                    values = [1.0, -1.0] + ([-1.0] if t > load.start_step else [])
                    model.row(cols, values, -_INF, 0.0)
                model.row(starts, [1.0] * len(starts), -_INF, 1.0)
    if battery is not None and not battery.grid_charging:
        # A battery barred from grid charging is one more user of the surplus.
        for t in range(steps):
            if surplus[t] > 0:
                surplus_users.setdefault(t, []).append(layout.charge[t])
            else:
                model.upper[layout.charge[t]] = 0.0
    for t, users in surplus_users.items():
        # Surplus users share the PV that is neither used by the base load nor curtailed.
        model.row([*users, layout.curt[t]], [1.0] * (len(users) + 1), -_INF, surplus[t])
    if battery is not None and not battery.grid_discharging:
        # The battery never feeds the grid: what the site exports is PV that the site does not
        # consume (base load, deferrable loads, charging) in that step. Export is bounded by the
        # surplus over the base load above; and no step both exports and discharges, since a
        # discharging battery that runs a load frees the PV that load would have used.
        for t in range(steps):
            model.row([layout.exp[t], layout.curt[t]], [1.0, 1.0], -_INF, problem.pv_w[t])
            if export_ub[t] > 0 and discharge_max > 0:
                exporting = model.binary(layout.exp[t])  # 1: may export, 0: may discharge
                model.row([layout.exp[t], exporting], [1.0, -export_ub[t]], -_INF, 0.0)
                model.row(
                    [layout.discharge[t], exporting], [1.0, discharge_max], -_INF, discharge_max
                )

    for t in range(steps):
        cols = [layout.imp[t], layout.exp[t], layout.curt[t]]
        values = [1.0, -1.0, -1.0]
        if battery is not None:
            cols += [layout.discharge[t], layout.charge[t]]
            values += [1.0, -1.0]
        for power in layout.deferrable.values():
            if t in power:
                cols.append(power[t])
                values.append(-1.0)
        if elastic:
            cols += [layout.unserved[t], layout.spilled[t]]
            values += [1.0, -1.0]
        rhs = problem.load_w[t] - problem.pv_w[t]
        layout.balance_rows.append(model.row(cols, values, rhs, rhs))

    if first_step_net_w is not None:
        model.row([layout.imp[0], layout.exp[0]], [1.0, -1.0], first_step_net_w, first_step_net_w)
    return model, layout


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


def precheck(problem: DerProblem) -> list[str]:
    """Constraints that cannot be met whatever the plan, found by arithmetic before any solve.

    Every bound here is optimistic (the battery is assumed able to give its full power), so a
    problem flagged here is certainly infeasible.
    """
    problems: list[str] = []
    step_h, site, battery = problem.step_h, problem.site, problem.site.battery
    minutes = problem.step_s / 60
    discharge_max = battery.max_discharge_power_w if battery else 0.0
    charge_max = battery.max_charge_power_w if battery else 0.0
    surplus = _surplus_w(problem)
    for load in problem.deferrable_loads:
        where = f"deferrable load {load.name!r} needs {load.energy_wh:g} Wh in {_window(load)}"
        at_full_power = load.max_power_w * len(load.window) * step_h
        if load.energy_wh > at_full_power + TOLERANCE_WH:
            problems.append(
                f"{where} but at most {at_full_power:g} Wh fits at its "
                f"{load.max_power_w:g} W maximum power; widen its window or lower its energy_wh"
            )
            continue
        if load.surplus_only:
            fits = sum(min(load.max_power_w, surplus[t]) for t in load.window) * step_h
            if load.energy_wh > fits + TOLERANCE_WH:
                problems.append(
                    f"{where} from PV surplus only, but the forecast surplus over the base load "
                    f"allows at most {_wh(fits)} Wh there"
                )
                continue
        if site.import_limit_w is not None:
            fits = step_h * sum(
                min(
                    load.max_power_w,
                    max(
                        0.0,
                        site.import_limit_w + problem.pv_w[t] + discharge_max - problem.load_w[t],
                    ),
                )
                for t in load.window
            )
            if load.energy_wh > fits + TOLERANCE_WH:
                problems.append(
                    f"{where} but at most {_wh(fits)} Wh fits under the "
                    f"{site.import_limit_w:g} W import limit (counting the PV forecast, the base "
                    f"load, with {_battery_help(discharge_max)}); widen its window, lower its "
                    "energy_wh or raise the import limit"
                )
                continue
        if load.min_power_w > 0 and load.energy_wh > 0:
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
    if site.import_limit_w is not None:
        limit = site.import_limit_w
        need = [
            load - pv - discharge_max for pv, load in zip(problem.pv_w, problem.load_w, strict=True)
        ]
        for first, last in _runs([n > limit + 1e-6 for n in need]):
            worst = max(problem.load_w[first : last + 1])
            problems.append(
                f"the base load cannot be supplied in {_steps_text(first, last)}: "
                f"up to {worst:g} W of load against the {limit:g} W import limit "
                f"plus the PV forecast, with {_battery_help(discharge_max)}"
            )
    if not site.pv_curtailable and site.export_limit_w is not None:
        limit = site.export_limit_w
        deferrable_max = _deferrable_max_w(problem)
        excess = [
            pv - load - charge_max - deferrable_max[t]
            for t, (pv, load) in enumerate(zip(problem.pv_w, problem.load_w, strict=True))
        ]
        for first, last in _runs([e > limit + 1e-6 for e in excess]):
            worst = max(excess[first : last + 1])
            problems.append(
                f"the PV in {_steps_text(first, last)} cannot go anywhere: up to {worst:.0f} W "
                f"more than the load, the battery and the deferrable loads can take, above the "
                f"{limit:g} W export limit; make the PV curtailable or raise the export limit"
            )
    return problems


def _battery_help(discharge_max_w: float) -> str:
    if discharge_max_w > 0:
        return f"{discharge_max_w:g} W from the battery"
    return "no battery to help"


def _window(load: DeferrableLoad) -> str:
    return f"steps [{load.start_step}, {load.end_step})"


def _diagnose(problem: DerProblem, *, time_limit_s: float) -> list[str]:
    """Re-solve with slack on each constraint group; name the groups that needed slack."""
    model, layout = _build(problem, elastic=True)
    solver = model.highs(time_limit_s=time_limit_s, mip_rel_gap=1e-6)
    solver.run()
    if solver.getInfo().primal_solution_status != 2:
        return [
            "the solver found no plan, and the diagnosis could not finish either "
            f"({solver.modelStatusToString(solver.getModelStatus())})"
        ]
    x = np.asarray(solver.getSolution().col_value)
    step_h, site, battery = problem.step_h, problem.site, problem.site.battery
    found: list[str] = []
    for load in problem.deferrable_loads:
        short = float(x[layout.deferrable_short[load.name]])
        over = float(x[layout.deferrable_over[load.name]])
        if short > _SLACK_WH:
            limits = []
            if site.import_limit_w is not None:
                limits.append(f"the {site.import_limit_w:g} W import limit")
            if load.surplus_only:
                limits.append("the forecast PV surplus")
            if battery is not None:
                limits.append("the energy left in the battery")
            limits.append("the other loads")
            given = ", ".join(limits[:-1]) + " and " + limits[-1]
            found.append(
                f"deferrable load {load.name!r} needs {load.energy_wh:g} Wh in {_window(load)} "
                f"but at most {_wh(load.energy_wh - short)} Wh can be delivered there "
                f"(given {given})"
            )
        if over > _SLACK_WH:
            found.append(
                f"deferrable load {load.name!r} needs exactly {load.energy_wh:g} Wh in "
                f"{_window(load)} but its minimum power and single-block rule force at least "
                f"{_wh(load.energy_wh + over)} Wh"
            )
    unserved = [float(x[c]) * step_h for c in layout.unserved]
    for first, last in _runs([u > _SLACK_WH for u in unserved]):
        energy = sum(unserved[first : last + 1])
        limit = (
            f"the {site.import_limit_w:g} W import limit"
            if site.import_limit_w is not None
            else "the grid connection"
        )
        found.append(
            f"the site cannot cover its demand in {_steps_text(first, last)}: {_wh(energy)} Wh "
            f"short under {limit}, even with the battery's stored energy"
        )
    spilled = [float(x[c]) * step_h for c in layout.spilled]
    for first, last in _runs([s > _SLACK_WH for s in spilled]):
        energy = sum(spilled[first : last + 1])
        limit = (
            f"exports are capped at {site.export_limit_w:g} W"
            if site.export_limit_w is not None
            else "exports are capped"
        )
        found.append(
            f"the site cannot get rid of {_wh(energy)} Wh of PV in {_steps_text(first, last)}: "
            f"the PV is not curtailable, the battery cannot take it and {limit}"
        )
    if layout.target_short is not None and battery is not None and problem.strict_target:
        short = float(x[layout.target_short])
        if short > _SLACK_WH:
            target = problem.target_soc_fraction or 0.0
            reachable = target - short / battery.capacity_wh
            found.append(
                f"the battery cannot reach the target SoC of {target:.0%} by the end of the "
                f"horizon: at most {reachable:.0%} is reachable with its charge power and the "
                "energy available"
            )
    if not found:
        found.append(
            "the solver reported no feasible plan, but relaxing the energy balance, the "
            "deferrable loads and the target one by one did not locate the cause; check the "
            "battery's SoC bounds and the limits against the forecasts"
        )
    return found


def optimise(
    problem: DerProblem,
    *,
    time_limit_s: float = 10.0,
    mip_rel_gap: float = 1e-6,
    marginal_values: bool = True,
) -> DerSchedule:
    """The cheapest plan for the horizon; raises InfeasibleProblem saying what cannot be met.

    The LP relaxation is solved first. When its binaries can be read off its solution (no
    simultaneous charge and discharge, no load below its minimum power, ...) that solution is
    already optimal for the MILP, since the relaxation bounds it from below; this holds on most
    ordinary days and takes ~10 ms instead of ~150 ms for 96 steps. Failing that, a guessed
    on/off pattern for the deferrable loads is tried (optimal if it reaches the relaxation's
    bound, else a starting solution), then HiGHS's branch and bound runs.

    With `marginal_values`, the duals of the LP with every binary fixed at the plan price energy
    at each step (`DerSchedule.marginal_value_per_kwh`) and energy in the battery
    (`DerSchedule.battery_value_per_kwh`); orders.py builds limit prices from them.
    """
    violations = precheck(problem)
    if violations:
        raise InfeasibleProblem(problem.site.name, violations)
    model, layout = _build(problem)
    solver = model.highs(time_limit_s=time_limit_s, mip_rel_gap=mip_rel_gap)
    started = time.perf_counter()
    solved = _solve(solver, model, layout, problem, time_limit_s=time_limit_s, started=started)
    if solved is None:
        raise InfeasibleProblem(problem.site.name, _diagnose(problem, time_limit_s=time_limit_s))
    x, method, optimal, mip_gap = solved
    marginal: tuple[float, ...] | None = None
    battery_value: tuple[float, ...] | None = None
    row_dual: FloatArray | None = None
    if marginal_values or method == "milp":
        # The LP with every binary fixed: exact values where branch and bound left binaries a
        # tolerance away from 0 or 1, and the duals that price energy.
        polished = _fixed_lp(solver, model, x)
        if polished is not None:
            x, row_dual = polished
    if marginal_values and row_dual is not None:
        marginal = tuple(
            float(row_dual[r]) / (OBJECTIVE_SCALE / 1000.0) / problem.step_h
            for r in layout.balance_rows
        )
        battery_value = tuple(
            -float(row_dual[r]) * 1000.0 / OBJECTIVE_SCALE for r in layout.soc_rows
        )
    return _schedule(
        problem,
        layout,
        x,
        method=method,
        optimal=optimal,
        mip_gap=mip_gap,
        solve_time_s=time.perf_counter() - started,
        marginal=marginal,
        battery_value=battery_value,
    )


_INFEASIBLE = (
    highspy.HighsModelStatus.kInfeasible,
    highspy.HighsModelStatus.kUnboundedOrInfeasible,
)


def _set_integrality(solver: highspy.Highs, model: _Model, integer: bool) -> None:
    cols = np.asarray(model.integer, dtype=np.int32)
    kinds = np.full(len(cols), 1 if integer else 0, dtype=np.uint8)
    solver.changeColsIntegrality(len(cols), cols, kinds)


def _solve_relaxation_first(
    solver: highspy.Highs, model: _Model, layout: _Layout, problem: DerProblem
) -> tuple[FloatArray, str, bool, float] | None:
    """An optimal plan found by LPs alone, or None (then the MILP runs, perhaps with a start).

    1. The LP relaxation. If its binaries can be read off its solution, it is optimal.
    2. Else the deferrable loads' on/off pattern is guessed from it (a single block where
       energy is cheapest by the relaxation's duals, a semi-continuous load on the steps the
       relaxation used most) and the LP is solved again with that pattern fixed. If that plan's
       cost equals the relaxation's bound, it is optimal too; if not, it is handed to the
       MILP as a starting solution.
    An infeasible relaxation is left for the MILP step to report (it is infeasible too).
    """
    _set_integrality(solver, model, integer=False)
    solver.run()
    if solver.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        _set_integrality(solver, model, integer=True)
        return None
    cols = np.asarray(model.integer, dtype=np.int32)
    solution = solver.getSolution()
    x = np.asarray(solution.col_value, dtype=np.float64)
    binaries = _read_binaries(model, x)
    if binaries is not None:
        x[cols] = binaries
        return x, "lp-relaxation", True, 0.0
    bound = float(solver.getInfo().objective_function_value)
    price = (
        [float(solution.row_dual[r]) for r in layout.balance_rows] if solution.dual_valid else None
    )
    guess = _deferrable_guess(problem, layout, x, price)
    start: FloatArray | None = None
    if guess:
        fixed = np.asarray(list(guess), dtype=np.int32)
        values = np.asarray(list(guess.values()), dtype=np.float64)
        solver.changeColsBounds(len(fixed), fixed, values, values)
        solver.run()
        if solver.getModelStatus() == highspy.HighsModelStatus.kOptimal:
            repaired = np.asarray(solver.getSolution().col_value, dtype=np.float64)
            binaries = _read_binaries(model, repaired)
            if binaries is not None:
                repaired[cols] = binaries
                cost = float(solver.getInfo().objective_function_value)
                if cost <= bound + 1e-9 * max(1.0, abs(bound)):
                    return repaired, "lp-relaxation-repaired", True, 0.0
                start = repaired
        solver.changeColsBounds(
            len(fixed), fixed, np.zeros(len(fixed)), np.ones(len(fixed), dtype=np.float64)
        )
    _set_integrality(solver, model, integer=True)
    if start is not None:
        everything = np.arange(len(start), dtype=np.int32)
        solver.setSolution(len(start), everything, start)
    return None


def _deferrable_guess(
    problem: DerProblem, layout: _Layout, x: FloatArray, price: Sequence[float] | None
) -> dict[int, float]:
    """A plausible on/off value for every deferrable-load binary, from the LP relaxation."""
    step_h, guess = problem.step_h, {}
    cost = price if price is not None else [0.0] * problem.steps
    for load in problem.deferrable_loads:
        block_start = layout.deferrable_block.get(load.name)
        if block_start:
            # the start the relaxation leaned on most; ties go to the cheapest block
            block = _fixed_block_steps(load, step_h) or 1
            best = max(
                block_start,
                key=lambda a: (round(float(x[block_start[a]]), 6), -sum(cost[a : a + block])),
            )
            guess.update({col: 1.0 if a == best else 0.0 for a, col in block_start.items()})
            continue
        on = layout.deferrable_on.get(load.name)
        if not on:
            continue
        power, window = layout.deferrable[load.name], list(load.window)
        fewest = math.ceil(load.energy_wh / (load.max_power_w * step_h) - 1e-9)
        chosen: list[int] = []
        if load.energy_wh <= 0 or fewest > len(window):
            chosen = []
        elif load.single_block:
            # The block that holds most of the energy the relaxation gave the load; ties go to
            # the block where energy is cheapest by the relaxation's duals.
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
            most = math.floor(load.energy_wh / (load.min_power_w * step_h) + 1e-9)
            chosen = used[: max(fewest, min(count, most))]
        for t in window:
            guess[on[t]] = 1.0 if t in chosen else 0.0
        for t, start in layout.deferrable_start.get(load.name, {}).items():
            guess[start] = 1.0 if chosen and t == chosen[0] else 0.0
    return guess


def _read_binaries(model: _Model, x: FloatArray) -> FloatArray | None:
    """Binary values that, with `x`'s continuous part, satisfy every row; None if none do."""
    candidate = x.copy()
    for binary, indicator in model.indicator.items():
        candidate[binary] = 1.0 if x[indicator] > 1e-6 else 0.0
    for start, (on, previous) in model.switch_on.items():
        running = candidate[on] > 1e-6
        running_before = previous is not None and candidate[previous] > 1e-6
        candidate[start] = 1.0 if running and not running_before else 0.0
    index = np.asarray(model.row_index, dtype=np.int64)
    products = np.asarray(model.row_value, dtype=np.float64) * candidate[index]
    activity = np.add.reduceat(products, np.asarray(model.row_start, dtype=np.int64))
    lower = np.asarray(model.row_lower, dtype=np.float64)
    upper = np.asarray(model.row_upper, dtype=np.float64)
    slack = 1e-6 * np.maximum(1.0, np.abs(activity))
    if np.all(activity >= lower - slack) and np.all(activity <= upper + slack):
        return candidate[np.asarray(model.integer, dtype=np.int64)]
    return None


def _solve(
    solver: highspy.Highs,
    model: _Model,
    layout: _Layout,
    problem: DerProblem,
    *,
    time_limit_s: float,
    started: float,
) -> tuple[FloatArray, str, bool, float] | None:
    """(solution, method, optimal, MIP gap), or None if no plan satisfies the constraints."""
    if model.integer:
        solved = _solve_relaxation_first(solver, model, layout, problem)
        if solved is not None:
            return solved
    solver.run()
    status = solver.getModelStatus()
    if status in _INFEASIBLE:
        return None
    info = solver.getInfo()
    if info.primal_solution_status != 2:
        raise SolverFailed(
            f"HiGHS stopped with '{solver.modelStatusToString(status)}' and no plan for site "
            f"{problem.site.name!r} after {time.perf_counter() - started:.1f} s; "
            "raise time_limit_s or shorten the horizon"
        )
    optimal = status == highspy.HighsModelStatus.kOptimal
    mip_gap = float(info.mip_gap) if model.integer and math.isfinite(info.mip_gap) else 0.0
    x = np.asarray(solver.getSolution().col_value, dtype=np.float64)
    return x, "milp" if model.integer else "lp", optimal, mip_gap


def _fixed_lp(
    solver: highspy.Highs, model: _Model, x: FloatArray
) -> tuple[FloatArray, FloatArray] | None:
    """Solution and row duals of the LP left when every binary is fixed at its value in `x`."""
    if model.integer:
        cols = np.asarray(model.integer, dtype=np.int32)
        fixed = np.round(x[cols])
        _set_integrality(solver, model, integer=False)
        solver.changeColsBounds(len(cols), cols, fixed, fixed)
        solver.run()
    solution = solver.getSolution()
    if solver.getModelStatus() != highspy.HighsModelStatus.kOptimal or not solution.dual_valid:
        return None
    return (
        np.asarray(solution.col_value, dtype=np.float64),
        np.asarray(solution.row_dual, dtype=np.float64),
    )


def _values(x: FloatArray, cols: Sequence[int], steps: int) -> tuple[float, ...]:
    if not cols:
        return tuple(0.0 for _ in range(steps))
    return tuple(float(max(0.0, v)) for v in x[np.asarray(cols, dtype=np.int64)])


def _schedule(
    problem: DerProblem,
    layout: _Layout,
    x: FloatArray,
    *,
    method: str,
    optimal: bool,
    mip_gap: float,
    solve_time_s: float,
    marginal: tuple[float, ...] | None,
    battery_value: tuple[float, ...] | None,
) -> DerSchedule:
    steps, battery = problem.steps, problem.site.battery
    import_w = _values(x, layout.imp, steps)
    export_w = _values(x, layout.exp, steps)
    discharge_w = _values(x, layout.discharge, steps)
    deferrable = {}
    for load in problem.deferrable_loads:
        power = layout.deferrable[load.name]
        deferrable[load.name] = tuple(
            float(max(0.0, x[power[t]])) if t in power else 0.0 for t in range(steps)
        )
    below = sum(_values(x, layout.below, steps)) if layout.below else 0.0
    above = sum(_values(x, layout.above, steps)) if layout.above else 0.0
    short = float(x[layout.target_short]) if layout.target_short is not None else 0.0
    short = short if short > TOLERANCE_WH else 0.0
    notes = []
    if short > 0:
        notes.append(f"target SoC missed by {_wh(short)} Wh: the battery cannot get there in time")
    if below + above > 0 and battery is not None:
        notes.append(
            f"SoC started at {problem.initial_soc_fraction:.0%}, outside "
            f"[{battery.soc_min_fraction:.0%}, {battery.soc_max_fraction:.0%}]; "
            "the plan brings it back as fast as the limits allow"
        )
    return DerSchedule(
        method=method,
        step_s=problem.step_s,
        battery_capacity_wh=battery.capacity_wh if battery else 0.0,
        import_w=import_w,
        export_w=export_w,
        charge_w=_values(x, layout.charge, steps),
        discharge_w=discharge_w,
        soc_wh=tuple(float(x[c]) for c in layout.soc) if layout.soc else (0.0,) * steps,
        curtailment_w=_values(x, layout.curt, steps),
        deferrable_w=deferrable,
        cost=grid_cost(problem, import_w, export_w),
        battery_wear_cost=(
            battery.cycle_cost_per_kwh * sum(discharge_w) * problem.step_h / 1000.0
            if battery
            else 0.0
        ),
        penalty=penalty_per_kwh(problem) / 1000.0 * ((below + above) + short),
        target_shortfall_wh=short,
        soc_outside_bounds_wh_steps=below + above,
        marginal_value_per_kwh=marginal,
        battery_value_per_kwh=battery_value,
        optimal=optimal,
        mip_gap=mip_gap,
        solve_time_s=solve_time_s,
        notes=tuple(notes),
    )


def cost_to_go(
    problem: DerProblem, first_step_net_import_w: float, *, time_limit_s: float = 10.0
) -> float | None:
    """The best objective (currency, penalties included) over the horizon with step 0's net
    import pinned to `first_step_net_import_w` and step 0's grid bill left out; None if no plan
    fits. Comparing two pins prices a block of energy traded in step 0 (see orders.py)."""
    model, layout = _build(problem, first_step_net_w=first_step_net_import_w)
    solver = model.highs(time_limit_s=time_limit_s, mip_rel_gap=1e-6)
    solved = _solve(
        solver, model, layout, problem, time_limit_s=time_limit_s, started=time.perf_counter()
    )
    if solved is None:
        return None
    return float(np.dot(np.asarray(model.cost), solved[0])) / OBJECTIVE_SCALE
