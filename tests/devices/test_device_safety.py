"""The board's safety rules: clamps, the PV cap for an export limit, the safe local rule."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterchain.devices.base import BatteryLimits
from meterchain.devices.safety import (
    SiteMeasurement,
    clamp_battery_power_w,
    clamp_pv_limit_pct,
    pv_cap_for_export_w,
    safe_local_setpoints,
)

LIMITS = BatteryLimits(
    max_charge_w=3000, max_discharge_w=2500, soc_min_fraction=0.1, soc_max_fraction=0.95
)
watts = st.floats(-20_000, 20_000, allow_nan=False)
fractions = st.floats(0, 1)


def test_set_points_stay_within_the_power_ratings() -> None:
    assert clamp_battery_power_w(5000, LIMITS, 0.5) == 3000
    assert clamp_battery_power_w(-5000, LIMITS, 0.5) == -2500
    assert clamp_battery_power_w(1200, LIMITS, 0.5) == 1200


def test_no_charge_when_full_and_no_discharge_at_the_reserve() -> None:
    assert clamp_battery_power_w(1000, LIMITS, 0.95) == 0
    assert clamp_battery_power_w(-1000, LIMITS, 0.1) == 0
    assert clamp_battery_power_w(-1000, LIMITS, 0.95) == -1000


def test_a_non_finite_set_point_is_refused() -> None:
    with pytest.raises(ValueError, match="finite number of watts"):
        clamp_battery_power_w(math.nan, LIMITS, 0.5)


def test_pv_limits_stay_within_0_and_100_percent() -> None:
    assert (clamp_pv_limit_pct(-3), clamp_pv_limit_pct(42.5), clamp_pv_limit_pct(180)) == (
        0,
        42.5,
        100,
    )


def test_the_pv_cap_leaves_exactly_the_export_limit() -> None:
    # 600 W load, battery charging 1000 W, 200 W may go out: 1800 W of PV.
    assert pv_cap_for_export_w(200, 600, 1000) == 1800
    assert pv_cap_for_export_w(0, 300, -2000) == 0  # a discharging battery leaves no room


def export_w(pv_w: float, load_w: float, window: tuple[float, float] | None) -> float:
    """What the site exports when the battery self-consumes inside `window`."""
    surplus = pv_w - load_w
    battery = 0.0 if window is None else min(max(surplus, window[0]), window[1])
    return max(0.0, surplus - battery)


@given(
    load=st.floats(0, 8000),
    pv=st.floats(0, 12_000),
    limit=st.floats(0, 5000),
    soc=fractions,
    with_battery=st.booleans(),
)
def test_the_safe_local_rule_never_exports_over_the_limit(
    load: float, pv: float, limit: float, soc: float, with_battery: bool
) -> None:
    measured = SiteMeasurement(grid_power_w=load - pv, pv_power_w=pv, soc_fraction=soc)
    rule = safe_local_setpoints(
        measured,
        export_limit_w=limit,
        battery=LIMITS if with_battery else None,
        has_pv=True,
        capacity_wh=10_000,
    )
    assert rule.pv_limit_w is not None
    assert export_w(min(pv, rule.pv_limit_w), load, rule.battery_window_w) <= limit + 1e-6


@given(load=st.floats(0, 8000), pv=st.floats(0, 12_000), soc=fractions)
def test_the_safe_local_rule_self_consumes(load: float, pv: float, soc: float) -> None:
    """The battery follows the site: it never charges from the grid nor discharges into it,
    and it keeps within its limits and state-of-charge band."""
    measured = SiteMeasurement(grid_power_w=load - pv, pv_power_w=pv, soc_fraction=soc)
    rule = safe_local_setpoints(measured, export_limit_w=None, battery=LIMITS, has_pv=True)
    assert rule.pv_limit_w is None and rule.battery_window_w is not None
    low, high = rule.battery_window_w
    assert -LIMITS.max_discharge_w <= low <= 0 <= high <= LIMITS.max_charge_w
    battery = min(max(pv - load, low), high)
    assert battery <= max(pv - load, 0) + 1e-9  # charges from the surplus only
    assert -battery <= max(load - pv, 0) + 1e-9  # discharges to cover the load only
    if soc >= LIMITS.soc_max_fraction:
        assert high == 0
    if soc <= LIMITS.soc_min_fraction:
        assert low == 0


def test_the_rule_cuts_the_window_to_what_the_cells_can_take() -> None:
    measured = SiteMeasurement(grid_power_w=-4000, pv_power_w=4500, soc_fraction=0.9)
    rule = safe_local_setpoints(
        measured, export_limit_w=0, battery=LIMITS, has_pv=True, capacity_wh=10_000
    )
    # 5 % of 10 kWh left below the top: 500 Wh over 15 minutes is 2 kW.
    assert rule.battery_window_w == pytest.approx((-2500, 2000))
    assert rule.pv_limit_w == pytest.approx(500 + 2000)  # the load, the room, no export


def test_the_load_is_the_balance_at_the_connection_point() -> None:
    measured = SiteMeasurement(grid_power_w=-1000, pv_power_w=3000, battery_power_w=1500)
    assert measured.load_w == 500
