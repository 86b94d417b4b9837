"""Deferrable loads as appliances behave: programs with a shape, minimum on and off times,
start-up costs, a cap on starts, a price of their own, and a state carried between plans."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterchain.der import DeferrableLoad, DerProblem, InfeasibleProblem, Site, optimise
from meterchain.der.evaluate import PlanFlows, evaluate
from meterchain.der.site import InvalidSite, LoadState

QUARTER_S = 900


def day(
    loads: list[DeferrableLoad], *, buy: list[float] | None = None, steps: int = 16
) -> DerProblem:
    prices = buy if buy is not None else [0.8] * steps
    return DerProblem(
        site=Site("house"),
        pv_w=[0.0] * steps,
        load_w=[200.0] * steps,
        buy_price_per_kwh=prices,
        sell_price_per_kwh=[0.1] * steps,
        deferrable_loads=loads,
        step_s=QUARTER_S,
    )


def test_a_washing_machine_program_runs_whole_with_its_shape_where_energy_is_cheapest() -> None:
    # heat (2 kW), wash (300 W), spin (500 W): 15-minute steps
    program = [2_000.0, 300.0, 300.0, 500.0]
    energy = sum(program) * 0.25
    washer = DeferrableLoad("washer", energy, 0, 16, 2_000.0, power_profile_w=program)
    buy = [0.9] * 16
    buy[9] = 0.3  # a cheap quarter hour: the heating step should land on it
    plan = optimise(day([washer], buy=buy))
    power = plan.deferrable_w["washer"]
    assert power[9:13] == pytest.approx(program, abs=1e-6)
    assert sum(power) * 0.25 == pytest.approx(energy)
    assert evaluate(day([washer], buy=buy), PlanFlows.of(plan)).feasible


def test_a_program_energy_that_does_not_match_its_shape_is_refused_with_the_right_value() -> None:
    washer = DeferrableLoad("washer", 999.0, 0, 16, 2_000.0, power_profile_w=[2_000.0, 500.0])
    with pytest.raises(InvalidSite, match="set energy_wh to 625"):
        day([washer])


def test_a_program_that_does_not_fit_its_window_is_explained() -> None:
    washer = DeferrableLoad(
        "washer", 1_000.0, 2, 4, 2_000.0, power_profile_w=[2_000.0] * 2 + [0.0] * 2
    )
    with pytest.raises(InfeasibleProblem, match="4-step program but its window"):
        optimise(day([washer]))


def test_minimum_on_time_keeps_a_pump_running_once_started() -> None:
    # the cheap steps are scattered; without the rule the pump would hop between them
    buy = [0.9, 0.2, 0.9, 0.2, 0.9, 0.2, 0.9, 0.9] * 2
    pump = DeferrableLoad("pump", 1_000.0, 0, 16, 1_000.0, min_power_w=1_000.0, min_on_steps=4)
    plan = optimise(day([pump], buy=buy))
    running = [p > 1 for p in plan.deferrable_w["pump"]]
    runs = "".join("1" if r else "0" for r in running).strip("0").split("0")
    assert all(len(run) >= 4 for run in runs if run)
    assert evaluate(day([pump], buy=buy), PlanFlows.of(plan)).feasible


def test_minimum_off_time_keeps_a_compressor_off_after_it_stops() -> None:
    buy = [0.2, 0.9, 0.2, 0.9, 0.2, 0.9, 0.2, 0.9] * 2
    fridge = DeferrableLoad("freezer", 500.0, 0, 16, 500.0, min_power_w=500.0, min_off_steps=3)
    plan = optimise(day([fridge], buy=buy))
    assert evaluate(day([fridge], buy=buy), PlanFlows.of(plan)).feasible
    running = [p > 1 for p in plan.deferrable_w["freezer"]]
    stops = [t for t in range(1, 16) if running[t - 1] and not running[t]]
    for stop in stops:
        assert not any(running[stop : stop + 3])


def test_start_up_cost_makes_one_long_run_cheaper_than_many_short_ones() -> None:
    buy = [0.2, 0.5, 0.2, 0.5, 0.2, 0.5, 0.2, 0.5] * 2
    free = DeferrableLoad("heater", 2_000.0, 0, 16, 1_000.0, min_power_w=1_000.0)
    costly = DeferrableLoad(
        "heater", 2_000.0, 0, 16, 1_000.0, min_power_w=1_000.0, startup_cost=0.5
    )

    def starts(load: DeferrableLoad) -> int:
        power = optimise(day([load], buy=buy)).deferrable_w["heater"]
        return sum(1 for t in range(16) if power[t] > 1 and (t == 0 or power[t - 1] <= 1))

    assert starts(free) == 8
    assert starts(costly) == 1
    plan = optimise(day([costly], buy=buy))
    assert plan.startup_cost == pytest.approx(0.5)


def test_maximum_starts_counts_the_starts_already_made() -> None:
    buy = [0.2, 0.9] * 8
    pump = DeferrableLoad(
        "pump",
        1_000.0,
        0,
        16,
        1_000.0,
        min_power_w=1_000.0,
        max_starts=3,
        state=LoadState(on_steps=0, off_steps=5, starts_made=1),
    )
    plan = optimise(day([pump], buy=buy))
    power = plan.deferrable_w["pump"]
    starts = sum(1 for t in range(16) if power[t] > 1 and (t == 0 or power[t - 1] <= 1))
    assert starts <= 2
    assert evaluate(day([pump], buy=buy), PlanFlows.of(plan)).feasible


def test_a_load_with_its_own_price_is_served_more_when_that_price_pays() -> None:
    # an EV charger that bills its guest 1.20 per kWh: worth charging up to its maximum when
    # the grid costs 0.80, only the minimum when it costs more than the bill
    def charged(bill: float) -> float:
        ev = DeferrableLoad(
            "guest-ev", 8_000.0, 0, 16, 4_000.0, min_energy_wh=2_000.0, price_per_kwh=-bill
        )
        return sum(optimise(day([ev])).deferrable_w["guest-ev"]) * 0.25

    assert charged(1.20) == pytest.approx(8_000.0)
    assert charged(0.50) == pytest.approx(2_000.0)


def test_a_running_program_is_pinned_and_finishes_its_shape() -> None:
    program = [2_000.0, 300.0, 300.0, 500.0]
    running = DeferrableLoad(
        "washer",
        sum(program[2:]) * 0.25,
        0,
        16,
        2_000.0,
        power_profile_w=program,
        state=LoadState(on_steps=2, off_steps=0, program_step=2),
    )
    plan = optimise(day([running], buy=[2.0] * 4 + [0.1] * 12))
    assert plan.deferrable_w["washer"][:3] == pytest.approx([300.0, 500.0, 0.0])


def test_a_load_inside_its_minimum_on_time_stays_on_even_when_energy_is_dear() -> None:
    pump = DeferrableLoad(
        "pump",
        1_000.0,
        0,
        16,
        1_000.0,
        min_power_w=1_000.0,
        min_on_steps=4,
        state=LoadState(on_steps=1, off_steps=0),
    )
    plan = optimise(day([pump], buy=[5.0] * 8 + [0.1] * 8))
    assert plan.deferrable_w["pump"][:3] == pytest.approx([1_000.0] * 3)


@st.composite
def appliance_days(draw: st.DrawFn) -> DerProblem:
    steps = 12
    buy = draw(st.lists(st.floats(0.1, 1.5), min_size=steps, max_size=steps))
    power = draw(st.floats(300, 2_000))
    on_steps = draw(st.integers(1, 4))
    loads = [
        DeferrableLoad(
            "pump",
            energy_wh=on_steps * power * 0.25,
            start_step=0,
            end_step=steps,
            max_power_w=power,
            min_power_w=power,
            min_on_steps=draw(st.integers(1, 3)),
            min_off_steps=draw(st.integers(1, 3)),
            startup_cost=draw(st.sampled_from([0.0, 0.2])),
            max_starts=draw(st.sampled_from([None, 2, 4])),
        )
    ]
    if draw(st.booleans()):
        shape = draw(st.lists(st.floats(100, 2_000), min_size=1, max_size=4))
        start = draw(st.integers(0, steps - len(shape)))
        loads.append(
            DeferrableLoad(
                "washer", sum(shape) * 0.25, start, steps, 2_000.0, power_profile_w=shape
            )
        )
    return DerProblem(
        site=Site("house"),
        pv_w=[0.0] * steps,
        load_w=[100.0] * steps,
        buy_price_per_kwh=buy,
        sell_price_per_kwh=[0.0] * steps,
        deferrable_loads=loads,
        step_s=QUARTER_S,
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(appliance_days())
def test_every_appliance_plan_keeps_every_rule_and_costs_what_the_evaluator_says(
    problem: DerProblem,
) -> None:
    try:
        plan = optimise(problem)
    except InfeasibleProblem:
        return  # e.g. more runs needed than max_starts allows at min_on_steps
    checked = evaluate(problem, PlanFlows.of(plan))
    assert checked.feasible, checked.violations
    assert checked.cost == pytest.approx(plan.objective - plan.penalty, abs=1e-6)
