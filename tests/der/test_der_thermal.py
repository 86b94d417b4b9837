"""Thermal loads: an air conditioner that pre-cools before the peak, a COP that follows the
outdoor temperature, a comfort band that holds, and an electric water heater."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from meterchain.der import DerProblem, Site, optimise
from meterchain.der.evaluate import PlanFlows, evaluate
from meterchain.der.site import InvalidSite, ThermalLoad
from meterchain.der.tariffs import TarifaBranca
from meterchain.der.thermal import cop, next_temperature_c, power_to_reach_w, temperatures_c
from meterchain.der.weather import typical_outdoor_c

FORTALEZA = timezone(timedelta(hours=-3))
AFTERNOON = datetime(2026, 11, 24, 14, 0, tzinfo=FORTALEZA)  # a Tuesday
STEPS = 36  # 14:00 to 23:00 in quarter hours
BRANCA = TarifaBranca(off_peak_per_kwh=0.56, intermediate_per_kwh=0.88, peak_per_kwh=1.44)


def bedroom_ac(*, comfort_max: float = 26.0, **changes: object) -> ThermalLoad:
    """A 12,000 BTU/h split (≈1.1 kW electric) cooling a bedroom of a Fortaleza house."""
    values: dict[str, object] = {
        "name": "ac",
        "max_power_w": 1_100.0,
        "capacitance_wh_per_k": 2_500.0,  # air, furniture and some of the walls
        "resistance_k_per_w": 0.012,  # ≈ 85 W/K to the outside
        "initial_c": 27.0,
        "outdoor_c": typical_outdoor_c(AFTERNOON, STEPS, 900),
        "comfort_min_c": [22.0] * STEPS,
        "comfort_max_c": [comfort_max] * STEPS,
        "heat_gain_w": [250.0] * STEPS,
    }
    values.update(changes)
    return ThermalLoad(**values)  # type: ignore[arg-type]


def evening(thermal: ThermalLoad, prices: tuple[float, ...] | list[float]) -> DerProblem:
    return DerProblem(
        site=Site("house"),
        pv_w=[0.0] * STEPS,
        load_w=[300.0] * STEPS,
        buy_price_per_kwh=prices,
        sell_price_per_kwh=[0.0] * STEPS,
        thermal_loads=[thermal],
        step_s=900,
    )


def test_ac_pre_cools_before_the_peak_and_spends_less_than_following_a_thermostat() -> None:
    prices = BRANCA.prices(AFTERNOON, STEPS, 900)
    ac = bedroom_ac(initial_c=26.0)
    problem = evening(ac, prices)
    plan = optimise(problem)
    temperature = plan.temperature_c["ac"]
    peak = [t for t in range(STEPS) if prices[t] == BRANCA.peak_per_kwh]
    before = [t for t in range(STEPS) if t < peak[0] and prices[t] < BRANCA.intermediate_per_kwh]
    # colder than the band asks just before the dear hours: energy stored as coolness
    assert min(temperature[t] for t in before[-4:]) < 26.0 - 0.5
    # and the comfort band holds all evening
    assert max(temperature) <= 26.0 + 1e-6
    thermostat = [0.0] * STEPS
    room = 26.0
    outdoor = ac.outdoor_c
    for t in range(STEPS):
        thermostat[t] = power_to_reach_w(
            ac, room, 26.0, outdoor_c=outdoor[t], gain_w=250.0, step_h=0.25
        )
        room = next_temperature_c(
            ac,
            room,
            outdoor_c=outdoor[t],
            gain_w=250.0,
            power_w=thermostat[t],
            step_h=0.25,
        )
    planned = evaluate(problem, PlanFlows.of(plan))
    followed = evaluate(
        problem,
        PlanFlows(
            import_w=[300 + p for p in thermostat],
            export_w=[0.0] * STEPS,
            thermal_w={"ac": thermostat},
        ),
    )
    assert planned.feasible and followed.feasible
    assert planned.discomfort_k_h == pytest.approx(0.0, abs=1e-6)
    assert followed.discomfort_k_h == pytest.approx(0.0, abs=1e-3)
    assert planned.energy_cost < followed.energy_cost - 0.05


def test_the_plans_temperatures_are_the_physics_of_its_powers() -> None:
    ac = bedroom_ac()
    plan = optimise(evening(ac, [0.8] * STEPS))
    simulated = temperatures_c(ac, plan.thermal_w["ac"], 0.25)
    assert plan.temperature_c["ac"] == pytest.approx(simulated, abs=1e-6)


def test_cop_falls_as_the_outdoor_temperature_rises() -> None:
    ac = bedroom_ac()
    assert cop(ac, 35.0) == pytest.approx(3.2)
    assert cop(ac, 25.0) > cop(ac, 30.0) > cop(ac, 35.0)
    assert cop(ac, 200.0) == ac.cop_min


def test_at_flat_prices_the_ac_cools_when_the_outdoor_air_is_coolest_if_it_can() -> None:
    # same price all evening, but the COP is better in the cooler night: energy is cheaper
    # per kelvin, so the plan cools as late as the band allows
    ac = bedroom_ac(initial_c=25.0, comfort_max=26.0)
    plan = optimise(evening(ac, [0.8] * STEPS))
    power = plan.thermal_w["ac"]
    assert sum(power[-12:]) > sum(power[:12])


def test_a_band_the_ac_cannot_hold_costs_discomfort_but_still_plans() -> None:
    ac = bedroom_ac(max_power_w=100.0, comfort_max=23.0)
    plan = optimise(evening(ac, [0.8] * STEPS))
    assert plan.discomfort_k_h > 1.0
    assert plan.discomfort_cost == pytest.approx(
        plan.discomfort_k_h * ac.discomfort_per_kelvin_hour
    )
    assert max(plan.thermal_w["ac"]) == pytest.approx(100.0)


def test_an_electric_water_heater_heats_the_tank_in_the_cheap_hours_before_the_shower() -> None:
    steps = 24  # hourly, from midnight
    draws = [0.0] * steps
    draws[19] = -3_500.0  # the evening showers take 3.5 kWh of heat out of the tank
    tank = ThermalLoad(
        name="boiler",
        max_power_w=2_000.0,
        capacitance_wh_per_k=232.0,  # 200 l of water
        resistance_k_per_w=1.5,  # a well insulated tank
        initial_c=45.0,
        outdoor_c=[28.0] * steps,  # the room around it
        comfort_min_c=[40.0] * steps,
        comfort_max_c=[75.0] * steps,
        heat_gain_w=draws,
        mode="heat",
        cop_at_reference=1.0,
        cop_change_per_k=0.0,
        discomfort_per_kelvin_hour=5.0,
    )
    prices = [0.5] * 17 + [1.5] * 5 + [0.5] * 2
    plan = optimise(
        DerProblem(
            site=Site("house"),
            pv_w=[0.0] * steps,
            load_w=[0.0] * steps,
            buy_price_per_kwh=prices,
            sell_price_per_kwh=[0.0] * steps,
            thermal_loads=[tank],
            step_s=3600,
        )
    )
    power = plan.thermal_w["boiler"]
    assert sum(power[17:22]) == pytest.approx(0.0, abs=1e-6)
    assert min(plan.temperature_c["boiler"]) >= 40.0 - 1e-6


def test_a_comfort_band_upside_down_is_refused() -> None:
    with pytest.raises(InvalidSite, match=r"comfort_min_c\[0\] 27 is above comfort_max_c\[0\] 24"):
        bedroom_ac(comfort_min_c=[27.0] * STEPS, comfort_max_c=[24.0] * STEPS)


def test_a_thermal_forecast_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(InvalidSite, match="outdoor_c needs one value per step"):
        evening(bedroom_ac(outdoor_c=[30.0] * 3), [0.8] * STEPS)


def heat_pump(outdoor_c: list[float], gain_w: list[float], steps: int) -> ThermalLoad:
    """An air-to-water heat pump heating a house: COP 3 at 7 °C, 0.1 more per kelvin."""
    return ThermalLoad(
        name="hp",
        max_power_w=3_000.0,
        capacitance_wh_per_k=5_000.0,
        resistance_k_per_w=0.005,  # 200 W/K to the outside
        initial_c=20.0,
        outdoor_c=outdoor_c,
        comfort_min_c=[20.0] * steps,
        comfort_max_c=[23.0] * steps,
        heat_gain_w=gain_w,
        mode="heat",
        cop_at_reference=3.0,
        reference_outdoor_c=7.0,
        cop_change_per_k=0.1,
        discomfort_per_kelvin_hour=50.0,
    )


def heat_problem(pump: ThermalLoad, steps: int, prices: list[float]) -> DerProblem:
    return DerProblem(
        site=Site("house"),
        pv_w=[0.0] * steps,
        load_w=[0.0] * steps,
        buy_price_per_kwh=prices,
        sell_price_per_kwh=[0.0] * steps,
        thermal_loads=[pump],
        step_s=3600,
    )


def test_a_heat_pump_needs_more_electricity_for_the_same_heat_when_it_is_colder() -> None:
    # The same house, held at 20 °C: at 2 °C outside and at 12 °C with 2 kW less of internal
    # gains, so the heat it needs is the same; only the COP differs (2.5 against 3.5).
    steps = 12
    cold = heat_pump([2.0] * steps, [0.0] * steps, steps)
    mild = heat_pump([12.0] * steps, [-2_000.0] * steps, steps)
    assert cop(cold, 2.0) == pytest.approx(2.5) and cop(mild, 12.0) == pytest.approx(3.5)
    plans = {name: optimise(heat_problem(p, steps, [0.8] * steps)) for name, p in
             (("cold", cold), ("mild", mild))}  # fmt: skip
    used_wh = {name: sum(plan.thermal_w["hp"]) for name, plan in plans.items()}
    assert used_wh["cold"] > 0
    # the same heat (COP × electricity), and as much more electricity as the COP is worse
    assert used_wh["cold"] * 2.5 == pytest.approx(used_wh["mild"] * 3.5, rel=1e-4)
    for plan in plans.values():
        assert min(plan.temperature_c["hp"]) >= 20.0 - 1e-6
        assert plan.discomfort_k_h == pytest.approx(0.0, abs=1e-6)


def test_a_heat_pump_stores_heat_when_the_afternoon_is_mild() -> None:
    # flat prices, a night at 0 °C and an afternoon at 14 °C: heat is cheaper per kWh in the
    # afternoon (COP 3.7 against 2.3), so the house is warmed then and coasts into the night
    steps = 24
    outdoor = [0.0] * 12 + [14.0] * 6 + [0.0] * 6
    pump = heat_pump(outdoor, [0.0] * steps, steps)
    problem = heat_problem(pump, steps, [0.8] * steps)
    plan = optimise(problem)
    power, room = plan.thermal_w["hp"], plan.temperature_c["hp"]
    assert max(room[12:18]) > 20.5  # above what the band asks: heat stored in the mass
    held, thermostat = 20.0, []  # a thermostat holding 20 °C, for comparison
    for t in range(steps):
        kwargs = {"outdoor_c": outdoor[t], "gain_w": 0.0, "step_h": 1.0}
        thermostat.append(power_to_reach_w(pump, held, 20.0, **kwargs))
        held = next_temperature_c(pump, held, power_w=thermostat[-1], **kwargs)
    assert sum(power[12:18]) > sum(thermostat[12:18]) + 500  # more while the COP is good
    assert sum(power) < sum(thermostat) - 500  # and less over the day
    evaluation = evaluate(problem, PlanFlows.of(plan))
    assert evaluation.feasible and evaluation.cost == pytest.approx(plan.objective, rel=1e-6)
