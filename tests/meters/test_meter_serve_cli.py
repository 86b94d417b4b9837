"""`meterchain meter serve --map/--password`: the simulator serves what the options say, and
refuses an option its protocol has no use for."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meterchain.clock import ManualClock
from meterchain.commands.meter import Profile, app
from meterchain.meters.errors import MeterError, MeterRejected
from meterchain.meters.registry import open_meter
from meterchain.meters.sim.physical import PROFILES, build_profile_meter
from meterchain.meters.sim.registry import start_simulator
from meterchain.model import RelayState, SetRelay

MAIN = Path(sys.executable).parent / "meterchain"


@contextmanager
def served(protocol: str, meter_id: str, *options: str) -> Iterator[tuple[int, str]]:
    """`meterchain meter serve` as a user runs it; yields the port and the first line printed."""
    process = subprocess.Popen(
        [str(MAIN), "meter", "serve", "--protocol", protocol, "--meter-id", meter_id, *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        found = re.search(r"on 127\.0\.0\.1:(\d+)$", first.strip())
        assert found, f"serve printed {first!r}"
        yield int(found.group(1)), first
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err


def test_the_profile_choices_are_the_simulators_profiles() -> None:
    assert {profile.value for profile in Profile} == set(PROFILES)


@pytest.mark.parametrize("protocol", ["dlms", "iec62056-21", "nbr14522"])
def test_a_register_map_is_refused_for_protocols_other_than_modbus(protocol: str) -> None:
    result = CliRunner().invoke(
        app, ["serve", "--protocol", protocol, "--meter-id", "m1", "--map", "sdm630"]
    )
    assert result.exit_code == 1
    assert f"--map chooses a Modbus register map; a {protocol} meter has none" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("protocol", ["modbus", "nbr14522"])
def test_a_password_is_refused_for_protocols_without_one(protocol: str) -> None:
    result = CliRunner().invoke(
        app, ["serve", "--protocol", protocol, "--meter-id", "m1", "--password", "secret"]
    )
    assert result.exit_code == 1
    assert f"the {protocol} simulator has none. Drop --password" in result.output
    assert "Traceback" not in result.output


def test_an_unknown_register_map_is_refused_before_serving() -> None:
    result = CliRunner().invoke(
        app, ["serve", "--protocol", "modbus", "--meter-id", "m1", "--map", "sdm63"]
    )
    assert result.exit_code == 1
    assert "unknown register map 'sdm63'" in result.output


async def test_serve_with_a_map_serves_that_register_map() -> None:
    with served("modbus", "4711", "--map", "sunspec203") as (port, first_line):
        assert "map sunspec203" in first_line
        sunspec = open_meter(f"modbus+tcp://127.0.0.1:{port}?unit=1&map=sunspec203", timeout_s=1)
        sdm630 = open_meter(f"modbus+tcp://127.0.0.1:{port}?unit=1&map=sdm630", timeout_s=1)
        try:
            assert (await sunspec.read()).meter_id == "4711"
            with pytest.raises(MeterError):
                await sdm630.read()  # the SDM630's registers are not there
        finally:
            await sunspec.close()
            await sdm630.close()


async def test_serve_with_a_password_switches_only_for_that_password() -> None:
    url = "iec62056-21+tcp://127.0.0.1:{port}?password={password}"
    with served("iec62056-21", "PW-1", "--password", "s3cret42") as (port, _):
        right = open_meter(url.format(port=port, password="s3cret42"), timeout_s=1)
        default = open_meter(url.format(port=port, password="00000000"), timeout_s=1)
        try:
            assert await right.command(SetRelay(RelayState.OFF)) is RelayState.OFF
            with pytest.raises(MeterRejected, match="wrong password"):
                await default.command(SetRelay(RelayState.ON))
        finally:
            await right.close()
            await default.close()


@pytest.mark.parametrize(
    ("protocol", "url"),
    [
        ("dlms", "dlms+tcp://127.0.0.1:{port}?client=17&password={password}"),
        ("iec62056-21", "iec62056-21+tcp://127.0.0.1:{port}?password={password}"),
    ],
)
async def test_the_simulator_registry_passes_the_password_on(
    protocol: str, url: str, clock: ManualClock
) -> None:
    """What `serve --password` relies on, for each protocol that has a password."""
    server = await start_simulator(
        protocol, build_profile_meter("PW-2", "flat", clock), password="pw-0042"
    )
    right = open_meter(url.format(port=server.port, password="pw-0042"), timeout_s=1)
    default = open_meter(url.format(port=server.port, password="12345678"), timeout_s=1)
    try:
        assert await right.command(SetRelay(RelayState.OFF)) is RelayState.OFF
        with pytest.raises(MeterRejected):
            await default.command(SetRelay(RelayState.ON))
    finally:
        await right.close()
        await default.close()
        await server.close()


async def test_the_simulator_registry_refuses_options_a_protocol_does_not_take(
    clock: ManualClock,
) -> None:
    meter = build_profile_meter("N-1", "flat", clock)
    with pytest.raises(ValueError, match="the nbr14522 simulator has no password option"):
        await start_simulator("nbr14522", meter, password="x")
    with pytest.raises(ValueError, match="takes only password"):
        await start_simulator("dlms", meter, map="sdm630")
