"""DLMS/COSEM over the TCP wrapper, read through the simulator on a real loopback socket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from meterchain.clock import ManualClock
from meterchain.meters.dlms import DlmsMeter
from meterchain.meters.dlms_codec import CLOCK, VOLTAGE_L1
from meterchain.meters.errors import InvalidMeterUrl, MeterRejected, UnsupportedCommand
from meterchain.meters.registry import open_meter
from meterchain.meters.sim import dlms_server
from meterchain.meters.sim.physical import PhysicalMeter, build_profile_meter, flat_load_w
from meterchain.meters.sim.server import RunningServer
from meterchain.meters.url import parse_meter_url
from meterchain.model import RelayState, SetBatteryPower, SetRelay

PASSWORD = dlms_server.DEFAULT_PASSWORD

MeterFactory = Callable[..., DlmsMeter]


@pytest.fixture
def physical(clock: ManualClock) -> PhysicalMeter:
    return PhysicalMeter("ELT-0001", clock, load_w=flat_load_w(1000.0), import_wh=50_000.0)


@pytest.fixture
async def server(physical: PhysicalMeter) -> AsyncIterator[RunningServer]:
    running = await dlms_server.start_tcp(physical, "127.0.0.1", 0)
    yield running
    await running.close()


@pytest.fixture
async def connect() -> AsyncIterator[MeterFactory]:
    """Open driver instances by URL and close them all at the end of the test."""
    opened: list[DlmsMeter] = []

    def factory(url: str, timeout_s: float = 1.0, retries: int = 1) -> DlmsMeter:
        meter = open_meter(url, timeout_s=timeout_s, retries=retries)
        assert isinstance(meter, DlmsMeter)
        opened.append(meter)
        return meter

    yield factory
    for meter in opened:
        await meter.close()


def url(server: RunningServer, query: str = "client=16&server=1") -> str:
    return f"dlms+tcp://127.0.0.1:{server.port}?{query}"


async def test_public_client_reads_what_the_physical_meter_measures(
    server: RunningServer, physical: PhysicalMeter, connect: MeterFactory, clock: ManualClock
) -> None:
    reading = await connect(url(server)).read()
    state = physical.state()
    assert reading.meter_id == "ELT-0001"
    assert reading.timestamp == clock.now()
    assert reading.import_wh == pytest.approx(state.import_wh, abs=1.0)
    assert reading.export_wh == 0.0
    assert reading.power_w == pytest.approx(state.power_w, abs=0.5)
    assert reading.voltage_v == pytest.approx(state.voltage_v, abs=0.05)
    assert reading.current_a == pytest.approx(state.current_a, abs=0.005)
    assert reading.relay is RelayState.ON


async def test_counters_grow_by_the_integrated_power(
    server: RunningServer, connect: MeterFactory, clock: ManualClock
) -> None:
    meter = connect(url(server))
    before = await meter.read()
    clock.advance(1800)
    after = await meter.read()
    assert after.import_wh - before.import_wh == pytest.approx(500.0, abs=1.0)  # 1 kW for 0.5 h
    assert after.timestamp - before.timestamp == timedelta(seconds=1800)


async def test_export_reads_as_negative_power_and_a_growing_export_counter(
    clock: ManualClock, connect: MeterFactory
) -> None:
    physical = build_profile_meter("PV-0007", "pv-house", clock)
    running = await dlms_server.start_tcp(physical, "127.0.0.1", 0)
    try:
        meter = connect(url(running))
        before = await meter.read()
        clock.advance(600)
        after = await meter.read()
    finally:
        await running.close()
    assert before.power_w < 0
    assert after.export_wh > before.export_wh
    assert after.import_wh == before.import_wh
    assert after.current_a == pytest.approx(abs(after.power_w) / after.voltage_v, abs=0.01)


async def test_relay_off_stops_import_and_freezes_counters_then_on_restores_flow(
    server: RunningServer, connect: MeterFactory, clock: ManualClock
) -> None:
    meter = connect(url(server, f"client=17&password={PASSWORD}&server=1"))
    assert await meter.command(SetRelay(RelayState.OFF)) is RelayState.OFF
    off = await meter.read()
    clock.advance(3600)
    still_off = await meter.read()
    assert (off.relay, off.power_w, off.current_a) == (RelayState.OFF, 0.0, 0.0)
    assert still_off.import_wh == off.import_wh
    assert await meter.command(SetRelay(RelayState.ON)) is RelayState.ON
    clock.advance(3600)
    on = await meter.read()
    assert on.relay is RelayState.ON and on.power_w == pytest.approx(1000.0, abs=0.5)
    assert on.import_wh - still_off.import_wh == pytest.approx(1000.0, abs=1.0)


async def test_public_client_may_not_switch_the_relay(
    server: RunningServer, connect: MeterFactory, physical: PhysicalMeter
) -> None:
    with pytest.raises(MeterRejected, match=r"read-write-denied.*client=17&password"):
        await connect(url(server)).command(SetRelay(RelayState.OFF))
    assert physical.relay is RelayState.ON


async def test_wrong_password_is_rejected_with_a_clear_message(
    server: RunningServer, connect: MeterFactory
) -> None:
    with pytest.raises(MeterRejected, match=r"authentication-failed.*password is wrong"):
        await connect(url(server, "client=17&password=00000000")).read()


async def test_password_client_without_password_is_told_to_add_one(
    server: RunningServer, connect: MeterFactory
) -> None:
    with pytest.raises(MeterRejected, match=r"authentication-required.*add password="):
        await connect(url(server, "client=17")).read()


async def test_unknown_client_is_rejected(server: RunningServer, connect: MeterFactory) -> None:
    with pytest.raises(MeterRejected, match=r"client 32.*check client= and server="):
        await connect(url(server, "client=32")).read()


async def test_unknown_obis_is_reported_as_object_undefined(
    server: RunningServer, connect: MeterFactory
) -> None:
    meter = connect(url(server))
    with pytest.raises(MeterRejected, match=r"1\.0\.99\.99\.0\.255 .*object-undefined"):
        await meter.get("1.0.99.99.0.255", 2, 3)
    assert await meter.get("1.0.1.8.0.255", 3, 3) == [0, 30]  # the association survives


async def test_wrong_class_for_an_object_is_reported(
    server: RunningServer, connect: MeterFactory
) -> None:
    with pytest.raises(MeterRejected, match="object-class-inconsistent"):
        await connect(url(server)).get("0.0.1.0.0.255", 2, 1)


async def test_a_meter_without_a_register_fails_the_read_naming_it(
    physical: PhysicalMeter, connect: MeterFactory
) -> None:
    running = await dlms_server.start_tcp(physical, "127.0.0.1", 0, missing_objects=[VOLTAGE_L1])
    try:
        with pytest.raises(MeterRejected, match=r"1\.0\.32\.7\.0\.255 .*object-undefined"):
            await connect(url(running)).read()
    finally:
        await running.close()


async def test_a_meter_without_a_clock_is_stamped_with_the_read_time(
    physical: PhysicalMeter, connect: MeterFactory
) -> None:
    running = await dlms_server.start_tcp(physical, "127.0.0.1", 0, missing_objects=[CLOCK])
    try:
        reading = await connect(url(running)).read()
    finally:
        await running.close()
    assert abs(reading.timestamp - datetime.now(UTC)) < timedelta(seconds=30)


async def test_meters_without_get_with_list_are_read_attribute_by_attribute(
    physical: PhysicalMeter, connect: MeterFactory
) -> None:
    with_list = await dlms_server.start_tcp(physical, "127.0.0.1", 0)
    one_by_one = await dlms_server.start_tcp(physical, "127.0.0.1", 0, list_get=False)
    try:
        fast, slow = connect(url(with_list)), connect(url(one_by_one))
        first, second = await fast.read(), await slow.read()
        fast_before, slow_before = fast.bytes_exchanged, slow.bytes_exchanged
        await fast.read()
        await slow.read()
    finally:
        await with_list.close()
        await one_by_one.close()
    assert first == second
    assert slow.bytes_exchanged - slow_before > fast.bytes_exchanged - fast_before


class CountingProxy:
    """A TCP relay that counts every byte in both directions and can cut its connections."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.bytes = 0
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                self.bytes += len(data)
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )
        self._writers += [writer, upstream_writer]
        await asyncio.gather(
            self._pump(reader, upstream_writer), self._pump(upstream_reader, writer)
        )

    def cut(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()


@pytest.fixture
async def proxy(server: RunningServer) -> AsyncIterator[CountingProxy]:
    relay = CountingProxy(server.port)
    await relay.start()
    yield relay
    await relay.close()


async def test_bytes_exchanged_counts_every_byte_on_the_wire(
    proxy: CountingProxy, connect: MeterFactory
) -> None:
    meter = connect(f"dlms+tcp://127.0.0.1:{proxy.port}")
    await meter.read()
    await meter.read()
    await asyncio.sleep(0.05)
    assert meter.bytes_exchanged == proxy.bytes
    await meter.close()
    await asyncio.sleep(0.05)
    assert meter.bytes_exchanged == proxy.bytes  # the release (RLRQ/RLRE) is counted too


async def test_reconnects_after_the_meter_drops_the_connection(
    proxy: CountingProxy, connect: MeterFactory
) -> None:
    meter = connect(f"dlms+tcp://127.0.0.1:{proxy.port}", retries=2)
    await meter.read()
    proxy.cut()
    await asyncio.sleep(0.05)
    assert (await meter.read()).meter_id == "ELT-0001"


def test_unknown_url_options_are_refused() -> None:
    with pytest.raises(InvalidMeterUrl, match="unknown option pasword"):
        DlmsMeter(parse_meter_url("dlms+tcp://127.0.0.1:4059?pasword=x"))
    with pytest.raises(InvalidMeterUrl, match="client=300"):
        DlmsMeter(parse_meter_url("dlms+tcp://127.0.0.1:4059?client=300"))
    with pytest.raises(InvalidMeterUrl, match="not rtu"):
        DlmsMeter(parse_meter_url("dlms+rtu:///dev/ttyUSB0"))


async def test_commands_other_than_the_relay_are_unsupported(
    server: RunningServer, connect: MeterFactory
) -> None:
    with pytest.raises(UnsupportedCommand, match="SetBatteryPower"):
        await connect(url(server)).command(SetBatteryPower(1000.0))
