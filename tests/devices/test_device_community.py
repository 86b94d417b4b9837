"""The community simulation drives batteries through the SunSpec drivers over loopback, and
gets what the in-process shortcut got, to within the devices' resolution."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from meterchain.config import Household, Scenario
from meterchain.sim.community import run_community
from meterchain.sim.report import summarise
from meterchain.sim.results import SimulationResult

EVENING_FORTALEZA = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)  # 18:00 local: batteries work
INTERVALS = 6


def street(device_link: str) -> Scenario:
    return Scenario(
        name="battery street",
        start=EVENING_FORTALEZA,
        days=INTERVALS * 900 / 86400,
        seed=5,
        device_link=device_link,  # type: ignore[arg-type]
        households=[
            Household(meter_id="32010001", pv_kwp=5, battery_kwh=10, battery_kw=3),
            Household(
                meter_id="32010002", protocol="dlms", pv_kwp=4, battery_kwh=6, battery_kw=2.5
            ),
            Household(meter_id="32010003", protocol="nbr14522", daily_kwh=12),
        ],
    )


@pytest.fixture(scope="module")
def results() -> dict[str, SimulationResult]:
    return {link: asyncio.run(run_community(street(link))) for link in ("sunspec", "in-process")}


def test_savings_through_the_drivers_are_within_1_percent_of_the_shortcut(
    results: dict[str, SimulationResult],
) -> None:
    sunspec = summarise(results["sunspec"])
    shortcut = summarise(results["in-process"])
    assert sunspec["chain_agrees"] and shortcut["chain_agrees"]
    saved, saved_before = sunspec["community"]["savings"], shortcut["community"]["savings"]
    assert saved_before > 0
    assert saved == pytest.approx(saved_before, rel=0.01)


def test_the_batteries_follow_the_same_plan(results: dict[str, SimulationResult]) -> None:
    for through_drivers, in_process in zip(
        results["sunspec"].households, results["in-process"].households, strict=True
    ):
        for a, b in zip(through_drivers.intervals, in_process.intervals, strict=True):
            if b.battery_soc_fraction is None:
                assert a.battery_soc_fraction is None
                continue
            assert a.battery_soc_fraction == pytest.approx(b.battery_soc_fraction, abs=0.002)
        socs = [i.battery_soc_fraction for i in through_drivers.intervals]
        if through_drivers.battery_kwh:
            assert len(set(socs)) > 1  # the drivers really moved the battery
