"""What every driver promises at its boundary, whatever the meter on the other end does:

- only its own typed errors (`MeterError` and subclasses) come out, never a socket's, a serial
  port's or a library's exception;
- every message is one line;
- a read or command ends by its overall deadline, however slowly the bytes arrive;
- nothing is written to stdout (so `meterchain meter read --json` prints JSON and only JSON);
- line noise gets the retries the protocol allows.

The meters here are fake ones on loopback TCP that misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time

import pytest
from meter_harness import MAIN, fake_meter, reset

from meterchain.clock import ManualClock
from meterchain.meters import nbr14522_codec as nbr
from meterchain.meters.dlms_codec import decode_wrapper_header, encode_wrapper
from meterchain.meters.errors import DeadlineExceeded, MeterError
from meterchain.meters.iec62056_21_codec import DataSet, encode_readout
from meterchain.meters.registry import open_meter
from meterchain.meters.sim import dlms_server, nbr14522_server
from meterchain.meters.sim.physical import PhysicalMeter

URLS = {
    "modbus": "modbus+tcp://127.0.0.1:{port}?unit=1&map=sdm630",
    "dlms": "dlms+tcp://127.0.0.1:{port}?client=16&server=1",
    "iec62056-21": "iec62056-21+tcp://127.0.0.1:{port}",
    "nbr14522": "nbr14522+tcp://127.0.0.1:{port}",
}
SLACK_S = 1.5  # time a driver may take past its deadline to close its connection


def one_line(error: BaseException) -> bool:
    return "\n" not in str(error) and "\r" not in str(error)


# --- a connection reset --------------------------------------------------------------------


async def resets_after_the_first_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Wait for the client's first request (idling with ENQs, as an NBR 14522 meter does;
    other protocols ignore them), then reset the connection."""
    for _ in range(40):
        writer.write(bytes((nbr.ENQ,)))
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            if await asyncio.wait_for(reader.read(1), 0.05):
                break
    await asyncio.sleep(0.02)
    reset(writer)


@pytest.mark.parametrize("protocol", list(URLS))
async def test_a_connection_reset_is_a_typed_one_line_error(protocol: str) -> None:
    async with fake_meter(resets_after_the_first_request) as port:
        meter = open_meter(URLS[protocol].format(port=port), timeout_s=0.5, retries=2)
        try:
            with pytest.raises(MeterError) as caught:
                await meter.read()
        finally:
            await meter.close()
    assert one_line(caught.value), str(caught.value)
    assert URLS[protocol].format(port=port) in str(caught.value)


def test_the_command_line_reports_a_reset_in_one_line_without_a_traceback() -> None:
    async def scenario() -> subprocess.CompletedProcess[str]:
        async with fake_meter(resets_after_the_first_request) as port:
            process = await asyncio.create_subprocess_exec(
                str(MAIN),
                "meter",
                "read",
                f"nbr14522+tcp://127.0.0.1:{port}",
                "--json",
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode is not None
            return subprocess.CompletedProcess([], process.returncode, out.decode(), err.decode())

    result = asyncio.run(scenario())
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


# --- slow meters: the overall deadline -------------------------------------------------------


async def read_is_cut_at_its_deadline(url: str, timeout_s: float) -> None:
    """One try against a meter that never lets a timeout expire: it ends at the deadline."""
    meter = open_meter(url, timeout_s=timeout_s, retries=1)
    started = time.monotonic()
    try:
        with pytest.raises(DeadlineExceeded) as caught:
            await asyncio.wait_for(meter.read(), meter.deadline_s + SLACK_S)
    finally:
        await meter.close()
    assert time.monotonic() - started < meter.deadline_s + SLACK_S
    assert f"stopped at its deadline of {meter.deadline_s:g} s" in str(caught.value)
    assert one_line(caught.value), str(caught.value)


IDENTIFICATION = b"/MCH5FAKE\r\n"
READOUT = encode_readout(
    [
        DataSet("C.1.0", "FAKE"),
        DataSet("1.8.0", "000001.000", "kWh"),
        DataSet("1.7.0", "00.100", "kW"),
        DataSet("32.7.0", "230.0", "V"),
        DataSet("31.7.0", "000.43", "A"),
    ]
)


async def test_an_iec_meter_dripping_bytes_is_cut_at_the_deadline() -> None:
    """One byte every 0.24 s never trips a 0.3 s gap timeout; the deadline still ends the read."""

    async def dripping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n")
        for byte in IDENTIFICATION:
            writer.write(bytes((byte,)))
            await asyncio.sleep(0.24)
        await reader.readexactly(6)
        for byte in READOUT:
            writer.write(bytes((byte,)))
            await asyncio.sleep(0.24)

    async with fake_meter(dripping) as port:
        await read_is_cut_at_its_deadline(URLS["iec62056-21"].format(port=port), 0.3)


async def command_after_enqs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Idle like an NBR 14522 meter, an ENQ every 50 ms, until a whole command has arrived."""
    received = b""
    while len(received) < nbr.COMMAND_SIZE:
        if writer.is_closing():
            raise ConnectionResetError("the reader hung up")
        writer.write(bytes((nbr.ENQ,)))
        try:
            piece = await asyncio.wait_for(reader.read(nbr.COMMAND_SIZE - len(received)), 0.05)
        except TimeoutError:
            continue
        if not piece:
            raise ConnectionResetError("the reader hung up")
        received += piece
    return received


async def test_an_nbr14522_meter_stalling_with_waits_and_bad_crcs_is_cut_at_the_deadline(
    clock: ManualClock,
) -> None:
    """12 WAITs and 6 corrupt resends per command, each just inside the timeout: all within
    the protocol's limits, and still the read ends at its deadline."""
    timeout_s = 0.2
    simulator = nbr14522_server.Nbr14522Simulator(PhysicalMeter("12345678", clock))
    inside = timeout_s * 0.8

    async def stalling(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await command_after_enqs(reader, writer)
            for _ in range(nbr.MAX_WAITS):
                await asyncio.sleep(inside)
                writer.write(bytes((nbr.WAIT,)))
            await asyncio.sleep(inside)
            raw = await command_after_enqs(reader, writer)
            response = simulator.respond(nbr.decode_command(raw))
            for _ in range(nbr.MAX_NAKS - 1):
                await asyncio.sleep(inside)
                writer.write(response[:-1] + bytes((response[-1] ^ 0xFF,)))
                await reader.readexactly(1)  # the reader's NAK
            await asyncio.sleep(inside)
            writer.write(response)
            await reader.readexactly(1)  # ACK

    async with fake_meter(stalling) as port:
        await read_is_cut_at_its_deadline(URLS["nbr14522"].format(port=port), timeout_s)


# --- line noise ------------------------------------------------------------------------------


async def test_one_garbled_character_in_the_identification_is_retried() -> None:
    """'5' (9600 baud, mode C) with one bit flipped reads 'u', which would mean a mode A meter;
    the next sign-on gets the real identification and the read succeeds."""
    sign_ons = 0

    async def noisy_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sign_ons
        while True:
            await reader.readuntil(b"\r\n")
            sign_ons += 1
            if sign_ons == 1:
                writer.write(IDENTIFICATION.replace(b"5", bytes((ord("5") ^ 0x40,))))
                continue
            writer.write(IDENTIFICATION)
            await reader.readexactly(6)
            writer.write(READOUT)

    async with fake_meter(noisy_once) as port:
        meter = open_meter(URLS["iec62056-21"].format(port=port), timeout_s=0.5, retries=3)
        try:
            reading = await meter.read()
        finally:
            await meter.close()
    assert reading.meter_id == "FAKE"
    assert sign_ons == 2


# --- DLMS: the library's text stays off stdout and on one line -------------------------------

DAMAGED_CONFORMANCE_TAG = (b"\x5f\x1f\x04", b"\x57\x1f\x04")  # '_' becomes 'W': one bit


async def _dlms_proxy(port: int, damage_first_aare: bool) -> tuple[asyncio.Server, list[int]]:
    """A TCP proxy to the simulator on `port` that damages the first AARE it carries."""
    damaged = [0]

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                header = await reader.readexactly(8)
                apdu = await reader.readexactly(decode_wrapper_header(header).length)
                upstream_writer.write(header + apdu)
                answer_header = await upstream_reader.readexactly(8)
                answer = await upstream_reader.readexactly(
                    decode_wrapper_header(answer_header).length
                )
                if damage_first_aare and answer[0] == 0x61 and not damaged[0]:
                    damaged[0] += 1
                    answer = answer.replace(*DAMAGED_CONFORMANCE_TAG)
                writer.write(encode_wrapper(1, 16, answer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            upstream_writer.close()
            writer.close()

    return await asyncio.start_server(on_connect, "127.0.0.1", 0), damaged


def test_json_output_stays_json_after_a_damaged_aare(clock: ManualClock) -> None:
    async def scenario() -> tuple[int, str, str, int]:
        running = await dlms_server.start_tcp(PhysicalMeter("ELT-7", clock), "127.0.0.1", 0)
        proxy, damaged = await _dlms_proxy(running.port, damage_first_aare=True)
        try:
            process = await asyncio.create_subprocess_exec(
                str(MAIN),
                "meter",
                "read",
                f"dlms+tcp://127.0.0.1:{proxy.sockets[0].getsockname()[1]}?client=16",
                "--json",
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(process.communicate(), 60)
        finally:
            proxy.close()
            await running.close()
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode(), damaged[0]

    code, out, err, damaged = asyncio.run(scenario())
    assert damaged == 1
    assert code == 0, err
    assert json.loads(out)["meter_id"] == "ELT-7"  # nothing but the JSON object on stdout


async def test_a_dlms_error_from_the_asn1_parser_is_one_line() -> None:
    garbled_aare = bytes.fromhex("6117a109060760857405080101a203020101a305a10302c20d")

    async def answer_garbled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            header = await reader.readexactly(8)
            await reader.readexactly(decode_wrapper_header(header).length)
            writer.write(encode_wrapper(1, 16, garbled_aare))

    async with fake_meter(answer_garbled) as port:
        meter = open_meter(URLS["dlms"].format(port=port), timeout_s=0.5, retries=1)
        try:
            with pytest.raises(MeterError) as caught:
                await meter.read()
        finally:
            await meter.close()
    assert "malformed DLMS AARE" in str(caught.value)
    assert one_line(caught.value), str(caught.value)
