"""The community simulation end to end: every protocol, a real chain, all agents.

One small street (a household per protocol) for a few intervals around noon, run once per
module; the tests check what the simulation promises.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from meterchain.config import Household, Scenario
from meterchain.sim.community import run_community
from meterchain.sim.report import summarise
from meterchain.sim.results import SimulationResult

NOON_FORTALEZA = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
INTERVALS = 4


def street() -> Scenario:
    return Scenario(
        name="test street",
        start=NOON_FORTALEZA,
        days=INTERVALS * 900 / 86400,
        seed=3,
        households=[
            Household(
                meter_id="30010001", protocol="modbus", pv_kwp=5, battery_kwh=10, battery_kw=3
            ),
            Household(meter_id="30010002", protocol="dlms", pv_kwp=4, daily_kwh=6),
            Household(meter_id="30010003", protocol="iec62056-21", daily_kwh=12),
            Household(meter_id="30010004", protocol="nbr14522", daily_kwh=10),
        ],
    )


@pytest.fixture(scope="module")
def result() -> SimulationResult:
    return asyncio.run(run_community(street()))


@pytest.fixture(scope="module")
def summary(result: SimulationResult) -> dict[str, Any]:
    return summarise(result)


def test_every_interval_is_settled_on_chain(result: SimulationResult) -> None:
    assert len(result.market) == INTERVALS
    assert all(m.gas_delivery > 0 for m in result.market)
    assert all(m.trades > 0 and m.gas_batch > 0 for m in result.market)  # sunny noon: trades


def test_chain_balances_agree_with_the_settlement_to_the_smallest_unit(
    result: SimulationResult, summary: dict[str, Any]
) -> None:
    assert summary["chain_agrees"] is True
    for household in result.households:
        settled = sum(i.balance_change_units for i in household.intervals)
        assert settled == household.chain_balance_change_units


def test_every_traded_wh_has_a_buyer_and_a_seller(result: SimulationResult) -> None:
    intervals = [i for h in result.households for i in h.intervals]
    bought = sum(i.bought_wh for i in intervals)
    assert bought == sum(i.sold_wh for i in intervals) > 0
    # What was delivered and received can fall short of the trade (forecast errors, whole-Wh
    # registers); the grid settles the difference, and it stays small.
    assert sum(i.received_wh for i in intervals) <= bought
    assert sum(i.delivered_wh for i in intervals) <= bought
    assert sum(i.received_wh for i in intervals) >= 0.8 * bought


def test_the_local_market_saves_the_community_money(summary: dict[str, Any]) -> None:
    community = summary["community"]
    assert community["cost_with_market"] < community["cost_without_market"]
    for household in summary["households"]:  # nobody pays more than at the grid tariffs
        assert household["cost_with_market"] <= household["cost_without_market"] + 0.01


def test_metered_energy_matches_the_physical_model(result: SimulationResult) -> None:
    for household in result.households:
        for interval in household.intervals:
            net_wh = interval.imported_wh - interval.exported_wh
            expected = interval.load_wh - interval.pv_wh  # no battery: the meter sees net load
            if household.battery_kwh == 0:
                assert net_wh == pytest.approx(expected, abs=2)  # registers are whole Wh


def test_every_protocol_took_part(summary: dict[str, Any]) -> None:
    protocols = {h["protocol"] for h in summary["households"]}
    assert protocols == {"modbus", "dlms", "iec62056-21", "nbr14522"}


def test_simulate_command_prints_the_json_report(tmp_path: Path) -> None:
    scenario = tmp_path / "two.toml"
    scenario.write_text(
        'name = "two"\nstart = "2026-11-24T15:00:00Z"\ndays = 0.0208333333\n'
        '[[households]]\nmeter_id = "30010001"\nprotocol = "modbus"\npv_kwp = 5\n'
        '[[households]]\nmeter_id = "30010002"\nprotocol = "dlms"\n'
    )
    completed = subprocess.run(
        [sys.executable, "-m", "meterchain.cli", "simulate", str(scenario), "--json",
         "--out", str(tmp_path / "report")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(completed.stdout)
    assert report["intervals"] == 2 and report["gas_used"] > 0
    fields = {
        "meter_id", "protocol", "local_bought_wh", "local_sold_wh", "grid_import_wh",
        "grid_export_wh", "cost_with_market", "cost_without_market", "chain_balance_change",
    }  # fmt: skip
    assert all(fields <= set(h) for h in report["households"])
    assert fields - {"meter_id", "protocol"} <= set(report["community"])
    assert (tmp_path / "report" / "report.html").exists()


def test_a_bad_scenario_fails_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text('name = "bad"\nstart = "2026-11-24T15:00:00Z"\n')
    completed = subprocess.run(
        [sys.executable, "-m", "meterchain.cli", "simulate", str(scenario)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 1
    assert "at least one household" in completed.stderr
    assert "Traceback" not in completed.stderr
