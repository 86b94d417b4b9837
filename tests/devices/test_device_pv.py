"""The SunSpec PV inverter driver against its simulator, over TCP and over a serial cable."""

from __future__ import annotations

import pytest
from device_site import LOAD_W, PV_PEAK_W, PV_UNIT, Site, serve_site

from meterchain.clock import ManualClock
from meterchain.devices.base import PvInverter
from meterchain.devices.errors import WriteNotConfirmed
from meterchain.devices.sunspec_pv import SunSpecPvInverter

CONTROLS_BASE = 40000 + 2 + 68 + 52 + 32  # model 123 after models 1, 101 and 121


def inverter(site: Site, **options: str) -> PvInverter:
    device = site.open("pv", **options)
    assert isinstance(device, SunSpecPvInverter)
    return device


async def test_production_and_energy_match_the_panels(site: Site) -> None:
    device = inverter(site)
    state = await device.read_state()
    physics = site.meter.state()
    assert state.device_id == "pv-7"
    assert state.power_w == pytest.approx(physics.pv_power_w, abs=0.5)  # W_SF 0: whole watts
    assert state.rated_power_w == PV_PEAK_W
    assert state.limit_pct is None and state.status == "mppt"
    site.clock.advance(900)
    later = await device.read_state()
    assert later.energy_wh - state.energy_wh == pytest.approx(physics.pv_power_w / 4, abs=1)


async def test_a_limit_is_rounded_down_to_the_scale_factor_and_read_back(site: Site) -> None:
    device = inverter(site)
    # WMaxLimPct_SF is -1: 1234 W of 4000 W is 30.85 %, which the device holds as 308 (30.8 %).
    assert await device.set_limit_w(1234) == pytest.approx(1232)
    link = site.links.link(device.url)
    (percent,) = await link.read_holding(PV_UNIT, CONTROLS_BASE + 5, 1)
    (enabled,) = await link.read_holding(PV_UNIT, CONTROLS_BASE + 9, 1)
    assert (percent, enabled) == (308, 1)
    state = await device.read_state()
    assert state.limit_pct == pytest.approx(30.8) and state.status == "throttled"
    assert state.power_w == pytest.approx(1232, abs=0.5)


async def test_a_lower_limit_shows_as_less_export_at_the_meter(site: Site) -> None:
    device = inverter(site)
    await battery_idle(site)
    before = site.meter.state()
    assert before.power_w < -2000  # exporting the sunny noon surplus
    await device.set_limit_w(LOAD_W + 300)
    after = site.meter.state()
    assert after.power_w == pytest.approx(-300, abs=5)  # 0.1 % of 4 kW steps, rounded down
    assert after.power_w >= -300


async def test_the_limit_can_be_lifted(site: Site) -> None:
    device = inverter(site)
    await device.set_limit_pct(10)
    assert await device.set_limit_pct(None) is None
    assert (await device.read_state()).limit_pct is None
    assert site.meter.state().pv_limit_w is None


async def test_limits_are_clamped_to_0_and_100_percent(site: Site) -> None:
    device = inverter(site)
    assert await device.set_limit_pct(250) == 100
    assert await device.set_limit_pct(-5) == 0
    assert site.meter.state().pv_power_w == 0


async def test_the_limit_reverts_after_its_timeout(clock: ManualClock) -> None:
    async for site in serve_site(clock, "tcp"):
        device = inverter(site, revert_s="900")
        await device.set_limit_pct(20)
        clock.advance(901)
        assert (await device.read_state()).limit_pct is None


async def test_a_refused_limit_raises_an_alarm(clock: ManualClock) -> None:
    async for site in serve_site(clock, "rtu", faults=["refuse-writes"]):
        with pytest.raises(WriteNotConfirmed, match=r"^pv .*: writing the PV limit 50 % was not"):
            await inverter(site).set_limit_pct(50)
        assert len(site.alarms) == 1 and site.alarms[0].kind == "pv"


async def battery_idle(site: Site) -> None:
    """Hold the battery at 0 W so the PV surplus shows at the meter."""
    battery = site.open("battery")
    await battery.set_power_w(0)  # type: ignore[attr-defined]
