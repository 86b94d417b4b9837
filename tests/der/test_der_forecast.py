"""The forecasts are simple and honest: they repeat what was measured and say nothing more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from meterchain.der import InvalidSite
from meterchain.der.forecast import (
    clear_sky_index,
    clear_sky_pv_w,
    load_forecast_w,
    pv_forecast_w,
)

FORTALEZA = timezone(timedelta(hours=-3))


def test_a_load_that_repeats_every_day_is_forecast_exactly() -> None:
    day = [float(100 + (k % 7) * 10) for k in range(96)]
    assert load_forecast_w(day * 3) == pytest.approx(day)


def test_load_forecast_blends_yesterday_with_the_average_of_the_same_slot() -> None:
    history = [100.0] * 4 + [200.0] * 4 + [600.0] * 4  # three days of four steps
    forecast = load_forecast_w(history, steps_per_day=4, horizon_steps=4, persistence_weight=0.5)
    assert forecast == pytest.approx([0.5 * 600 + 0.5 * 300] * 4)


def test_load_forecast_beyond_one_day_repeats_the_last_day() -> None:
    history = [float(k) for k in range(8)]
    forecast = load_forecast_w(history, steps_per_day=4, horizon_steps=8, persistence_weight=1.0)
    assert forecast == pytest.approx([4, 5, 6, 7, 4, 5, 6, 7])


def test_less_than_a_day_of_history_gives_a_flat_mean() -> None:
    assert load_forecast_w([100.0, 300.0], horizon_steps=3) == pytest.approx([200, 200, 200])


def test_load_forecast_without_history_is_refused() -> None:
    with pytest.raises(InvalidSite, match="at least one measured value"):
        load_forecast_w([])


@pytest.fixture(scope="module")
def fortaleza_day() -> tuple[float, ...]:
    start = datetime(2026, 11, 24, tzinfo=FORTALEZA)
    return clear_sky_pv_w(start, latitude=-3.73, longitude=-38.52, peak_power_w=5_000)


def test_clear_sky_pv_is_zero_at_night_and_peaks_near_local_solar_noon(
    fortaleza_day: tuple[float, ...],
) -> None:
    assert len(fortaleza_day) == 96
    assert fortaleza_day[0] == 0 and fortaleza_day[8] == 0  # 00:00 and 02:00
    peak_step = max(range(96), key=lambda k: fortaleza_day[k])
    assert 44 <= peak_step <= 47  # about 11:20 local: Fortaleza lies east of its time meridian
    assert 3_500 < fortaleza_day[peak_step] < 5_000


def test_clear_sky_energy_of_a_5_kwp_array_in_fortaleza_is_plausible(
    fortaleza_day: tuple[float, ...],
) -> None:
    energy_kwh = sum(fortaleza_day) * 0.25 / 1000
    assert 25 < energy_kwh < 35


def test_clear_sky_needs_a_timezone() -> None:
    with pytest.raises(InvalidSite, match="timezone-aware"):
        clear_sky_pv_w(datetime(2026, 11, 24), latitude=-3.73, longitude=-38.52, peak_power_w=1)


def test_clear_sky_index_counts_only_daylight_steps() -> None:
    assert clear_sky_index([5.0, 400.0, 300.0], [10.0, 800.0, 600.0]) == pytest.approx(0.5)


def test_pv_forecast_scales_the_clear_sky_profile_by_the_measured_index() -> None:
    forecast = pv_forecast_w(
        [0.0, 1_000.0, 2_000.0], measured_recent_w=[350.0], clear_sky_recent_w=[500.0]
    )
    assert forecast == pytest.approx([0, 700, 1_400])


def test_pv_forecast_at_night_falls_back_to_the_given_index() -> None:
    forecast = pv_forecast_w(
        [1_000.0], measured_recent_w=[0.0], clear_sky_recent_w=[0.0], default_index=0.8
    )
    assert forecast == pytest.approx([800])


def test_pv_forecast_index_is_capped() -> None:
    forecast = pv_forecast_w([1_000.0], measured_recent_w=[900.0], clear_sky_recent_w=[300.0])
    assert forecast == pytest.approx([1_100])


def test_pv_forecast_rejects_misaligned_history() -> None:
    with pytest.raises(InvalidSite, match="measured_w has 2 values but clear_sky_w has 1"):
        pv_forecast_w([1.0], measured_recent_w=[1.0, 2.0], clear_sky_recent_w=[1.0])


def test_utc_start_gives_the_same_profile_as_local_time(fortaleza_day: tuple[float, ...]) -> None:
    start = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    same = clear_sky_pv_w(start, latitude=-3.73, longitude=-38.52, peak_power_w=5_000)
    assert same == pytest.approx(fortaleza_day)
