"""The SunSpec battery driver against its simulator, over TCP and over a serial cable."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from device_site import BATTERY_UNIT, LOAD_W, Site, serve_site

from meterchain.clock import ManualClock
from meterchain.devices.alarms import WRITE_NOT_CONFIRMED
from meterchain.devices.base import BatteryInverter
from meterchain.devices.errors import WriteNotConfirmed
from meterchain.devices.sunspec_battery import SunSpecBattery

STORAGE_BASE = 40000 + 2 + 68  # the simulator lays model 124 out after the common model


def battery(site: Site, **options: str) -> BatteryInverter:
    device = site.open("battery", **options)
    assert isinstance(device, SunSpecBattery)
    return device


async def test_state_of_charge_and_limits_come_from_models_124_and_802(site: Site) -> None:
    state = await battery(site).read_state()
    physics = site.meter.state()
    assert state.device_id == "bat-7"
    assert state.soc_fraction == pytest.approx(0.5, abs=1e-4)  # 802 SoC: 0.01 % steps
    assert state.capacity_wh == 10_000
    assert state.limits.max_charge_w == 3000 and state.limits.max_discharge_w == 3000
    assert state.limits.soc_min_fraction == 0.05  # the reserve the device keeps
    assert state.window_w is None  # no set-point yet: the inverter self-consumes
    assert state.power_w == pytest.approx(physics.battery_power_w, abs=1)
    assert state.status == "charging"  # noon sun: the surplus goes into the battery


async def test_a_device_without_model_802_gives_its_soc_through_124(clock: ManualClock) -> None:
    async for site in serve_site(clock, "tcp", omit_models=[802]):
        state = await battery(site).read_state()
        assert state.soc_fraction == pytest.approx(0.5, abs=1e-3)  # ChaState: 0.1 % steps
        assert state.capacity_wh is None and state.power_w is None
        assert state.limits.max_charge_w == 3000


async def test_a_set_point_is_written_with_its_scale_factor_and_read_back(site: Site) -> None:
    device = battery(site)
    confirmed = await device.set_power_w(-1234.5)
    assert confirmed == pytest.approx(-1234.5)
    # InOutWRte_SF is -2: 1234.5 W of 3000 W is 41.15 %, i.e. the registers hold ±4115.
    link = site.links.link(device.url)
    out_w_rte, in_w_rte = await link.read_holding(BATTERY_UNIT, STORAGE_BASE + 12, 2)
    assert (out_w_rte, in_w_rte) == (4115, (-4115) & 0xFFFF)
    (mode,) = await link.read_holding(BATTERY_UNIT, STORAGE_BASE + 5, 1)
    assert mode == 3  # both limits in force: the battery is pinned
    assert (await device.read_state()).window_w == pytest.approx((-1234.5, -1234.5))


async def test_the_meter_sees_what_the_battery_does(site: Site) -> None:
    device = battery(site)
    before = site.meter.state()
    await device.set_power_w(-2000)
    after = site.meter.state()
    assert after.battery_power_w == pytest.approx(-2000, abs=0.3)  # 0.01 % of 3 kW steps
    pv = after.pv_power_w
    assert after.power_w == pytest.approx(LOAD_W - pv - 2000, abs=0.3)  # 2 kW more export
    site.clock.advance(900)
    assert site.meter.state().export_wh - before.export_wh == pytest.approx(
        (pv + 2000 - LOAD_W) / 4, rel=0.01
    )


async def test_set_points_are_clamped_to_the_device_limits(site: Site) -> None:
    device = battery(site)
    assert await device.set_power_w(5000) == 3000  # WChaMax
    assert await device.set_power_w(-9000) == -3000
    assert site.meter.state().battery_power_w == pytest.approx(-3000)


async def test_no_discharge_below_the_reserve(clock: ManualClock) -> None:
    async for site in serve_site(clock, "tcp"):
        device = battery(site)
        await device.set_power_w(-3000)
        clock.advance(3600 * 1.6)  # 5 kWh to 0.2 kWh: below the 5 % reserve
        state = await device.read_state()
        assert state.soc_fraction <= state.limits.soc_min_fraction
        assert await device.set_power_w(-1000) == 0.0
        assert await device.set_power_w(500) == pytest.approx(500, abs=0.3)


async def test_the_revert_timer_hands_control_back(site: Site) -> None:
    device = battery(site, revert_s="600")
    await device.set_power_w(-1000)
    site.clock.advance(599)
    assert (await device.read_state()).window_w is not None
    site.clock.advance(2)
    state = await device.read_state()
    assert state.window_w is None  # the inverter self-consumes again without being told


async def test_self_consumption_can_be_handed_back(site: Site) -> None:
    device = battery(site)
    await device.set_power_w(-1000)
    await device.self_consume()
    assert (await device.read_state()).window_w is None
    assert site.meter.state().battery_window_w is None


async def test_a_window_lets_the_battery_follow_the_surplus(site: Site) -> None:
    device = battery(site)
    low, high = await device.set_window_w(-500, 800)
    assert (low, high) == pytest.approx((-500, 800), abs=0.3)  # 0.01 % of 3 kW steps
    assert site.meter.state().battery_power_w == pytest.approx(high)  # the surplus is larger


@pytest.fixture(params=["refuse-writes", "ignore-writes"])
async def faulty(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Site]:
    async for site in serve_site(clock, "tcp", faults=[request.param]):
        yield site


async def test_a_write_the_device_does_not_confirm_raises_an_alarm(faulty: Site) -> None:
    device = battery(faulty)
    with pytest.raises(WriteNotConfirmed) as caught:
        await device.set_power_w(1000)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"battery {faulty.url('battery')}: writing the battery window")
    assert "exception 4" in message or "reads" in message  # refused, or read back different
    assert [a.code for a in faulty.alarms] == [WRITE_NOT_CONFIRMED]
    assert faulty.alarms[0].active and caught.value.alarm == faulty.alarms[0]
    assert faulty.meter.state().battery_window_w is None  # nothing was assumed to have happened
