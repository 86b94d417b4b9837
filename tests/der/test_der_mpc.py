"""Receding horizon: one kept model re-planned every interval gives the cold optimum, keeps the
loads that run pinned, and prices pinned first steps without building a model."""

from __future__ import annotations

import math
import random

import pytest

from meterchain.der import Battery, DeferrableLoad, DerProblem, Site, optimise
from meterchain.der.evaluate import PlanFlows, evaluate
from meterchain.der.mpc import RecedingHorizon, advance_load
from meterchain.der.optimiser import cost_to_go
from meterchain.der.site import ThermalLoad

STEPS = 24
STEP_S = 1800


def outdoor(hour: float) -> float:
    return 27.0 + 3.5 * math.sin((hour - 9.0) / 24 * 2 * math.pi)


def horizon(
    first: int,
    loads: list[DeferrableLoad],
    room_c: float,
    soc: float,
    rng: random.Random,
) -> DerProblem:
    """The horizon that starts `first` half-hours into a day of a Fortaleza house, with a
    forecast that is a little wrong every time (as a board's would be)."""
    hours = [((first + k) * 0.5) % 24 for k in range(STEPS)]
    pv = [max(0.0, 4_000 * math.sin((h - 6) / 12 * math.pi)) * rng.uniform(0.8, 1.0) for h in hours]
    load = [500.0 + 700.0 * (18 <= h < 22) + rng.uniform(-50, 50) for h in hours]
    buy = [1.44 if 17.5 <= h < 20.5 else 0.88 if 16.5 <= h < 21.5 else 0.56 for h in hours]
    ac = ThermalLoad(
        name="ac",
        max_power_w=1_200.0,
        capacitance_wh_per_k=3_000.0,
        resistance_k_per_w=0.01,
        initial_c=room_c,
        outdoor_c=[outdoor(h) + rng.uniform(-0.5, 0.5) for h in hours],
        comfort_min_c=[22.0] * STEPS,
        comfort_max_c=[26.0 if (h >= 18 or h < 7) else 28.0 for h in hours],
        heat_gain_w=[300.0] * STEPS,
    )
    return DerProblem(
        site=Site("house", Battery(8_000, 3_000, 3_000)),
        pv_w=pv,
        load_w=load,
        buy_price_per_kwh=buy,
        sell_price_per_kwh=[0.25] * STEPS,
        initial_soc_fraction=soc,
        target_soc_fraction=0.5,
        deferrable_loads=loads,
        thermal_loads=[ac],
        step_s=STEP_S,
    )


def starting_loads() -> list[DeferrableLoad]:
    ev = DeferrableLoad("ev", 6_000.0, 0, STEPS, 3_600.0, min_power_w=1_400.0)
    washer = DeferrableLoad(
        "washer", 1_300.0, 0, STEPS, 2_000.0, power_profile_w=[2_000.0, 300.0, 300.0]
    )
    return [ev, washer]


def test_warm_re_plans_reach_the_cold_optimum_with_one_model_and_pinned_loads() -> None:
    rng = random.Random(12)
    mpc = RecedingHorizon()
    loads = starting_loads()
    room, soc = 27.0, 0.5
    program_seen: list[float] = []
    for first in range(12):
        problem = horizon(first, loads, room, soc, rng)
        warm = mpc.plan(problem)
        cold = optimise(problem)
        assert warm.objective == pytest.approx(cold.objective, rel=1e-6, abs=1e-6)
        assert evaluate(problem, PlanFlows.of(warm)).feasible
        # act on the first step, measure, move on
        step = warm.next_interval()
        room = warm.temperature_c["ac"][0]
        soc = warm.soc_fraction[0]
        next_loads = []
        for load in loads:
            drew = step.deferrable_power_w[load.name]
            if load.name == "washer":
                program_seen.append(drew)
            moved = advance_load(load, drew, problem.step_h)
            if moved is not None:
                next_loads.append(moved)
        if [x.name for x in next_loads] != [x.name for x in loads]:
            mpc.model = None  # a finished load changes the model's shape: counted as a build
        loads = next_loads
    assert mpc.replans >= 8
    # once the washer started, its program ran on, step after step, whole
    started = [p for p in program_seen if p > 0]
    if started:
        assert started == pytest.approx([2_000.0, 300.0, 300.0][: len(started)])


def test_a_new_shape_builds_a_new_model() -> None:
    rng = random.Random(3)
    mpc = RecedingHorizon()
    mpc.plan(horizon(0, starting_loads(), 26.0, 0.5, rng))
    mpc.plan(horizon(1, starting_loads(), 26.0, 0.5, rng))
    assert (mpc.builds, mpc.replans) == (1, 1)
    mpc.plan(horizon(2, starting_loads()[:1], 26.0, 0.5, rng))
    assert mpc.builds == 2


def test_pinned_first_step_prices_match_the_cold_model_and_leave_the_kept_one_intact() -> None:
    rng = random.Random(5)
    problem = horizon(10, starting_loads(), 26.5, 0.6, rng)
    mpc = RecedingHorizon()
    plan = mpc.plan(problem)
    net = plan.import_w[0] - plan.export_w[0]
    for pin in (net, net + 1_000.0, net - 1_000.0):
        warm = mpc.cost_to_go(problem, pin)
        cold = cost_to_go(problem, pin)
        assert warm == pytest.approx(cold, rel=1e-6, abs=1e-6)
    again = mpc.plan(problem)
    assert again.objective == pytest.approx(plan.objective, rel=1e-9, abs=1e-9)


def test_advancing_a_program_keeps_its_shape_and_ends_it() -> None:
    washer = DeferrableLoad(
        "washer", 1_300.0, 4, 10, 2_000.0, power_profile_w=[2_000.0, 300.0, 300.0]
    )
    waiting = advance_load(washer, 0.0, 0.5)
    assert waiting is not None and (waiting.start_step, waiting.end_step) == (3, 9)
    started = advance_load(waiting, 2_000.0, 0.5)
    assert started is not None
    assert started.state.program_step == 1 and started.start_step == 0
    assert started.energy_wh == pytest.approx(300.0)
    last = advance_load(started, 300.0, 0.5)
    assert last is not None and last.state.program_step == 2
    assert advance_load(last, 300.0, 0.5) is None


def test_a_load_whose_window_has_passed_is_dropped() -> None:
    pump = DeferrableLoad("pump", 500.0, 0, 1, 1_000.0)
    assert advance_load(pump, 1_000.0, 0.5) is None
