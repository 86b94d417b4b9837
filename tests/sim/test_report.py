"""The report says what each household and the street gained, to the cent, and flags the chain
when its balances disagree with the settlements.

The street below is small enough to check by hand: cents (decimals 2), three 15-minute
intervals, a seller with PV, a consumer, and a PV + battery house whose chain balance moved one
cent more than its settlements.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from meterchain.sim.report import (
    ReportError,
    print_summary,
    summarise,
    units_to_cents,
    write_report,
)
from meterchain.sim.results import (
    HouseholdInterval,
    HouseholdResult,
    IntervalMarket,
    SimulationResult,
)

T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # 12:00 in Fortaleza
STARTS = [T0 + timedelta(minutes=15 * i) for i in range(3)]


def row(
    index: int,
    *,
    imported: int = 0,
    exported: int = 0,
    bought: int = 0,
    sold: int = 0,
    balance: int = 0,
    without: int = 0,
    load: float = 0.0,
    pv: float = 0.0,
    soc: float | None = None,
) -> HouseholdInterval:
    return HouseholdInterval(
        interval_start=STARTS[index],
        imported_wh=imported,
        exported_wh=exported,
        bought_wh=bought,
        sold_wh=sold,
        received_wh=min(bought, imported),
        delivered_wh=min(sold, exported),
        balance_change_units=balance,
        cost_without_market_units=without,
        load_wh=load,
        pv_wh=pv,
        battery_soc_fraction=soc,
    )


def street() -> SimulationResult:
    seller = HouseholdResult(
        meter_id="10000001",
        protocol="modbus",
        pv_kwp=4.0,
        battery_kwh=0.0,
        intervals=[
            # 800 Wh sold at 0.60 (48) + 200 Wh fed in at 0.25 (5); without: 1000 Wh fed in
            row(0, exported=1000, sold=800, balance=53, without=-25, load=200, pv=1200),
            row(1, exported=500, sold=500, balance=30, without=-12, load=300, pv=800),
            row(2, imported=300, balance=-29, without=29, load=350),
        ],
        chain_balance_before_units=1000,
        chain_balance_after_units=1054,
    )
    consumer = HouseholdResult(
        meter_id="10000002",
        protocol="dlms",
        pv_kwp=0.0,
        battery_kwh=0.0,
        intervals=[
            row(0, imported=1000, bought=800, balance=-67, without=95, load=1000),
            row(1, imported=700, bought=500, balance=-49, without=67, load=700),
            row(2, imported=400, balance=-38, without=38, load=400),
        ],
        chain_balance_before_units=5000,
        chain_balance_after_units=4846,
    )
    battery_house = HouseholdResult(
        meter_id="10000003",
        protocol="nbr14522",
        pv_kwp=3.0,
        battery_kwh=5.0,
        intervals=[
            row(0, load=300, pv=500, soc=0.50),
            row(1, load=300, pv=300, soc=0.55),
            row(2, imported=200, balance=-19, without=19, load=400, soc=0.30),
        ],
        chain_balance_before_units=2000,
        chain_balance_after_units=1980,  # one cent more left than the settlements moved
    )
    market = [
        IntervalMarket(STARTS[0], 0.60, 800, 1, 2, 120_000, 80_000),
        IntervalMarket(STARTS[1], 0.60, 500, 1, 2, 110_000, 75_000),
        IntervalMarket(STARTS[2], None, 0, 0, 0, 0, 60_000),
    ]
    return SimulationResult(
        scenario="three-houses",
        retail_price=0.95,
        feed_in_price=0.25,
        mechanism="pay-as-clear",
        decimals=2,
        interval_s=900,
        households=[seller, consumer, battery_house],
        market=market,
        gas_setup=3_000_000,
        wall_time_s=1.23456,
        chain_id=31337,
        contracts={"market": "0x" + "ab" * 20},
        grid_balance_change_units=86,
    )


@pytest.fixture(scope="module")
def summary() -> dict[str, Any]:
    return summarise(street())


def household(summary: dict[str, Any], meter_id: str) -> dict[str, Any]:
    return next(h for h in summary["households"] if h["meter_id"] == meter_id)


def test_seller_sums_its_flows_and_pays_minus_its_settlements(summary: dict[str, Any]) -> None:
    assert household(summary, "10000001") == {
        "meter_id": "10000001",
        "protocol": "modbus",
        "local_bought_wh": 0,
        "local_sold_wh": 1300,
        "grid_import_wh": 300,
        "grid_export_wh": 200,
        "cost_with_market": -0.54,
        "cost_without_market": -0.08,
        "savings": 0.46,
        "savings_percent": 575.0,  # of the size of its grid-only income
        "chain_balance_change": 0.54,
        "self_sufficiency": 0.6471,  # 1 - 300/850
        "load_wh": 850.0,
        "pv_wh": 2000.0,
        "pv_kwp": 4.0,
        "battery_kwh": 0.0,
        "certificates_issued_wh": 0,
        "certificates_retired_wh": 0,
        "hourly_matched_fraction": 0.0,
        "fund_shares": 0,
        "fund_revenue": 0.0,
    }


def test_consumer_buys_locally_and_saves_against_the_grid_tariffs(
    summary: dict[str, Any],
) -> None:
    assert household(summary, "10000002") == {
        "meter_id": "10000002",
        "protocol": "dlms",
        "local_bought_wh": 1300,
        "local_sold_wh": 0,
        "grid_import_wh": 800,
        "grid_export_wh": 0,
        "cost_with_market": 1.54,
        "cost_without_market": 2.0,
        "savings": 0.46,
        "savings_percent": 23.0,
        "chain_balance_change": -1.54,
        "self_sufficiency": 0.619,  # 1 - 800/2100 = 0.61905
        "load_wh": 2100.0,
        "pv_wh": 0.0,
        "pv_kwp": 0.0,
        "battery_kwh": 0.0,
        "certificates_issued_wh": 0,
        "certificates_retired_wh": 0,
        "hourly_matched_fraction": 0.0,
        "fund_shares": 0,
        "fund_revenue": 0.0,
    }


def test_household_outside_the_market_saves_nothing(summary: dict[str, Any]) -> None:
    entry = household(summary, "10000003")
    assert entry["local_bought_wh"] == entry["local_sold_wh"] == 0
    assert entry["grid_import_wh"] == 200
    assert entry["cost_with_market"] == entry["cost_without_market"] == 0.19
    assert entry["savings"] == 0.0 and entry["savings_percent"] == 0.0
    assert entry["self_sufficiency"] == 0.8  # 1 - 200/1000
    assert entry["chain_balance_change"] == -0.20


def test_community_is_the_sum_of_its_households(summary: dict[str, Any]) -> None:
    assert summary["community"] == {
        "households": 3,
        "local_bought_wh": 1300,
        "local_sold_wh": 1300,
        "grid_import_wh": 1300,
        "grid_export_wh": 200,
        "cost_with_market": 1.19,
        "cost_without_market": 2.11,
        "savings": 0.92,
        "savings_percent": 43.6,  # 92 / 211
        "chain_balance_change": -1.20,
        "self_sufficiency": 0.6709,  # 1 - 1300/3950
        "load_wh": 3950.0,
        "pv_wh": 2800.0,
        "pv_kwp": 7.0,
        "battery_kwh": 5.0,
        "certificates_issued_wh": 0,
        "certificates_retired_wh": 0,
        "hourly_matched_fraction": 0.0,
        "fund_shares": 0,
        "fund_revenue": 0.0,
    }


def test_a_balance_that_moved_other_than_the_settlements_is_a_disagreement(
    summary: dict[str, Any],
) -> None:
    assert summary["chain_agrees"] is False
    assert summary["disagreements"] == [
        {
            "meter_id": "10000003",
            "settled_units": -19,
            "chain_balance_change_units": -20,
            "difference_units": -1,
            "settled": -0.19,
            "chain_balance_change": -0.20,
        }
    ]


def test_chain_agrees_when_every_balance_matches_its_settlements() -> None:
    result = street()
    result.households[2].chain_balance_after_units = 1981
    summary = summarise(result)
    assert summary["chain_agrees"] is True
    assert summary["disagreements"] == []
    assert summary["community"]["chain_balance_change"] == -1.19
    assert summary["community"]["chain_balance_change"] == -summary["community"]["cost_with_market"]


def test_void_intervals_are_listed_with_their_reason() -> None:
    result = street()
    start = int(result.market[0].interval_start.timestamp())
    result.void_intervals = {start: "the market was down at its gate closure"}
    assert summarise(result)["void_intervals"] == [
        {
            "interval_start": result.market[0].interval_start.isoformat(),
            "reason": "the market was down at its gate closure",
        }
    ]
    assert summarise(street())["void_intervals"] == []


def test_a_difference_of_one_smallest_unit_is_caught_below_the_cent() -> None:
    result = street()
    result.decimals = 4
    for entry in result.households:
        entry.chain_balance_after_units = entry.chain_balance_before_units + sum(
            r.balance_change_units for r in entry.intervals
        )
    result.households[0].chain_balance_after_units += 1  # 0.0001: invisible at the cent
    summary = summarise(result)
    assert summary["chain_agrees"] is False
    assert [d["meter_id"] for d in summary["disagreements"]] == ["10000001"]
    assert summary["disagreements"][0]["difference_units"] == 1


def test_top_level_describes_the_run_and_its_gas(summary: dict[str, Any]) -> None:
    assert summary["scenario"] == "three-houses"
    assert summary["mechanism"] == "pay-as-clear"
    assert summary["tariffs"] == {"retail_price": 0.95, "feed_in_price": 0.25}
    assert summary["decimals"] == 2
    assert summary["interval_s"] == 900
    assert summary["intervals"] == 3
    assert summary["wall_time_s"] == 1.235
    assert summary["chain_id"] == 31337
    assert summary["contracts"] == {"market": "0x" + "ab" * 20}
    assert summary["gas_used"] == 445_000
    assert summary["gas_setup"] == 3_000_000
    assert summary["gas_per_interval"] == 148_333
    assert summary["grid_balance_change"] == 0.86


def test_prices_list_every_interval_with_its_volume_and_gas(summary: dict[str, Any]) -> None:
    assert summary["prices"] == [
        {
            "interval_start": "2026-11-24T15:00:00+00:00",
            "price": 0.6,
            "traded_wh": 800,
            "trades": 1,
            "orders": 2,
            "gas": 200_000,
        },
        {
            "interval_start": "2026-11-24T15:15:00+00:00",
            "price": 0.6,
            "traded_wh": 500,
            "trades": 1,
            "orders": 2,
            "gas": 185_000,
        },
        {
            "interval_start": "2026-11-24T15:30:00+00:00",
            "price": None,
            "traded_wh": 0,
            "trades": 0,
            "orders": 0,
            "gas": 60_000,
        },
    ]


def test_summary_is_plain_json(summary: dict[str, Any]) -> None:
    assert json.loads(json.dumps(summary)) == summary


def test_money_rounds_half_up_away_from_zero_from_smallest_units() -> None:
    assert units_to_cents(12345, 4) == 123  # 1.2345
    assert units_to_cents(12350, 4) == 124  # 1.2350
    assert units_to_cents(-12350, 4) == -124
    assert units_to_cents(7, 0) == 700


def test_community_costs_are_sums_of_the_rounded_household_costs() -> None:
    result = street()
    result.decimals = 3  # smallest unit: a tenth of a cent
    for entry in result.households:
        entry.intervals = [row(0, imported=10, balance=-5, without=5, load=10)]
        entry.chain_balance_after_units = entry.chain_balance_before_units - 5
    summary = summarise(result)
    # 0.005 each rounds half up to 0.01; the street shows 0.03, not round(0.015) = 0.02,
    # so the community line is exactly the sum of the lines above it
    assert [h["cost_with_market"] for h in summary["households"]] == [0.01, 0.01, 0.01]
    assert summary["community"]["cost_with_market"] == 0.03
    assert summary["community"]["chain_balance_change"] == -0.03
    assert summary["chain_agrees"] is True


def test_self_sufficiency_is_unknown_without_load() -> None:
    result = street()
    result.households[2].intervals = [row(0), row(1), row(2)]
    assert household(summarise(result), "10000003")["self_sufficiency"] is None


@pytest.fixture(scope="module")
def report_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_report(street(), tmp_path_factory.mktemp("report") / "out")


def test_report_json_is_the_summary(report_files: tuple[Path, Path]) -> None:
    json_path, _ = report_files
    assert json_path.name == "report.json"
    assert json.loads(json_path.read_text()) == summarise(street())


def test_report_html_has_the_table_and_five_embedded_plots(
    report_files: tuple[Path, Path],
) -> None:
    _, html_path = report_files
    page = html_path.read_text()
    assert html_path.name == "report.html"
    assert '<table id="summary">' in page
    assert '<tr class="community">' in page
    assert "10000002" in page and "43.6 %" in page and "2.11" in page
    assert page.count("data:image/png;base64,") == 5
    assert "disagree" in page and "10000003" in page
    assert "local time (America/Fortaleza)" in page


def test_report_html_is_self_contained(report_files: tuple[Path, Path]) -> None:
    page = report_files[1].read_text()
    assert "<script" not in page
    assert "<link" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "http://" not in page and "https://" not in page


def test_report_without_batteries_says_so_instead_of_plotting(tmp_path: Path) -> None:
    result = street()
    result.households = result.households[:2]
    _, html_path = write_report(result, tmp_path)
    page = html_path.read_text()
    assert "No household has a battery." in page
    assert page.count("data:image/png;base64,") == 4


def test_report_into_a_file_path_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("")
    with pytest.raises(ReportError, match="choose a writable directory"):
        write_report(street(), blocker)


def test_unknown_time_zone_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="unknown time zone 'Mars/Olympus'"):
        write_report(street(), tmp_path, timezone="Mars/Olympus")


def test_terminal_summary_has_a_line_per_household_and_the_community(
    summary: dict[str, Any],
) -> None:
    buffer = StringIO()
    print_summary(summary, Console(file=buffer, width=200, color_system=None))
    text = buffer.getvalue()
    for meter_id in ("10000001", "10000002", "10000003", "community"):
        assert meter_id in text
    assert "2.11" in text and "0.92" in text
    assert "disagree for: 10000003" in text


def test_terminal_summary_cuts_long_streets(summary: dict[str, Any]) -> None:
    buffer = StringIO()
    print_summary(summary, Console(file=buffer, width=200, color_system=None), max_households=1)
    text = buffer.getvalue()
    assert "10000001" in text and "10000002" not in text
    assert "2 more" in text
