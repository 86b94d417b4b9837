"""24/7 hourly matching as a pure function, and the simulation report's ledger fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from meterchain.ledger.matching import HourlyMatch, hourly_match
from meterchain.sim.report import summarise
from meterchain.sim.results import HouseholdInterval, HouseholdResult, SimulationResult

HOUR = 1_795_003_200  # a whole hour (Unix seconds)


def test_matching_is_hour_by_hour_and_a_surplus_never_covers_another_hour() -> None:
    consumption = {HOUR: 300, HOUR + 900: 300, HOUR + 3600: 600}
    certified = {HOUR + 1800: 800, HOUR + 3600: 0}  # all in the first hour
    match = hourly_match(consumption, certified)
    assert match == HourlyMatch(consumption_wh=1_200, matched_wh=600)
    assert match.fraction == 0.5


def test_without_consumption_the_fraction_is_zero() -> None:
    assert hourly_match({}, {HOUR: 100}).fraction == 0.0


def row(start: datetime, imported: int, retired: int, certified: int = 0) -> HouseholdInterval:
    return HouseholdInterval(
        interval_start=start, imported_wh=imported, exported_wh=certified, bought_wh=retired,
        sold_wh=0, received_wh=retired, delivered_wh=0, balance_change_units=0,
        cost_without_market_units=0, load_wh=imported, pv_wh=0, battery_soc_fraction=None,
        certified_wh=certified, retired_for_wh=retired,
    )  # fmt: skip


def test_the_report_gives_each_household_and_the_community_its_certificates_and_fund() -> None:
    start = datetime.fromtimestamp(HOUR, UTC)
    quarter = timedelta(minutes=15)
    buyer = HouseholdResult("10000001", "modbus", 0, 0, fund_shares=3, fund_revenue_units=125)
    buyer.intervals = [row(start, 400, 400), row(start + quarter, 400, 0)]
    seller = HouseholdResult("10000002", "dlms", 4, 0, fund_shares=1, fund_revenue_units=42)
    seller.intervals = [row(start, 200, 0, 900), row(start + quarter, 0, 0, 700)]
    result = SimulationResult(
        "ledger", 0.95, 0.25, "pay-as-clear", 2, 900, [buyer, seller], market=[]
    )
    summary = summarise(result)
    first, second = summary["households"]
    assert (first["certificates_issued_wh"], first["certificates_retired_wh"]) == (0, 400)
    assert first["hourly_matched_fraction"] == 0.5
    assert (first["fund_shares"], first["fund_revenue"]) == (3, 1.25)
    assert (second["certificates_issued_wh"], second["hourly_matched_fraction"]) == (1_600, 0.0)
    community = summary["community"]
    assert community["certificates_issued_wh"] == 1_600
    assert community["certificates_retired_wh"] == 400
    assert community["hourly_matched_fraction"] == 0.4  # 400 of 1,000 Wh consumed
    assert (community["fund_shares"], community["fund_revenue"]) == (4, 1.67)
