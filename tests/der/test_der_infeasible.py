"""An impossible plan is refused with the constraint that cannot be met, never just 'infeasible'."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterchain.der import (
    Battery,
    DeferrableLoad,
    DerProblem,
    InfeasibleProblem,
    Site,
    SolverFailed,
    optimise,
)

STEPS = 48


def problem(
    site: Site,
    *,
    pv: list[float] | None = None,
    load: list[float] | None = None,
    steps: int = STEPS,
    **extra: object,
) -> DerProblem:
    return DerProblem(
        site=site,
        pv_w=pv if pv is not None else [0.0] * steps,
        load_w=load if load is not None else [0.0] * steps,
        buy_price_per_kwh=[0.5] * steps,
        sell_price_per_kwh=[0.2] * steps,
        **extra,  # type: ignore[arg-type]
    )


def refusal(plan_problem: DerProblem) -> str:
    with pytest.raises(InfeasibleProblem) as caught:
        optimise(plan_problem)
    return str(caught.value)


def test_deferrable_load_that_does_not_fit_under_the_import_limit_is_named() -> None:
    washer = DeferrableLoad(
        "washer", energy_wh=3_000, start_step=40, end_step=44, max_power_w=3_000
    )
    message = refusal(problem(Site("house", import_limit_w=1_500), deferrable_loads=[washer]))
    assert (
        "deferrable load 'washer' needs 3000 Wh in steps [40, 44) but at most 1500 Wh fits "
        "under the 1500 W import limit" in message
    )


def test_deferrable_load_that_does_not_fit_at_its_own_maximum_power_is_named() -> None:
    heater = DeferrableLoad("heater", energy_wh=5_000, start_step=0, end_step=4, max_power_w=2_000)
    message = refusal(problem(Site("house"), deferrable_loads=[heater]))
    assert (
        "'heater' needs 5000 Wh in steps [0, 4) but at most 2000 Wh fits at its 2000 W" in message
    )


def test_surplus_only_load_without_enough_sun_is_named() -> None:
    pump = DeferrableLoad(
        "pool", energy_wh=2_000, start_step=0, end_step=8, max_power_w=1_000, surplus_only=True
    )
    pv = [1_000.0] * 8 + [0.0] * (STEPS - 8)
    load = [500.0] * STEPS
    message = refusal(problem(Site("house"), pv=pv, load=load, deferrable_loads=[pump]))
    assert "'pool' needs 2000 Wh in steps [0, 8) from PV surplus only" in message
    assert "allows at most 1000 Wh" in message


def test_semi_continuous_load_with_an_unreachable_energy_is_named() -> None:
    kettle = DeferrableLoad(
        "boiler", energy_wh=1_100, start_step=0, end_step=8, max_power_w=2_000, min_power_w=2_000
    )
    message = refusal(problem(Site("house"), deferrable_loads=[kettle]))
    assert "'boiler' needs 1100 Wh" in message
    assert "between 500 and 500 Wh" in message


def test_base_load_above_the_import_limit_is_named_with_its_steps() -> None:
    load = [500.0] * STEPS
    load[10:13] = [4_000.0] * 3
    message = refusal(problem(Site("house", import_limit_w=3_000), load=load))
    assert "the base load cannot be supplied in steps [10, 13)" in message
    assert "3000 W import limit" in message


def test_pv_that_cannot_go_anywhere_is_named() -> None:
    pv = [0.0] * STEPS
    pv[20:24] = [5_000.0] * 4
    site = Site("house", pv_curtailable=False, export_limit_w=0)
    message = refusal(problem(site, pv=pv, load=[300.0] * STEPS))
    assert "the PV in steps [20, 24) cannot go anywhere" in message
    assert "make the PV curtailable or raise the export limit" in message


def test_battery_without_the_energy_to_bridge_a_peak_is_found_by_the_slack_diagnosis() -> None:
    battery = Battery(10_000, 2_000, 2_000, 0.95, 0.95, 0.1, 0.9)
    site = Site("house", battery, import_limit_w=1_000)
    message = refusal(
        problem(
            site,
            steps=3,
            load=[200, 200, 2_500],
            initial_soc_fraction=0.1,
            step_s=3600,
        )
    )
    assert "the site cannot cover its demand in step 2" in message
    assert "Wh short under the 1000 W import limit" in message


def test_deferrable_load_short_of_stored_energy_is_found_by_the_slack_diagnosis() -> None:
    battery = Battery(10_000, 3_000, 3_000, 0.95, 0.95, 0.1, 0.9)
    site = Site("house", battery, import_limit_w=1_000)
    oven = DeferrableLoad("oven", energy_wh=3_000, start_step=1, end_step=2, max_power_w=3_000)
    message = refusal(
        problem(
            site,
            steps=2,
            initial_soc_fraction=0.1,
            deferrable_loads=[oven],
            step_s=3600,
        )
    )
    assert "deferrable load 'oven' needs 3000 Wh in steps [1, 2) but at most" in message
    assert "can be delivered there" in message


def test_strict_target_out_of_reach_is_named() -> None:
    battery = Battery(10_000, 1_000, 1_000, 0.95, 0.95, 0.1, 0.9)
    message = refusal(
        problem(
            Site("house", battery),
            steps=4,
            initial_soc_fraction=0.1,
            target_soc_fraction=0.9,
            strict_target=True,
        )
    )
    assert "cannot reach the target SoC of 90%" in message


@st.composite
def tight_problems(draw: st.DrawFn) -> DerProblem:
    steps = draw(st.integers(2, 8))
    watts = st.lists(st.floats(0, 4_000), min_size=steps, max_size=steps)
    battery = Battery(
        capacity_wh=draw(st.floats(500, 5_000)),
        max_charge_power_w=draw(st.floats(0, 2_000)),
        max_discharge_power_w=draw(st.floats(0, 2_000)),
    )
    start = draw(st.integers(0, steps - 1))
    power = draw(st.floats(500, 4_000))
    loads = [
        DeferrableLoad(
            "ev",
            energy_wh=draw(st.one_of(st.floats(0, 4_000), st.sampled_from([power / 4, power]))),
            start_step=start,
            end_step=draw(st.integers(start + 1, steps)),
            max_power_w=power,
            min_power_w=draw(st.sampled_from([0.0, 500.0, power])),
            surplus_only=draw(st.booleans()),
            single_block=draw(st.booleans()),
        )
    ]
    return DerProblem(
        site=Site(
            "tight",
            battery,
            pv_curtailable=draw(st.booleans()),
            import_limit_w=draw(st.floats(0, 3_000)),
            export_limit_w=draw(st.floats(0, 3_000)),
        ),
        pv_w=draw(watts),
        load_w=draw(watts),
        buy_price_per_kwh=[0.5] * steps,
        sell_price_per_kwh=[0.2] * steps,
        initial_soc_fraction=draw(st.floats(0, 1)),
        deferrable_loads=loads,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tight_problems())
def test_every_refusal_names_a_constraint(plan_problem: DerProblem) -> None:
    try:
        plan = optimise(plan_problem)
    except InfeasibleProblem as refused:
        assert refused.violations
        assert not any("did not locate the cause" in v for v in refused.violations)
        return
    site = plan_problem.site
    assert site.import_limit_w is not None and site.export_limit_w is not None
    assert max(plan.import_w) <= site.import_limit_w + 1e-4
    assert max(plan.export_w) <= site.export_limit_w + 1e-4


def test_a_load_of_almost_no_energy_plans_without_dividing_by_zero() -> None:
    # Hypothesis found it: ceil(energy / (max power × step)) is 0 for 1e-308 Wh, the relaxed
    # plan ran the load at no step, and the warm-start guess divided the energy by zero steps.
    tiny = DeferrableLoad("ev", 1e-308, 0, 1, 500, min_power_w=500)
    site = Site("tight", Battery(500, 1, 1), import_limit_w=0, export_limit_w=0)
    refusal = DerProblem(
        site=site, pv_w=[0.0] * 3, load_w=[0.0] * 3, buy_price_per_kwh=[0.5] * 3,
        sell_price_per_kwh=[0.2] * 3, initial_soc_fraction=1.0, deferrable_loads=[tiny],
    )  # fmt: skip
    try:
        plan = optimise(refusal)
    except InfeasibleProblem as refused:  # a clear refusal is fine; a ZeroDivisionError not
        assert refused.violations
    else:
        assert len(plan.import_w) == 3


def test_solver_out_of_time_says_so_and_what_to_change() -> None:
    # a load to serve and a washer to place: doing nothing is not a plan
    washer = DeferrableLoad("washer", 1_500, 0, 4, 1_500, min_power_w=1_500)
    plan_problem = problem(
        Site("house", Battery(10_000, 2_000, 2_000)),
        steps=4,
        load=[500.0] * 4,
        deferrable_loads=[washer],
    )
    with pytest.raises(SolverFailed, match=r"Time limit reached.*raise time_limit_s"):
        optimise(plan_problem, time_limit_s=0.0)
