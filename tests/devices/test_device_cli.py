"""`meterchain device read/set/serve` as a user runs them."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meterchain.cli import app

MAIN = Path(sys.executable).parent / "meterchain"
NIGHT = "2026-11-24T06:00:00Z"  # 03:00 in Fortaleza: no sun, whatever the wall clock says


@contextmanager
def served(*options: str) -> Iterator[dict[str, str]]:
    """`meterchain device serve` with the battery, PV, load and a Modbus meter; their URLs."""
    args = ["device", "serve", "--kind", "battery", "--kind", "pv", "--kind", "load", *options]
    args += ["--clock-start", datetime.now(UTC).isoformat(), "--virtual-start", NIGHT]
    process = subprocess.Popen(
        [str(MAIN), *args, "--meter", "modbus"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        urls = {}
        for _ in range(4):
            line = process.stdout.readline()
            found = re.match(r"serving (\w+) of site \S+ .*on (\S+)$", line.strip())
            assert found, f"serve printed {line!r}"
            urls[found.group(1)] = found.group(2)
        yield urls
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def meter_power_w(url: str) -> float:
    return float(json.loads(run("meter", "read", url, "--json"))["power_w"])


@pytest.mark.parametrize("link", ["tcp", "pty"])
def test_read_and_set_each_device_and_the_meter_follows(link: str) -> None:
    with served(*(["--pty"] if link == "pty" else [])) as urls:
        battery = json.loads(run("device", "read", urls["battery"], "--json"))
        assert battery["kind"] == "battery" and battery["device_id"] == "battery-sim"
        assert 0 <= battery["soc_fraction"] <= 1 and battery["max_charge_w"] == 3000
        pv = json.loads(run("device", "read", urls["pv"], "--json"))
        assert pv["kind"] == "pv" and pv["rated_power_w"] == 4000
        assert json.loads(run("device", "read", urls["load"], "--json"))["on"] is False

        before = meter_power_w(urls["meter"])
        assert run("device", "set", urls["battery"], "--battery-w", "1500") == (
            "battery set-point 1500 W (confirmed)\n"
        )
        assert run("device", "set", urls["load"], "--load", "on") == "load on (confirmed)\n"
        # At night the battery covered the house; now it charges 1.5 kW and the load takes 2 kW.
        after = meter_power_w(urls["meter"])
        assert after == pytest.approx(before + 3500, abs=600)
        out = run("device", "set", urls["pv"], "--pv-limit-pct", "12.34", "--json")
        assert json.loads(out) == {"kind": "pv", "pv_limit_pct": 12.3}


def test_exactly_one_set_point_is_given() -> None:
    result = CliRunner().invoke(
        app,
        ["device", "set", "sunspec+tcp://127.0.0.1:1?unit=1", "--battery-w", "1", "--load", "on"],
    )
    assert result.exit_code == 1
    assert "give exactly one of --battery-w W, --pv-limit-pct P or --load on|off" in result.output
    assert "(got --battery-w, --load)" in result.output


def test_a_set_point_for_the_wrong_kind_is_refused() -> None:
    with served() as urls:
        result = CliRunner().invoke(app, ["device", "set", urls["pv"], "--battery-w", "100"])
    assert result.exit_code == 1
    assert f"--battery-w sets a battery, but {urls['pv']} is a pv" in result.output


def test_a_bad_url_is_one_line_without_a_traceback() -> None:
    result = CliRunner().invoke(app, ["device", "read", "sunspec+tcp://127.0.0.1?unit=1"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "InvalidDeviceUrl" in result.output
    assert "Traceback" not in result.output


def test_an_unreachable_device_is_a_clear_error() -> None:
    result = CliRunner().invoke(
        app, ["device", "read", "relay+tcp://127.0.0.1:9?unit=3&coil=0", "--timeout", "0.2"]
    )
    assert result.exit_code == 1
    assert "DeviceConnectionFailed: could not connect to 127.0.0.1:9" in result.output
