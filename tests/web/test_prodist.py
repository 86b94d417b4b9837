"""Supply voltage classes and the DRP/DRC indicators of ANEEL's PRODIST Module 8."""

from __future__ import annotations

import pytest

from meterchain.agents.prodist import VoltageClass, classify, duration_indicators, ranges_for


@pytest.mark.parametrize(
    ("voltage_v", "expected"),
    [
        (202.0, VoltageClass.ADEQUATE),
        (231.0, VoltageClass.ADEQUATE),
        (201.9, VoltageClass.PRECARIOUS),
        (191.0, VoltageClass.PRECARIOUS),
        (231.1, VoltageClass.PRECARIOUS),
        (233.0, VoltageClass.PRECARIOUS),
        (190.9, VoltageClass.CRITICAL),
        (233.1, VoltageClass.CRITICAL),
    ],
)
def test_220_v_ranges(voltage_v: float, expected: VoltageClass) -> None:
    assert classify(voltage_v, 220) is expected


def test_127_v_ranges() -> None:
    assert classify(117, 127) is VoltageClass.ADEQUATE
    assert classify(134, 127) is VoltageClass.PRECARIOUS
    assert classify(109, 127) is VoltageClass.CRITICAL


def test_drp_and_drc_count_a_week_of_readings() -> None:
    # 1,008 ten-minute readings: 40 precarious (3.97 %), 5 critical (0.50 %)
    voltages = [220.0] * 963 + [232.0] * 40 + [240.0] * 5
    found = duration_indicators(voltages, 220)
    assert found.readings == 1008
    assert found.drp_percent == pytest.approx(100 * 40 / 1008)
    assert found.drc_percent == pytest.approx(100 * 5 / 1008)
    assert found.drp_exceeded and not found.drc_exceeded


def test_an_untabulated_nominal_voltage_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no PRODIST voltage ranges for a nominal 230 V"):
        ranges_for(230)
