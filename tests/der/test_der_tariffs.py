"""Brazilian tariffs: tarifa branca's three posts, Group A demand with its overrun charge, and
limits that change through the day."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from meterchain.der import Battery, DerProblem, Site, optimise
from meterchain.der.evaluate import PlanFlows, evaluate
from meterchain.der.site import DemandCharge, InvalidSite
from meterchain.der.tariffs import GroupATariff, TarifaBranca, national_holidays

FORTALEZA = timezone(timedelta(hours=-3))
BRANCA = TarifaBranca(off_peak_per_kwh=0.56, intermediate_per_kwh=0.88, peak_per_kwh=1.44)


def test_tarifa_branca_has_three_posts_on_a_working_day() -> None:
    tuesday = datetime(2026, 11, 24, tzinfo=FORTALEZA)
    prices = BRANCA.prices(tuesday, 48, 1800)  # half hours
    by_hour = {k / 2: p for k, p in enumerate(prices)}
    assert by_hour[10.0] == 0.56
    assert by_hour[16.5] == 0.88  # the hour before the 17:30 peak
    assert by_hour[17.5] == by_hour[20.0] == 1.44
    assert by_hour[20.5] == 0.88  # the hour after it
    assert by_hour[21.5] == 0.56
    assert prices.count(1.44) == 6 and prices.count(0.88) == 4


def test_tarifa_branca_is_off_peak_all_weekend_and_on_national_holidays() -> None:
    saturday = datetime(2026, 11, 28, tzinfo=FORTALEZA)
    assert set(BRANCA.prices(saturday, 48, 1800)) == {0.56}
    assert date(2026, 11, 15) in national_holidays(2026)
    monday = datetime(2026, 11, 16, tzinfo=FORTALEZA)
    good_friday = datetime(2026, 4, 3, tzinfo=FORTALEZA)
    assert date(2026, 4, 3) in national_holidays(2026)
    assert set(BRANCA.prices(good_friday, 48, 1800)) == {0.56}
    assert 1.44 in BRANCA.prices(monday, 48, 1800)  # the 16th is a working day


def test_a_distributors_own_holiday_can_be_added() -> None:
    local = TarifaBranca(
        off_peak_per_kwh=0.5,
        intermediate_per_kwh=0.8,
        peak_per_kwh=1.4,
        extra_holidays=frozenset({date(2026, 3, 19)}),  # São José, a Ceará holiday
    )
    assert set(local.prices(datetime(2026, 3, 19, tzinfo=FORTALEZA), 24, 3600)) == {0.5}


def test_tarifa_branca_prices_out_of_order_are_refused() -> None:
    with pytest.raises(InvalidSite, match="must rise from fora de ponta"):
        TarifaBranca(off_peak_per_kwh=1.0, intermediate_per_kwh=0.8, peak_per_kwh=1.4)


def demand_day(charge: DemandCharge, battery: Battery | None = None) -> DerProblem:
    """A small shop: 20 kW all afternoon with a 45 kW spike at 15:00 (hourly steps)."""
    load = [20_000.0] * 8
    load[3] = 45_000.0
    return DerProblem(
        site=Site("shop", battery),
        pv_w=[0.0] * 8,
        load_w=load,
        buy_price_per_kwh=[0.6] * 8,
        sell_price_per_kwh=[0.0] * 8,
        demand_charges=[charge],
        initial_soc_fraction=0.9,
        step_s=3600,
    )


def test_demand_charge_bills_the_contract_when_the_peak_stays_below_it() -> None:
    charge = DemandCharge("demanda", price_per_kw=40.0, contracted_kw=50.0)
    plan = optimise(demand_day(charge))
    assert plan.demand_cost == pytest.approx(50 * 40.0)


def test_overrun_within_the_tolerance_is_billed_at_the_plain_demand_price() -> None:
    charge = DemandCharge("demanda", price_per_kw=40.0, contracted_kw=43.0)
    # 45 kW is 4.7 % over 43 kW: billed 45 kW at the plain price, no overrun charge
    assert charge.billed_cost(45.0) == pytest.approx(45 * 40.0)
    assert DemandCharge("d", 40.0, 40.0).billed_cost(45.0) == pytest.approx(45 * 40 + 2 * 40 * 5)


def test_battery_shaves_the_peak_below_the_contract_to_avoid_the_overrun() -> None:
    charge = DemandCharge("demanda", price_per_kw=40.0, contracted_kw=30.0)
    battery = Battery(30_000, 20_000, 20_000)
    problem = demand_day(charge, battery)
    plan = optimise(problem)
    assert max(plan.import_w) <= 30_000 * 1.05 + 1e-3
    assert plan.discharge_w[3] >= 45_000 - 30_000 * 1.05 - 1e-3
    checked = evaluate(problem, PlanFlows.of(plan))
    assert checked.demand_cost == pytest.approx(plan.demand_cost)
    unshaved = evaluate(
        problem, PlanFlows(import_w=list(problem.load_w), export_w=[0.0] * 8)
    ).demand_cost
    assert unshaved == pytest.approx(45 * 40 + 2 * 40 * 15)  # overrun: 15 kW twice the price
    assert plan.demand_cost < unshaved


def test_blue_tariff_charges_the_peak_post_apart() -> None:
    tariff = GroupATariff(
        modality="azul",
        energy_peak_per_kwh=2.1,
        energy_off_peak_per_kwh=0.45,
        demand_per_kw=15.0,
        contracted_kw=60.0,
        demand_peak_per_kw=45.0,
        contracted_peak_kw=20.0,
    )
    start = datetime(2026, 11, 24, tzinfo=FORTALEZA)
    charges = tariff.demand_charges(start, 24, 3600)
    assert [c.name for c in charges] == ["demanda ponta", "demanda fora de ponta"]
    peak_steps = [t for t in range(24) if charges[0].counts(t)]
    assert peak_steps == [17, 18, 19]  # 17:30-20:30 by the middle of each hour
    assert tariff.prices(start, 24, 3600)[18] == 2.1


def test_a_time_varying_import_limit_is_respected_by_charging_earlier() -> None:
    battery = Battery(10_000, 5_000, 5_000)
    problem = DerProblem(
        site=Site("house", battery),
        pv_w=[0.0] * 6,
        load_w=[1_000.0] * 6,
        buy_price_per_kwh=[0.5] * 6,
        sell_price_per_kwh=[0.0] * 6,
        import_limit_w=[6_000.0] * 3 + [500.0] * 3,  # the feeder is needed elsewhere later
        initial_soc_fraction=0.1,
        step_s=3600,
    )
    plan = optimise(problem)
    assert all(plan.import_w[t] <= problem.import_limit_at(t) + 1e-6 for t in range(6))
    assert sum(plan.discharge_w[3:]) == pytest.approx(1_500.0, abs=1e-3)
    assert evaluate(problem, PlanFlows.of(plan)).feasible
