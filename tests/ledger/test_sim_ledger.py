"""End to end through the agents: simulated meters on their real protocols, the boards'
agents, the market agent, the certificate agent and a community plant on a real chain.

A PV household and a community plant sell to a consumer neighbour around noon. After each
delivery settles, the certificate agent issues the interval's certificates: the PV household's
and the plant's appear, the neighbour's bought energy is retired in its name (it asked for
it), and the plant's market revenue reaches the households that funded it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from meterchain.config import FundConfig, Household, Scenario
from meterchain.sim.community import run_community
from meterchain.sim.report import summarise
from meterchain.sim.results import SimulationResult

NOON_FORTALEZA = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
INTERVALS = 4
PV, NEIGHBOUR, PLANT = "30020001", "30020002", "30020003"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def street() -> Scenario:
    return Scenario(
        name="street with a community plant",
        start=NOON_FORTALEZA,
        days=INTERVALS * 900 / 86400,
        seed=5,
        cloudiness=0.0,
        households=[
            Household(meter_id=PV, protocol="modbus", pv_kwp=4, daily_kwh=5),
            Household(meter_id=NEIGHBOUR, protocol="dlms", daily_kwh=14),
            Household(meter_id=PLANT, protocol="modbus", pv_kwp=8, daily_kwh=0.5),
        ],
        fund=FundConfig(plant_meter_id=PLANT, price_per_share=100, backers={PV: 3, NEIGHBOUR: 2}),
    )


@pytest.fixture(scope="module")
def result() -> SimulationResult:
    return asyncio.run(run_community(street()))


@pytest.fixture(scope="module")
def summary(result: SimulationResult) -> dict[str, Any]:
    return summarise(result)


def household(result: SimulationResult, meter_id: str):  # type: ignore[no-untyped-def]
    return next(h for h in result.households if h.meter_id == meter_id)


def test_the_pv_households_certificates_appear_after_each_settlement(
    result: SimulationResult,
) -> None:
    for meter_id in (PV, PLANT):
        rows = household(result, meter_id).intervals
        assert all(row.certified_wh == row.exported_wh for row in rows)
        assert sum(row.certified_wh for row in rows) > 0
    neighbour = household(result, NEIGHBOUR).intervals
    assert all(row.certified_wh == 0 for row in neighbour)
    assert all(m.gas_certificates > 0 for m in result.market)


def test_the_neighbours_bought_energy_is_matched_by_certificates_in_its_name(
    result: SimulationResult, summary: dict[str, Any]
) -> None:
    rows = household(result, NEIGHBOUR).intervals
    assert sum(row.received_wh for row in rows) > 0
    assert sum(row.retired_for_wh for row in rows) > 0
    for row in rows:
        assert row.retired_for_wh <= row.received_wh
    entry = next(h for h in summary["households"] if h["meter_id"] == NEIGHBOUR)
    assert 0 < entry["hourly_matched_fraction"] <= 1
    assert entry["certificates_retired_wh"] == sum(row.retired_for_wh for row in rows)


def test_the_community_sums_the_households(summary: dict[str, Any]) -> None:
    community = summary["community"]
    households = summary["households"]
    for name in ("certificates_issued_wh", "certificates_retired_wh", "fund_shares"):
        assert community[name] == sum(h[name] for h in households)
    assert community["fund_revenue"] == pytest.approx(sum(h["fund_revenue"] for h in households))
    assert 0 <= community["hourly_matched_fraction"] <= 1
    assert summary["chain_agrees"] is True


def test_the_plants_backers_hold_their_shares_and_claim_its_revenue(
    result: SimulationResult, summary: dict[str, Any]
) -> None:
    assert household(result, PV).fund_shares == 3
    assert household(result, NEIGHBOUR).fund_shares == 2
    fund = result.fund
    assert fund is not None and fund.shares == 5 and fund.raised_units == 5 * 100 * 100
    assert fund.distributed_units > 0
    claimed = (
        household(result, PV).fund_revenue_units + household(result, NEIGHBOUR).fund_revenue_units
    )
    assert claimed == fund.claimed_units <= fund.distributed_units
    assert fund.distributed_units - claimed <= 2  # one smallest unit per holder at most
    assert summary["fund"]["revenue_claimed"] > 0
