"""Promises the optimiser keeps on every random day (small horizons keep this fast)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterchain.der import (
    Battery,
    DeferrableLoad,
    DerProblem,
    DerSchedule,
    InfeasibleProblem,
    Site,
    optimise,
    run_baseline,
)
from meterchain.der.formulation import OBJECTIVE_SCALE, Formulation

TOL = 1e-4
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def batteries(draw: st.DrawFn) -> Battery:
    low = draw(st.floats(0.0, 0.4))
    return Battery(
        capacity_wh=draw(st.floats(1_000, 20_000)),
        max_charge_power_w=draw(st.floats(100, 5_000)),
        max_discharge_power_w=draw(st.floats(100, 5_000)),
        charge_efficiency=draw(st.floats(0.8, 1.0)),
        discharge_efficiency=draw(st.floats(0.8, 1.0)),
        soc_min_fraction=low,
        soc_max_fraction=draw(st.floats(low + 0.1, 1.0)),
        grid_charging=draw(st.booleans()),
        grid_discharging=draw(st.booleans()),
    )


@st.composite
def problems(
    draw: st.DrawFn,
    *,
    start_inside: bool = True,
    awkward_loads: bool = False,
    surplus_loads: bool = False,
) -> DerProblem:
    steps = draw(st.integers(2, 10))
    battery = draw(batteries())
    series = st.lists(st.floats(0, 5_000), min_size=steps, max_size=steps)
    buy = draw(st.lists(st.floats(-0.3, 1.5), min_size=steps, max_size=steps))
    margin = draw(st.lists(st.floats(0.0, 0.5), min_size=steps, max_size=steps))
    sell = [b - m for b, m in zip(buy, margin, strict=True)]
    if start_inside:
        soc = draw(st.floats(battery.soc_min_fraction, battery.soc_max_fraction))
    else:
        soc = draw(
            st.one_of(
                st.floats(0.0, battery.soc_min_fraction), st.floats(battery.soc_max_fraction, 1.0)
            )
        )
    loads = []
    if draw(st.booleans()):
        start = draw(st.integers(0, steps - 1))
        end = draw(st.integers(start + 1, steps))
        power = draw(st.floats(100, 3_000))
        steps_on = draw(st.integers(0, end - start))
        minimum = draw(st.sampled_from([0.0, power / 2, power])) if awkward_loads else 0.0
        loads.append(
            DeferrableLoad(
                "washer",
                # reachable by construction: `steps_on` whole steps between min and max power
                energy_wh=steps_on * 0.25 * draw(st.floats(max(minimum, 1.0), power)),
                start_step=start,
                end_step=end,
                max_power_w=power,
                min_power_w=minimum,
                single_block=awkward_loads and draw(st.booleans()),
                surplus_only=surplus_loads and draw(st.booleans()),
            )
        )
    return DerProblem(
        site=Site("random", battery),
        pv_w=draw(series),
        load_w=draw(series),
        buy_price_per_kwh=buy,
        sell_price_per_kwh=sell,
        initial_soc_fraction=soc,
        deferrable_loads=loads,
    )


def _balance_errors(problem: DerProblem, plan: DerSchedule) -> list[float]:
    errors = []
    for t in range(problem.steps):
        supply = problem.pv_w[t] - plan.curtailment_w[t] + plan.import_w[t] + plan.discharge_w[t]
        demand = (
            problem.load_w[t]
            + plan.export_w[t]
            + plan.charge_w[t]
            + sum(power[t] for power in plan.deferrable_w.values())
        )
        errors.append(abs(supply - demand))
    return errors


@FAST
@given(problems(awkward_loads=True))
def test_soc_never_leaves_its_bounds(problem: DerProblem) -> None:
    battery = problem.site.battery
    assert battery is not None
    plan = optimise(problem)
    for soc in plan.soc_wh:
        assert battery.soc_min_wh - TOL <= soc <= battery.soc_max_wh + TOL


@FAST
@given(problems(start_inside=False))
def test_soc_starting_outside_its_bounds_never_moves_further_out(problem: DerProblem) -> None:
    battery = problem.site.battery
    assert battery is not None
    plan = optimise(problem)
    start = problem.initial_soc_wh
    for soc in plan.soc_wh:
        assert min(start, battery.soc_min_wh) - TOL <= soc <= max(start, battery.soc_max_wh) + TOL


@FAST
@given(problems(awkward_loads=True))
def test_battery_never_charges_and_discharges_at_once(problem: DerProblem) -> None:
    plan = optimise(problem)
    for charge, discharge in zip(plan.charge_w, plan.discharge_w, strict=True):
        assert min(charge, discharge) <= TOL


@FAST
@given(problems(awkward_loads=True))
def test_energy_balances_in_every_step(problem: DerProblem) -> None:
    plan = optimise(problem)
    assert max(_balance_errors(problem, plan)) <= 1e-3


@FAST
@given(problems())
def test_soc_follows_the_charge_and_discharge_with_their_efficiencies(problem: DerProblem) -> None:
    battery = problem.site.battery
    assert battery is not None
    plan = optimise(problem)
    soc = problem.initial_soc_wh
    for t in range(problem.steps):
        soc += problem.step_h * (
            battery.charge_efficiency * plan.charge_w[t]
            - plan.discharge_w[t] / battery.discharge_efficiency
        )
        assert abs(soc - plan.soc_wh[t]) <= 1e-3


@FAST
@given(problems(awkward_loads=True, surplus_loads=True))
def test_deferrable_load_gets_its_energy_inside_its_window_as_its_rules_say(
    problem: DerProblem,
) -> None:
    try:
        plan = optimise(problem)
    except InfeasibleProblem:
        return  # e.g. a surplus-only load without the sun; test_der_infeasible covers those
    for load in problem.deferrable_loads:
        power = plan.deferrable_w[load.name]
        assert sum(power) * problem.step_h == pytest.approx(load.energy_wh, abs=1e-3)
        assert all(p <= TOL for t, p in enumerate(power) if t not in load.window)
        assert all(p <= TOL or load.min_power_w - TOL <= p <= load.max_power_w + TOL for p in power)
        running = [t for t, p in enumerate(power) if p > TOL]
        if load.single_block and running:
            assert running == list(range(running[0], running[-1] + 1))
        if load.surplus_only:
            for t in running:
                surplus = max(0.0, problem.pv_w[t] - problem.load_w[t])
                assert power[t] <= surplus - plan.curtailment_w[t] + TOL


@FAST
@given(problems(awkward_loads=True, surplus_loads=True))
def test_lp_shortcuts_find_the_same_optimum_as_branch_and_bound(problem: DerProblem) -> None:
    try:
        plan = optimise(problem)
    except InfeasibleProblem:
        return
    formulation = Formulation(problem)
    values = formulation.values(problem)
    solver = formulation.milp.highs(values, time_limit_s=10.0, mip_rel_gap=1e-9)
    solver.run()
    best = solver.getInfo().objective_function_value / OBJECTIVE_SCALE
    assert plan.objective == pytest.approx(best, rel=1e-6, abs=1e-6)


@FAST
@given(problems())
def test_optimiser_never_costs_more_than_the_rule_based_baseline(problem: DerProblem) -> None:
    plan = optimise(problem)
    baseline = run_baseline(problem)
    scale = sum(abs(p) for p in problem.buy_price_per_kwh) + 1.0
    assert plan.cost <= baseline.cost + 1e-6 * scale + 1e-6


@FAST
@given(problems(awkward_loads=True, surplus_loads=True))
def test_the_independent_evaluator_finds_every_plan_feasible_at_the_cost_it_claims(
    problem: DerProblem,
) -> None:
    from meterchain.der.evaluate import PlanFlows, evaluate

    try:
        plan = optimise(problem)
    except InfeasibleProblem:
        return
    checked = evaluate(problem, PlanFlows.of(plan))
    assert checked.feasible, checked.violations
    assert checked.cost == pytest.approx(plan.objective - plan.penalty, rel=1e-6, abs=1e-6)
