"""Fuzzing, bounded in time and deterministic (seeded mutations of valid frames).

Simulators: every simulator (DLMS over the TCP wrapper and HDLC, IEC 62056-21, NBR 14522,
Modbus TCP and RTU) runs as `meterchain meter serve` in a process of its own, memory capped,
and gets the frames that once froze the DLMS simulator and a few hundred mutated valid
requests. It must keep answering a real driver, never die, and stop on SIGTERM.

Drivers: every driver reads a simulator through a hostile line that damages what the meter
says (bit flips, cuts, garbage, resets, stalls, known-bad answers). Each read must end by its
deadline with a reading or a one-line `MeterError`, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from dlms_cosem import cosem
from dlms_cosem import enumerations as dlms_enums
from dlms_cosem.connection import DlmsConnection
from dlms_cosem.cosem.obis import Obis
from dlms_cosem.protocol import acse, xdlms
from dlms_cosem.protocol.xdlms.invoke_id_and_priority import InvokeIdAndPriority
from dlms_cosem.security import LowLevelSecurityAuthentication, NoSecurityAuthentication
from meter_harness import fake_meter, mutate, reset, served_simulator

from meterchain.clock import ManualClock
from meterchain.meters import dlms_hdlc
from meterchain.meters import nbr14522_codec as nbr
from meterchain.meters.dlms_codec import encode_wrapper
from meterchain.meters.errors import MeterError
from meterchain.meters.iec62056_21_codec import (
    BREAK,
    CommandMessage,
    DataSet,
    OptionSelect,
    SignOn,
)
from meterchain.meters.modbus_frames import rtu_frame, tcp_frame
from meterchain.meters.registry import open_meter
from meterchain.meters.sim.physical import PhysicalMeter, flat_load_w
from meterchain.meters.sim.registry import (
    client_url,
    serial_client_url,
    start_serial_simulator,
    start_simulator,
)
from meterchain.meters.sim.serial_link import VirtualSerialLink
from meterchain.model import Reading

SEED = 14
MUTATED_FRAMES = 240  # per simulator
CHECK_EVERY = 60  # frames between two reads by a real driver
# On a serial line frames go one after another, and a meter that took garbage for the start of
# a long frame waits out its frame timeout (2 s) before it listens again: fewer, larger rounds.
SERIAL_CASES = 160
SERIAL_CHECK_EVERY = 80
CONCURRENT_CONNECTIONS = 8
ANSWER_WAIT_S = 0.02  # how long a fuzzing connection listens after each frame
SERIAL_GAP_S = 0.01  # silence after each case on a serial line (ends a Modbus RTU frame)
HOSTILE_READS = 24  # per driver on TCP
SERIAL_HOSTILE_READS = 10  # per driver on a serial line
DRIVER_TIMEOUT_S = 0.2
SLACK_S = 1.0  # what a read may take past its deadline to close its connection

# --- valid requests of each protocol, the seeds of the mutations ----------------------------

PUBLIC, LLS, MANAGEMENT = 16, 17, 1
_INVOKE = InvokeIdAndPriority(1, True, True)


def _attribute(interface: dlms_enums.CosemInterface, obis: str, attribute: int = 2) -> object:
    return cosem.CosemAttribute(interface, Obis(*(int(p) for p in obis.split("."))), attribute)


def dlms_apdus() -> tuple[bytes, list[bytes]]:
    """The public client's AARQ, and requests an associated client sends."""

    def aarq(authentication: object) -> bytes:
        connection = DlmsConnection(authentication=authentication, client_system_title=None)
        return bytes(connection.get_aarq().to_bytes())

    energy = _attribute(dlms_enums.CosemInterface.REGISTER, "1.0.1.8.0.255")
    scaler = _attribute(dlms_enums.CosemInterface.REGISTER, "1.0.1.8.0.255", 3)
    clock = _attribute(dlms_enums.CosemInterface.CLOCK, "0.0.1.0.0.255")
    requests = [
        aarq(LowLevelSecurityAuthentication(secret=b"12345678")),
        bytes(
            xdlms.GetRequestNormal(
                cosem_attribute=energy, invoke_id_and_priority=_INVOKE
            ).to_bytes()
        ),
        bytes(
            xdlms.GetRequestWithList(
                cosem_attributes_with_selection=[
                    cosem.CosemAttributeWithSelection(item, None)
                    for item in (energy, scaler, clock)
                ],
                invoke_id_and_priority=_INVOKE,
            ).to_bytes()
        ),
        bytes.fromhex("c00201") + bytes(4),  # get-request-next
        bytes.fromhex("c10101" + "00030100010800ff0200" + "0600000001"),  # set-request-normal
        bytes.fromhex("c30101" + "00460000600aff01" + "01" + "0f00"),  # action: disconnect
        bytes(acse.ReleaseRequest(reason=dlms_enums.ReleaseRequestReason.NORMAL).to_bytes()),
        # The frames from the review: selective access with a forged or cut descriptor.
        bytes.fromhex("c001c100070100630100ff02010101847fffffff"),
        bytes.fromhex("c001c100030100010800ff020101020402"),
        bytes.fromhex("c003c10200030100010800ff020000080000010000ff02010101847fffffff"),
    ]
    return aarq(NoSecurityAuthentication()), requests


def wrapper_cases(rng: random.Random) -> list[list[bytes]]:
    """Connections' worth of wrapper frames: hostile ones alone, and after an association."""
    aarq, requests = dlms_apdus()
    frames = [encode_wrapper(PUBLIC, MANAGEMENT, apdu) for apdu in [aarq, *requests]]
    cases: list[list[bytes]] = [[frame] for frame in frames[-3:]]  # the review's, no association
    cases += [[frames[0], frame] for frame in frames[-3:]]  # the same, associated
    while len(cases) < MUTATED_FRAMES:
        victim = rng.choice(frames)
        if rng.random() < 0.5:  # damage the request of an associated client
            apdu = mutate(rng, rng.choice(requests), requests)
            cases.append([frames[0], encode_wrapper(PUBLIC, MANAGEMENT, apdu)])
        else:  # damage anything, framing included
            cases.append([mutate(rng, victim, frames)])
    return cases


def hdlc_cases(rng: random.Random) -> list[list[bytes]]:
    """SNRM, then I-frames carrying the requests; mutated in their payload or as a whole."""
    aarq, requests = dlms_apdus()
    server, client = dlms_hdlc.server_address(MANAGEMENT), dlms_hdlc.client_address(PUBLIC)

    def i_frame(apdu: bytes, sequence: int) -> bytes:
        information = dlms_hdlc.LLC_REQUEST + apdu
        return dlms_hdlc.encode_i(server, client, information, sequence, sequence, False)

    snrm = dlms_hdlc.encode_snrm(MANAGEMENT, PUBLIC)
    disc = dlms_hdlc.encode_disc(MANAGEMENT, PUBLIC)
    cases = [[snrm, i_frame(aarq, 0), i_frame(apdu, 1), disc] for apdu in requests[-3:]]
    corpus = [snrm, disc, i_frame(aarq, 0), *(i_frame(apdu, 1) for apdu in requests)]
    while len(cases) < MUTATED_FRAMES:
        if rng.random() < 0.5:
            apdu = mutate(rng, rng.choice(requests), requests)
            cases.append([snrm, i_frame(aarq, 0), i_frame(apdu, 1), disc])
        else:
            cases.append([snrm, mutate(rng, rng.choice(corpus), corpus), disc])
    return cases


def iec_cases(rng: random.Random) -> list[list[bytes]]:
    password = CommandMessage("P", "1", (DataSet("", "00000000"),)).encode()
    write = CommandMessage("W", "1", (DataSet("96.3.10", "0"),)).encode()
    read = CommandMessage("R", "1", (DataSet("96.3.10", ""),)).encode()
    sign_on = SignOn("").encode()
    readout, programming = OptionSelect("5", "0").encode(), OptionSelect("5", "1").encode()
    corpus = [sign_on, readout, programming, password, write, read, BREAK.encode()]
    cases = []
    while len(cases) < MUTATED_FRAMES:
        script = rng.choice(
            [[sign_on, readout], [sign_on, programming, password, write, read, BREAK.encode()]]
        )
        at = rng.randrange(len(script))
        cases.append([*script[:at], mutate(rng, script[at], corpus), *script[at + 1 :]])
    return cases


def nbr_cases(rng: random.Random) -> list[list[bytes]]:
    corpus = [
        nbr.encode_command(nbr.Code.CURRENT_REGISTERS, "123456"),
        nbr.encode_command(nbr.Code.INSTANTANEOUS, "123456"),
        nbr.encode_relay_command("123456", None),
        nbr.encode_command(nbr.Code.INSTANTANEOUS, "123456", address="12345678"),
        bytes((nbr.ACK,)),
        bytes((nbr.NAK,)),
        bytes((nbr.WAIT,)),
    ]
    return [[mutate(rng, rng.choice(corpus), corpus)] for _ in range(MUTATED_FRAMES)]


MODBUS_PDUS = [
    bytes.fromhex("0400000050"),  # read input registers 0..79
    bytes.fromhex("03fc000010"),  # read holding registers: the identity
    bytes.fromhex("0100000001"),  # read the relay coil
    bytes.fromhex("050000ff00"),  # switch it on
    bytes.fromhex("10000000010200ff"),  # write multiple registers
    bytes.fromhex("2b0e0100"),  # read device identification
]


def modbus_tcp_cases(rng: random.Random) -> list[list[bytes]]:
    corpus = [tcp_frame(n, 1, pdu) for n, pdu in enumerate(MODBUS_PDUS)]
    return [[mutate(rng, rng.choice(corpus), corpus)] for _ in range(MUTATED_FRAMES)]


def modbus_rtu_cases(rng: random.Random) -> list[list[bytes]]:
    corpus = [rtu_frame(1, pdu) for pdu in MODBUS_PDUS]
    return [[mutate(rng, rng.choice(corpus), corpus)] for _ in range(MUTATED_FRAMES)]


# --- throwing the frames at a simulator -----------------------------------------------------


async def _read_with_a_driver(url: str) -> Reading:
    """A read by the real driver: the simulator still serves (it raises if not)."""
    meter = open_meter(url, timeout_s=2.0, retries=3)
    try:
        return await meter.read()
    finally:
        await meter.close()


async def _send_case(port: int, case: Sequence[bytes]) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        raise AssertionError(f"the simulator stopped accepting connections: {exc}") from None
    try:
        for frame in case:
            writer.write(frame)
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(4096), ANSWER_WAIT_S)
    except ConnectionError:
        pass  # the simulator may hang up on garbage: that is allowed
    finally:
        writer.close()


async def fuzz_over_tcp(port: int, cases: list[list[bytes]], url: str) -> None:
    slots = asyncio.Semaphore(CONCURRENT_CONNECTIONS)

    async def one(case: list[bytes]) -> None:
        async with slots:
            await _send_case(port, case)

    for start in range(0, len(cases), CHECK_EVERY):
        await asyncio.gather(*(one(case) for case in cases[start : start + CHECK_EVERY]))
        await _read_with_a_driver(url)


async def fuzz_over_serial(device: str, cases: list[list[bytes]], url: str) -> None:
    """Each case's frames written at once (the framing delimits them), answers drained."""
    loop = asyncio.get_running_loop()
    cases = cases[:SERIAL_CASES]
    for start in range(0, len(cases), SERIAL_CHECK_EVERY):
        fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            for case in cases[start : start + SERIAL_CHECK_EVERY]:
                os.write(fd, b"".join(case))
                await asyncio.sleep(SERIAL_GAP_S)
                with contextlib.suppress(BlockingIOError):
                    os.read(fd, 4096)  # the meter's answer, if any: not checked
            end = loop.time() + 0.2  # let the meter finish with the last frame
            while loop.time() < end:
                await asyncio.sleep(SERIAL_GAP_S)
                with contextlib.suppress(BlockingIOError):
                    os.read(fd, 4096)
        finally:
            os.close(fd)
        await _read_with_a_driver(url)


SIMULATOR_CASES: dict[str, tuple[str, bool, Callable[[random.Random], list[list[bytes]]]]] = {
    "dlms-tcp": ("dlms", False, wrapper_cases),
    "dlms-hdlc": ("dlms", True, hdlc_cases),
    "iec62056-21": ("iec62056-21", False, iec_cases),
    "nbr14522": ("nbr14522", False, nbr_cases),
    "modbus-tcp": ("modbus", False, modbus_tcp_cases),
    "modbus-rtu": ("modbus", True, modbus_rtu_cases),
}


@pytest.mark.parametrize("name", list(SIMULATOR_CASES))
def test_a_simulator_survives_mutated_and_hostile_frames(name: str) -> None:
    protocol, serial, make_cases = SIMULATOR_CASES[name]
    cases = make_cases(random.Random(f"{SEED}-{name}"))
    with served_simulator(protocol, pty=serial) as simulator:
        if serial:
            url = serial_client_url(protocol, simulator.device)
            asyncio.run(fuzz_over_serial(simulator.device, cases, url))
        else:
            url = client_url(protocol, simulator.port)
            asyncio.run(fuzz_over_tcp(simulator.port, cases, url))
        assert simulator.alive()


# --- hostile lines between a driver and a simulator -----------------------------------------

GARBLED_AARE = bytes.fromhex("6117a109060760857405080101a203020101a305a10302c20d")
FORGED_LIST_RESPONSE = bytes.fromhex("c403c1010184ffffffff")
KNOWN_BAD_ANSWERS = {
    "dlms": [encode_wrapper(1, 16, GARBLED_AARE), encode_wrapper(1, 16, FORGED_LIST_RESPONSE)],
    "iec62056-21": [b"/MCHuFAKE\r\n", b"\x02" + b"1.8.0(" * 60],
    "nbr14522": [bytes((nbr.WAIT,)) * 13, bytes((nbr.NAK,)) * 7],
    "modbus": [bytes.fromhex("000100000003018302")],
}


class HostileLine:
    """What a meter says, damaged at random (seeded) before the driver hears it."""

    def __init__(self, rng: random.Random, known_bad: Sequence[bytes]) -> None:
        self.rng = rng
        self.known_bad = list(known_bad)

    def damage(self, chunk: bytes) -> tuple[str, bytes]:
        """What to do with one piece of the meter's answer: an action and the bytes to send."""
        roll = self.rng.random()
        if roll < 0.7:
            return "pass", chunk
        if roll < 0.82:
            return "pass", mutate(self.rng, chunk)
        if roll < 0.86 and self.known_bad:
            return "pass", self.rng.choice(self.known_bad)
        if roll < 0.9:
            return "stall", chunk[: self.rng.randrange(len(chunk) + 1)]
        if roll < 0.94:
            return "reset", b""
        if roll < 0.97:
            return "drip", chunk
        return "pass", bytes(self.rng.randrange(256) for _ in range(8)) + chunk


@contextlib.asynccontextmanager
async def hostile_proxy(upstream_port: int, line: HostileLine) -> AsyncIterator[int]:
    """A TCP 'meter' that relays to the simulator on `upstream_port` through `line`."""

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)

        async def client_to_meter() -> None:
            while data := await reader.read(4096):
                up_writer.write(data)

        forward = asyncio.create_task(client_to_meter())
        try:
            while chunk := await up_reader.read(4096):
                action, data = line.damage(chunk)
                if action == "reset":
                    reset(writer)
                    return
                if action == "drip":
                    for byte in data:
                        if writer.is_closing():
                            return
                        writer.write(bytes((byte,)))
                        await asyncio.sleep(DRIVER_TIMEOUT_S * 0.8)
                    continue
                writer.write(data)
                if action == "stall":
                    await asyncio.sleep(3600)
        finally:
            forward.cancel()
            up_writer.close()

    async with fake_meter(relay) as port:
        yield port


async def _read_once(meter_url: str) -> tuple[Reading | MeterError, float, float]:
    meter = open_meter(meter_url, timeout_s=DRIVER_TIMEOUT_S, retries=2)
    started = time.monotonic()
    try:
        outcome: Reading | MeterError = await asyncio.wait_for(
            meter.read(), meter.deadline_s + SLACK_S
        )
    except MeterError as error:
        outcome = error
    finally:
        await meter.close()
    return outcome, time.monotonic() - started, meter.deadline_s


def _check(outcomes: list[tuple[Reading | MeterError, float, float]]) -> int:
    """Every read ended by its deadline with a reading or a one-line MeterError; how many read."""
    for outcome, elapsed_s, deadline_s in outcomes:
        assert elapsed_s <= deadline_s + SLACK_S, (elapsed_s, deadline_s, outcome)
        if isinstance(outcome, MeterError):
            assert "\n" not in str(outcome) and "\r" not in str(outcome), str(outcome)
        else:
            assert isinstance(outcome, Reading)
    return sum(isinstance(outcome, Reading) for outcome, _, _ in outcomes)


def _no_unhandled_task_errors(records: list[logging.LogRecord]) -> None:
    unhandled = [r.getMessage() for r in records if "never retrieved" in r.getMessage()]
    assert not unhandled, unhandled


@pytest.mark.parametrize("protocol", ["modbus", "dlms", "iec62056-21", "nbr14522"])
async def test_a_driver_answers_a_hostile_meter_with_its_own_errors_by_its_deadline(
    protocol: str,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    physical = PhysicalMeter("HOSTILE-1", clock, load_w=flat_load_w(800.0))
    simulator = await start_simulator(protocol, physical, "127.0.0.1", 0)
    lines = [
        HostileLine(random.Random(f"{SEED}-{protocol}-{n}"), KNOWN_BAD_ANSWERS[protocol])
        for n in range(HOSTILE_READS)
    ]
    try:
        async with contextlib.AsyncExitStack() as stack:
            ports = [
                await stack.enter_async_context(hostile_proxy(simulator.port, line))
                for line in lines
            ]
            outcomes = await asyncio.gather(
                *(_read_once(client_url(protocol, port)) for port in ports)
            )
    finally:
        await simulator.close()
    _check(list(outcomes))
    _no_unhandled_task_errors(caplog.records)
    assert capsys.readouterr().out == ""  # no library printed anything


def _noisy(rng: random.Random) -> Callable[[bytes], bytes]:
    def tamper(chunk: bytes) -> bytes:
        roll = rng.random()
        if roll < 0.75:
            return chunk
        if roll < 0.9:
            return mutate(rng, chunk)
        if roll < 0.95:
            return b""  # lost
        return bytes(rng.randrange(256) for _ in range(4)) + chunk

    return tamper


@pytest.mark.parametrize("protocol", ["modbus", "dlms"])
async def test_a_driver_on_a_noisy_serial_line_answers_with_its_own_errors_by_its_deadline(
    protocol: str,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Modbus RTU and DLMS over HDLC: their serial framings meet line noise."""
    physical = PhysicalMeter("HOSTILE-1", clock, load_w=flat_load_w(800.0))
    outcomes = []
    with VirtualSerialLink(tamper=_noisy(random.Random(f"{SEED}-{protocol}-serial"))) as link:
        simulator = await start_serial_simulator(protocol, physical, link.meter_end)
        try:
            for _ in range(SERIAL_HOSTILE_READS):
                outcomes.append(await _read_once(serial_client_url(protocol, link.client_end)))
        finally:
            await simulator.close()
    _check(outcomes)
    _no_unhandled_task_errors(caplog.records)
    assert capsys.readouterr().out == ""
