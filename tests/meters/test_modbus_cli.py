"""`meterchain meter serve/read/relay` for Modbus, run as a user runs them."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

MAIN = Path(sys.executable).parent / "meterchain"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MAIN), "meter", *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_serve_then_read_and_switch_through_the_command_line() -> None:
    server = subprocess.Popen(
        [str(MAIN), "meter", "serve", "--protocol", "modbus", "--meter-id", "sdm-1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        first_line = server.stdout.readline()
        match = re.search(r"on 127\.0\.0\.1:(\d+)", first_line)
        assert match is not None, first_line
        url = f"modbus+tcp://127.0.0.1:{match.group(1)}?unit=1&map=sdm630"
        read = run("read", url, "--json")
        assert read.returncode == 0, read.stderr
        reading = json.loads(read.stdout)
        keys = {"meter_id", "timestamp", "import_wh", "export_wh", "power_w", "voltage_v"}
        assert keys | {"current_a", "relay"} <= set(reading)
        assert (reading["meter_id"], reading["relay"]) == ("sdm-1", "on")
        assert reading["timestamp"].endswith("Z")
        switched = run("relay", url, "--state", "off")
        assert (switched.returncode, switched.stdout.strip()) == (0, "off"), switched.stderr
        assert json.loads(run("read", url, "--json").stdout)["power_w"] == 0.0
    finally:
        server.send_signal(signal.SIGTERM)
        _out, err = server.communicate(timeout=10)
    assert server.returncode == 0, err
    assert "Traceback" not in err


def test_a_meter_that_is_not_there_fails_with_a_message() -> None:
    result = run("read", "modbus+tcp://127.0.0.1:1?unit=1", "--timeout", "0.3")
    assert result.returncode != 0
    assert "could not connect to 127.0.0.1:1" in result.stderr
    assert "modbus+tcp://127.0.0.1:1?unit=1" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_an_unknown_register_map_fails_with_a_message() -> None:
    result = run("read", "modbus+tcp://127.0.0.1:1?unit=1&map=sdm63")
    assert result.returncode != 0
    assert "unknown register map 'sdm63'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
