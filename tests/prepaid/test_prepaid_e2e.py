"""End to end: a prepaid household in a simulated street runs out of credit in the night, is
cut off at 08:00 (the first hour the rules allow) through its NBR 14522 meter's relay, imports
nothing while cut, is reconnected by a voucher, and pays for exactly the energy it imported.
Real meter protocols on loopback, a real anvil chain, every agent, virtual time."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from meterchain.config import Household, PrepaidConfig, Scenario, Tariffs, TopUp
from meterchain.prepaid.rules import CutOffRules
from meterchain.sim.community import run_community
from meterchain.sim.report import summarise
from meterchain.sim.results import SimulationResult

PREPAID = "50030002"
NEVER_CUT = "50030003"
TOP_UP_AT = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # 12:00 in Fortaleza
SCENARIO = Scenario(
    name="prepaid street",
    start=datetime(2026, 11, 24, 3, 0, tzinfo=UTC),  # Tuesday, local midnight
    days=15 / 24,  # to 15:00 local
    interval_s=1800,
    seed=3,
    tariffs=Tariffs(retail_price=0.95, feed_in_price=0.25),
    prepaid=PrepaidConfig(emergency_credit=0.50, advance_buffer=1.0, thresholds=[2.0, 0.0]),
    households=[
        Household(meter_id="50030001", protocol="modbus", daily_kwh=6.0, pv_kwp=3.0),
        Household(
            meter_id=PREPAID,
            protocol="nbr14522",
            daily_kwh=10.0,
            prepaid=True,
            starting_credit=0.30,
            top_ups=[TopUp(at=TOP_UP_AT, amount=10.0, via="voucher")],
        ),
        Household(
            meter_id=NEVER_CUT,
            protocol="dlms",
            daily_kwh=9.0,
            prepaid=True,
            never_cut=True,
            starting_credit=0.20,
        ),
    ],
)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> SimulationResult:
    import asyncio

    work: Path = tmp_path_factory.mktemp("prepaid-e2e")
    return asyncio.run(run_community(SCENARIO, work))


def household(result: SimulationResult, meter_id: str) -> dict[str, object]:
    return next(h for h in summarise(result)["households"] if h["meter_id"] == meter_id)


@pytest.mark.timeout(300)
def test_the_household_is_cut_off_only_when_the_rules_allow_and_reconnected_by_the_voucher(
    result: SimulationResult,
) -> None:
    assert result.prepaid is not None
    changes = [c for c in result.prepaid["state_changes"] if c["meter_id"] == PREPAID]
    night = [c for c in changes if c["reason"] == "night"]
    assert night, "the credit ran out in the night: grace until the morning"
    assert datetime.fromisoformat(night[0]["at"]) < datetime(2026, 11, 24, 11, 0, tzinfo=UTC)
    entry = household(result, PREPAID)
    [cut] = entry["cut_offs"]  # type: ignore[misc]
    cut_at = datetime.fromisoformat(cut)
    assert cut_at == datetime(2026, 11, 24, 11, 0, tzinfo=UTC)  # 08:00 local: the first allowed
    assert CutOffRules().allowed_at(int(cut_at.timestamp()))[0]
    assert entry["reconnects"] == [TOP_UP_AT.isoformat()]
    assert entry["prepaid_state_after"] == "supplied"


@pytest.mark.timeout(300)
def test_the_meter_imports_nothing_while_its_relay_is_open(result: SimulationResult) -> None:
    entry = household(result, PREPAID)
    assert entry["relay_off_intervals"] == 8  # 08:00 to 12:00 local, half-hour intervals
    assert entry["import_wh_while_cut"] == 0
    rows = next(h for h in result.households if h.meter_id == PREPAID).intervals
    cut_rows = [r for r in rows if datetime(2026, 11, 24, 11, 0, tzinfo=UTC) <= r.interval_start
                < TOP_UP_AT]  # fmt: skip
    assert len(cut_rows) == 8 and all(r.imported_wh == 0 for r in cut_rows)
    assert all(r.load_wh > 0 for r in cut_rows)  # the house wanted power all the while
    after = [r for r in rows if r.interval_start >= TOP_UP_AT]
    assert after and all(r.imported_wh > 0 for r in after)  # restored


@pytest.mark.timeout(300)
def test_no_energy_is_billed_twice_or_lost_across_the_cut(result: SimulationResult) -> None:
    summary = summarise(result)
    assert summary["chain_agrees"], summary["disagreements"]
    assert result.prepaid is not None and result.prepaid["written_off"] == 0
    prepaid = next(h for h in result.households if h.meter_id == PREPAID)
    # Every Wh the house drew while supplied was metered and settled, once.
    cut = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)
    supplied = [r for r in prepaid.intervals if not cut <= r.interval_start < TOP_UP_AT]
    assert all(r.imported_wh > 0 for r in supplied)
    metered = sum(r.imported_wh for r in supplied)
    drawn = sum(r.load_wh for r in supplied)
    assert abs(metered - drawn) <= len(supplied)  # registers count whole Wh
    # The household paid exactly what its settlements cost: starting credit + voucher − credit.
    entry = household(result, PREPAID)
    assert entry["cost_with_market"] == pytest.approx(
        0.30 + 10.0 - entry["prepaid_credit_after"], abs=0.005
    )


@pytest.mark.timeout(300)
def test_the_never_cut_household_stays_supplied_and_pays_all_it_used(
    result: SimulationResult,
) -> None:
    entry = household(result, NEVER_CUT)
    assert entry["cut_offs"] == [] and entry["relay_off_intervals"] == 0
    assert entry["import_wh_while_cut"] == 0
    assert result.prepaid is not None
    reasons = {c["reason"] for c in result.prepaid["state_changes"] if c["meter_id"] == NEVER_CUT}
    assert "never_cut" in reasons
    assert entry["prepaid_credit_after"] == pytest.approx(
        0.20 - entry["cost_with_market"], abs=0.005
    )
