"""A board's [site.der] configuration becomes the problem its planner solves."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from meterchain.agents.messages import TariffNotice
from meterchain.agents.planning import DerPlanner
from meterchain.config import DerConfig
from meterchain.der.site import Site

MIDNIGHT = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)  # 00:00 in Fortaleza, a Tuesday
TARIFFS = TariffNotice(retail_price=0.95, feed_in_price=0.25)

BOARD_DER = """
end_soc = 0.4
[[batteries]]
name = "wall"
capacity_kwh = 10
charge_kw = 5
discharge_kw = 5
cell_price_per_kwh = 2400
ramp_limit_kw_per_h = 4
taper_soc = 0.85

[[deferrable_loads]]
name = "ev"
energy_kwh = 7
earliest = "18:00"
latest = "24:00"
max_power_kw = 7
min_power_kw = 1.4

[[deferrable_loads]]
name = "washer"
energy_kwh = 0.775
earliest = "08:00"
latest = "18:00"
max_power_kw = 2
program_kw = [2.0, 0.3, 0.3, 0.5]

[tarifa_branca]
off_peak_per_kwh = 0.56
intermediate_per_kwh = 0.88
peak_per_kwh = 1.44

[[limit_windows]]
start = "17:00"
end = "21:00"
import_limit_kw = 6

[[soc_targets]]
at = "17:30"
soc = 0.9
"""


def planner() -> DerPlanner:
    config = DerConfig.model_validate(tomllib.loads(BOARD_DER))
    return DerPlanner(
        Site("board"),
        lambda _start, steps: ([0.0] * steps, [500.0] * steps),
        meter_id="m1",
        equipment=config,
    )


def test_the_board_section_gives_the_battery_the_tariff_the_limits_and_the_targets() -> None:
    problem = planner().problem(MIDNIGHT, TARIFFS, 0.5)
    battery = problem.site.battery
    assert battery is not None and battery.name == "wall"
    assert battery.wear_cost_per_kwh == pytest.approx(2400 / (2 * 6000 * 0.85))
    assert battery.ramp_limit_w_per_h == 4000 and battery.taper_soc_fraction == 0.85
    assert problem.buy_price_per_kwh[4 * 10] == 0.56
    assert problem.buy_price_per_kwh[4 * 18] == 1.44  # 18:00-18:15 is in the ponta post
    assert problem.import_limit_w is not None
    assert problem.import_limit_w[4 * 18] == 6000 and problem.import_limit_w[0] > 1e9
    assert [(t.step, t.soc_fraction) for t in problem.soc_targets] == [(4 * 17 + 1, 0.9)]
    assert problem.target_soc_fraction == 0.4


def test_daily_loads_appear_in_their_windows_and_shrink_with_what_they_got() -> None:
    board = planner()
    problem = board.problem(MIDNIGHT, TARIFFS, 0.5)
    loads = {load.name: load for load in problem.deferrable_loads}
    assert (loads["ev"].start_step, loads["ev"].end_step) == (72, 96)
    assert (loads["washer"].start_step, loads["washer"].end_step) == (32, 72)
    # at 18:00 the EV draws 7 kW for a quarter hour: 1.75 kWh fewer still needed
    evening = MIDNIGHT + timedelta(hours=18)
    board.daily.record(evening, {"ev": 7_000.0})  # type: ignore[union-attr]
    later = board.problem(evening + timedelta(minutes=15), TARIFFS, 0.5)
    ev = next(load for load in later.deferrable_loads if load.name == "ev")
    assert ev.energy_wh == pytest.approx(7_000 - 1_750)
    assert ev.state.running


async def test_a_board_plans_its_day_with_the_section() -> None:
    board = planner()
    plan = await board.plan_async(MIDNIGHT, TARIFFS, 0.5, MIDNIGHT)
    assert plan.battery_power_w is not None
    assert set(plan.deferrable_power_w) == {"ev", "washer"}


def test_a_time_of_day_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValidationError, match="'25:00' is not a time of day"):
        DerConfig.model_validate(
            {
                "deferrable_loads": [
                    {"name": "ev", "energy_kwh": 7, "max_power_kw": 7, "earliest": "25:00"}
                ]
            }
        )


def test_two_tariffs_at_once_are_refused() -> None:
    branca = {"off_peak_per_kwh": 0.5, "intermediate_per_kwh": 0.8, "peak_per_kwh": 1.4}
    group_a = {
        "energy_peak_per_kwh": 2,
        "energy_off_peak_per_kwh": 0.4,
        "demand_per_kw": 30,
        "contracted_kw": 50,
    }
    with pytest.raises(ValidationError, match="either tarifa_branca"):
        DerConfig.model_validate({"tarifa_branca": branca, "group_a": group_a})


def test_group_a_gives_the_month_its_demand_charge() -> None:
    config = DerConfig.model_validate(
        {
            "group_a": {
                "energy_peak_per_kwh": 2.1,
                "energy_off_peak_per_kwh": 0.45,
                "demand_per_kw": 30.0,
                "contracted_kw": 50.0,
            }
        }
    )
    board = DerPlanner(
        Site("shop"), lambda _s, n: ([0.0] * n, [10_000.0] * n), meter_id="m2", equipment=config
    )
    problem = board.problem(MIDNIGHT, TARIFFS, None)
    assert [c.contracted_kw for c in problem.demand_charges] == [50.0]
    assert problem.buy_price_per_kwh[4 * 19] == 2.1
