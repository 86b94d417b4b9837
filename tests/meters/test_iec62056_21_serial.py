"""IEC 62056-21 mode C over a serial line (a virtual null-modem cable of pseudo-terminals)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from meterchain.clock import ManualClock
from meterchain.meters.errors import MeterTimeout
from meterchain.meters.iec62056_21 import Iec62056Meter
from meterchain.meters.sim import iec62056_21_server
from meterchain.meters.sim.physical import PhysicalMeter, build_profile_meter
from meterchain.meters.sim.serial_link import VirtualSerialLink
from meterchain.meters.url import parse_meter_url
from meterchain.model import RelayState, SetRelay

METER_ID = "30010002"


@pytest.fixture
def physical(clock: ManualClock) -> PhysicalMeter:
    return build_profile_meter(METER_ID, "house", clock)


@pytest.fixture
async def meter(
    serial_link: VirtualSerialLink, physical: PhysicalMeter
) -> AsyncIterator[Iec62056Meter]:
    server = await iec62056_21_server.start_serial(physical, serial_link.meter_end)
    url = f"iec62056-21://{serial_link.client_end}?baud=300"
    driver = Iec62056Meter(parse_meter_url(url), timeout_s=1.0)
    yield driver
    await driver.close()
    await server.close()


async def test_a_serial_read_matches_the_physical_meter(
    meter: Iec62056Meter, physical: PhysicalMeter, clock: ManualClock
) -> None:
    first = await meter.read()
    truth = physical.state()
    assert first.meter_id == METER_ID
    assert truth.import_wh - 1 < first.import_wh <= truth.import_wh
    assert first.power_w == pytest.approx(truth.power_w, abs=0.5)
    clock.advance(600)
    second = await meter.read()
    assert second.import_wh - first.import_wh == pytest.approx(truth.power_w / 6, abs=1.0)
    assert meter.identification is not None and meter.identification.baud_rate == 9600


async def test_the_relay_switches_over_a_serial_line(
    meter: Iec62056Meter, physical: PhysicalMeter
) -> None:
    assert await meter.command(SetRelay(RelayState.OFF)) is RelayState.OFF
    reading = await meter.read()
    assert (reading.relay, reading.power_w, physical.relay) == (RelayState.OFF, 0.0, RelayState.OFF)
    assert await meter.command(SetRelay(RelayState.ON)) is RelayState.ON
    assert (await meter.read()).power_w > 0


async def test_the_line_can_be_opened_again_by_the_next_client(
    meter: Iec62056Meter, serial_link: VirtualSerialLink
) -> None:
    """Linux pseudo-terminals refuse 7E1 on a second open; the driver must still get through."""
    await meter.read()
    await meter.close()
    assert (await meter.read()).meter_id == METER_ID  # reopened by the same driver
    again = Iec62056Meter(parse_meter_url(f"iec62056-21://{serial_link.client_end}"))
    try:
        assert (await again.read()).meter_id == METER_ID
    finally:
        await again.close()


async def test_the_simulator_serves_a_line_that_was_used_before(
    serial_link: VirtualSerialLink, physical: PhysicalMeter
) -> None:
    for _ in range(2):
        server = await iec62056_21_server.start_serial(physical, serial_link.meter_end)
        driver = Iec62056Meter(parse_meter_url(f"iec62056-21://{serial_link.client_end}"))
        try:
            assert (await driver.read()).meter_id == METER_ID
        finally:
            await driver.close()
            await server.close()


async def test_a_line_with_no_meter_on_it_times_out(serial_link: VirtualSerialLink) -> None:
    url = f"iec62056-21://{serial_link.client_end}"
    driver = Iec62056Meter(parse_meter_url(url), timeout_s=0.2, retries=1)
    try:
        with pytest.raises(MeterTimeout, match=r"no identification message within 0\.2 s"):
            await driver.read()
    finally:
        await driver.close()
    assert driver.bytes_exchanged == len(b"/?!\r\n")
