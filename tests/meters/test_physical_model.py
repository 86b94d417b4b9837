"""The physical model every simulator serves: the numbers the protocol tests check against."""

from __future__ import annotations

import pytest

from meterchain.clock import ManualClock
from meterchain.meters.sim.physical import (
    BatterySpec,
    PhysicalMeter,
    build_profile_meter,
    flat_load_w,
    pv_w,
)
from meterchain.model import RelayState


def test_counters_only_grow_and_match_the_integrated_power(clock: ManualClock) -> None:
    meter = PhysicalMeter("m1", clock, load_w=flat_load_w(1200.0))
    before = meter.state()
    clock.advance(1800)
    after = meter.state()
    assert after.import_wh - before.import_wh == pytest.approx(600.0)
    assert after.export_wh == before.export_wh


def test_power_voltage_and_current_agree(clock: ManualClock) -> None:
    state = build_profile_meter("m1", "house", clock).state()
    assert state.current_a * state.voltage_v == pytest.approx(abs(state.power_w))
    assert 220 < state.voltage_v < 240


def test_an_open_relay_cuts_import_to_zero(clock: ManualClock) -> None:
    meter = PhysicalMeter("m1", clock, load_w=flat_load_w(2000.0))
    meter.set_relay(RelayState.OFF)
    before = meter.state()
    clock.advance(3600)
    after = meter.state()
    assert after.power_w == 0
    assert after.current_a == 0
    assert after.import_wh == before.import_wh
    meter.set_relay(RelayState.ON)
    clock.advance(3600)
    assert meter.state().import_wh == pytest.approx(before.import_wh + 2000)


def test_pv_surplus_is_exported_and_counted(clock: ManualClock) -> None:
    meter = PhysicalMeter("m1", clock, load_w=flat_load_w(300.0), pv_w=pv_w(4000.0))
    first = meter.state()
    assert first.power_w < 0
    clock.advance(900)
    assert meter.state().export_wh > first.export_wh


def test_battery_soaks_up_surplus_within_its_limits(clock: ManualClock) -> None:
    battery = BatterySpec(capacity_wh=1000, max_power_w=500, efficiency=1.0, soc_fraction=0.0)
    meter = PhysicalMeter("m1", clock, load_w=flat_load_w(0.0), pv_w=pv_w(4000.0), battery=battery)
    for _ in range(16):
        clock.advance(900)
        state = meter.state()
        assert state.battery_soc_fraction is not None
        assert 0.0 <= state.battery_soc_fraction <= 1.0
    assert state.battery_soc_fraction == pytest.approx(1.0)


def test_battery_set_point_overrides_self_consumption(clock: ManualClock) -> None:
    battery = BatterySpec(capacity_wh=10_000, max_power_w=3000, efficiency=1.0)
    meter = PhysicalMeter("m1", clock, load_w=flat_load_w(500.0), battery=battery)
    meter.set_battery_power(2000.0)
    clock.advance(3600)
    assert meter.state().import_wh == pytest.approx(2500.0)


def test_unknown_profile_is_named() -> None:
    with pytest.raises(ValueError, match="unknown profile 'castle'"):
        build_profile_meter("m1", "castle", ManualClock(__import__("datetime").datetime.now()))
