"""The relay-switched load against the simulated relay board, over TCP and a serial cable."""

from __future__ import annotations

import pytest
from device_site import HEATER_W, Site, serve_site

from meterchain.clock import ManualClock
from meterchain.devices.alarms import WRITE_NOT_CONFIRMED
from meterchain.devices.errors import InvalidDeviceUrl, WriteNotConfirmed
from meterchain.devices.registry import open_device
from meterchain.devices.relay import RelayLoad


def load(site: Site) -> RelayLoad:
    device = site.open("load")
    assert isinstance(device, RelayLoad)
    return device


async def test_switching_the_coil_switches_the_load_the_meter_sees(site: Site) -> None:
    device = load(site)
    assert (await device.read_state()).on is False
    before = site.meter.state()
    assert await device.switch(True) is True
    assert (await device.read_state()).on is True
    assert site.meter.state().load_power_w == pytest.approx(before.load_power_w + HEATER_W)
    site.clock.advance(900)
    assert await device.switch(False) is False
    assert site.meter.state().load_power_w == pytest.approx(before.load_power_w)


async def test_a_coil_with_nothing_wired_is_refused_in_one_line(site: Site) -> None:
    url = site.url("load").replace("coil=2", "coil=5")
    device = open_device(url, links=site.links, timeout_s=0.5, tries=1, on_alarm=site.alarms.append)
    assert (await device.read_state()).on is False  # an unused coil reads 0
    with pytest.raises(WriteNotConfirmed) as caught:
        await device.switch(True)  # type: ignore[attr-defined]
    assert "\n" not in str(caught.value) and "exception 2" in str(caught.value)
    assert [a.code for a in site.alarms] == [WRITE_NOT_CONFIRMED]


async def test_a_board_that_ignores_the_write_is_caught_by_the_read_back(
    clock: ManualClock,
) -> None:
    async for site in serve_site(clock, "tcp", faults=["ignore-writes"]):
        with pytest.raises(WriteNotConfirmed, match="switching the load on was not confirmed"):
            await load(site).switch(True)
        assert site.meter.switched_load_on("heater") is False


def test_a_relay_url_must_name_its_coil() -> None:
    with pytest.raises(InvalidDeviceUrl, match=r"name the relay's coil, e\.g\. relay\+tcp://"):
        open_device("relay+tcp://127.0.0.1:1502?unit=3")
