"""DLMS/COSEM over HDLC on a serial line: the simulator and the driver on two ends of a virtual
null-modem cable (two bridged pseudo-terminals), as a board reads a meter's RS-485 or optical port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from meterchain.clock import ManualClock
from meterchain.meters import dlms_hdlc
from meterchain.meters.dlms import DlmsMeter
from meterchain.meters.dlms_link import read_hdlc_frame
from meterchain.meters.errors import FrameError, MeterRejected, MeterTimeout
from meterchain.meters.sim import dlms_server
from meterchain.meters.sim.physical import PhysicalMeter, flat_load_w
from meterchain.meters.sim.serial_link import VirtualSerialLink
from meterchain.meters.sim.server import RunningServer, start_serial_server
from meterchain.meters.transport import ByteStream
from meterchain.meters.url import parse_meter_url
from meterchain.model import RelayState, SetRelay

PASSWORD = dlms_server.DEFAULT_PASSWORD
Handler = Callable[[ByteStream], Awaitable[None]]


@pytest.fixture
def physical(clock: ManualClock) -> PhysicalMeter:
    return PhysicalMeter("ELT-0002", clock, load_w=flat_load_w(2000.0), import_wh=7_000.0)


@pytest.fixture
async def meter_end(
    serial_link: VirtualSerialLink, physical: PhysicalMeter
) -> AsyncIterator[RunningServer]:
    running = await dlms_server.start_serial(physical, serial_link.meter_end)
    yield running
    await running.close()


@pytest.fixture
async def opened() -> AsyncIterator[list[DlmsMeter]]:
    meters: list[DlmsMeter] = []
    yield meters
    for meter in meters:
        await meter.close()


def hdlc_meter(
    link: VirtualSerialLink,
    opened: list[DlmsMeter],
    query: str = "client=16&server=1&baud=9600",
    timeout_s: float = 1.0,
) -> DlmsMeter:
    meter = DlmsMeter(
        parse_meter_url(f"dlms+hdlc://{link.client_end}?{query}"), timeout_s=timeout_s, retries=1
    )
    opened.append(meter)
    return meter


async def test_public_client_reads_the_meter_over_hdlc(
    meter_end: RunningServer,
    serial_link: VirtualSerialLink,
    physical: PhysicalMeter,
    opened: list[DlmsMeter],
    clock: ManualClock,
) -> None:
    meter = hdlc_meter(serial_link, opened)
    first = await meter.read()
    clock.advance(900)
    second = await meter.read()
    state = physical.state()
    assert (second.meter_id, second.timestamp, second.relay) == (
        "ELT-0002",
        clock.now(),
        RelayState.ON,
    )
    assert second.import_wh == pytest.approx(state.import_wh, abs=1.0)
    assert second.import_wh - first.import_wh == pytest.approx(500.0, abs=1.0)  # 2 kW, 15 min
    assert second.power_w == pytest.approx(2000.0, abs=0.5)
    assert second.voltage_v == pytest.approx(state.voltage_v, abs=0.05)


async def test_password_client_switches_the_relay_over_hdlc(
    meter_end: RunningServer,
    serial_link: VirtualSerialLink,
    opened: list[DlmsMeter],
    clock: ManualClock,
) -> None:
    meter = hdlc_meter(serial_link, opened, f"client=17&password={PASSWORD}&server=1")
    assert await meter.command(SetRelay(RelayState.OFF)) is RelayState.OFF
    off = await meter.read()
    clock.advance(600)
    frozen = await meter.read()
    assert (off.power_w, frozen.import_wh) == (0.0, off.import_wh)
    assert await meter.command(SetRelay(RelayState.ON)) is RelayState.ON
    assert (await meter.read()).power_w == pytest.approx(2000.0, abs=0.5)


async def test_wrong_password_is_rejected_over_hdlc(
    meter_end: RunningServer, serial_link: VirtualSerialLink, opened: list[DlmsMeter]
) -> None:
    meter = hdlc_meter(serial_link, opened, "client=17&password=nope")
    with pytest.raises(MeterRejected, match="authentication-failed"):
        await meter.read()


async def test_long_answers_arrive_in_segments(
    serial_link: VirtualSerialLink, clock: ManualClock, opened: list[DlmsMeter]
) -> None:
    # 0x7E ('~') inside the data must not be taken for a flag; the answer spans 3 frames
    name = "ELT~" + "~x" * 150
    running = await dlms_server.start_serial(
        PhysicalMeter(name, clock, load_w=flat_load_w(10.0)), serial_link.meter_end
    )
    meter = hdlc_meter(serial_link, opened)
    try:
        assert (await meter.read()).meter_id == name
    finally:
        await meter.close()
        await running.close()


async def test_bytes_exchanged_count_every_frame(
    meter_end: RunningServer, serial_link: VirtualSerialLink, opened: list[DlmsMeter]
) -> None:
    meter = hdlc_meter(serial_link, opened)
    await meter.read()
    before = meter.bytes_exchanged
    await meter.read()
    per_read = meter.bytes_exchanged - before
    # One I-frame each way; 11 bytes of HDLC framing and the 3-byte LLC header around each APDU.
    request = 4 + 8 * 10  # get-request-with-list header, 8 × (class, OBIS, attribute, no selection)
    name, clock, relay = 3 + len("ELT-0002"), 3 + 12, 3  # octet-strings and a boolean
    answer = 4 + name + clock + relay + 3 * 6 + 2 * 4  # 3 × 32-bit and 2 × 16-bit registers
    assert per_read == (11 + 3 + request) + (11 + 3 + answer)


# --- meters that misbehave on the line -------------------------------------------------------


@pytest.fixture
async def fake_meter(
    serial_link: VirtualSerialLink,
) -> AsyncIterator[Callable[[Handler], Awaitable[None]]]:
    servers: list[RunningServer] = []

    async def start(handler: Handler) -> None:
        servers.append(await start_serial_server(handler, serial_link.meter_end))

    yield start
    for server in servers:
        await server.close()


def answering_snrm(answer: bytes) -> Handler:
    async def handler(stream: ByteStream) -> None:
        await read_hdlc_frame(stream, 60, hunt=True)
        await stream.write(answer)

    return handler


async def test_a_corrupt_fcs_from_the_meter_is_a_frame_error(
    fake_meter: Callable[[Handler], Awaitable[None]],
    serial_link: VirtualSerialLink,
    opened: list[DlmsMeter],
) -> None:
    ua = bytearray(dlms_hdlc.encode_ua(16, 1))
    ua[-2] ^= 0x40
    await fake_meter(answering_snrm(bytes(ua)))
    with pytest.raises(FrameError, match="HDLC FCS mismatch"):
        await hdlc_meter(serial_link, opened).read()


async def test_noise_on_the_line_is_a_frame_error(
    fake_meter: Callable[[Handler], Awaitable[None]],
    serial_link: VirtualSerialLink,
    opened: list[DlmsMeter],
) -> None:
    await fake_meter(answering_snrm(b"\x00\x13garbage"))
    with pytest.raises(FrameError, match="should start with 7E"):
        await hdlc_meter(serial_link, opened).read()


async def test_a_frame_that_stops_midway_is_a_frame_error(
    fake_meter: Callable[[Handler], Awaitable[None]],
    serial_link: VirtualSerialLink,
    opened: list[DlmsMeter],
) -> None:
    await fake_meter(answering_snrm(dlms_hdlc.encode_ua(16, 1)[:12]))
    with pytest.raises(FrameError, match="truncated HDLC frame"):
        await hdlc_meter(serial_link, opened, timeout_s=0.3).read()


async def test_a_meter_in_disconnected_mode_refuses_the_link(
    fake_meter: Callable[[Handler], Awaitable[None]],
    serial_link: VirtualSerialLink,
    opened: list[DlmsMeter],
) -> None:
    await fake_meter(answering_snrm(dlms_hdlc.encode_dm(16, 1)))
    with pytest.raises(MeterRejected, match="DM"):
        await hdlc_meter(serial_link, opened).read()


async def test_a_silent_meter_times_out_with_advice_for_the_line(
    fake_meter: Callable[[Handler], Awaitable[None]],
    serial_link: VirtualSerialLink,
    opened: list[DlmsMeter],
) -> None:
    async def silent(stream: ByteStream) -> None:
        await asyncio.sleep(60)

    await fake_meter(silent)
    with pytest.raises(MeterTimeout, match="cable on the right port and the baud rate"):
        await hdlc_meter(serial_link, opened, timeout_s=0.2).read()
