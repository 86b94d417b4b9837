"""`meterchain meter serve --protocol dlms`, `meter read` and `meter relay` as a user runs them."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

MAIN = Path(sys.executable).parent / "meterchain"


@pytest.fixture(scope="module")
def served_port() -> Iterator[int]:
    process = subprocess.Popen(
        [
            str(MAIN),
            "meter",
            "serve",
            "--protocol",
            "dlms",
            "--port",
            "0",
            "--meter-id",
            "CLI-0042",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        found = re.search(r"on 127\.0\.0\.1:(\d+)", first)
        assert found, f"serve printed {first!r}"
        yield int(found.group(1))
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MAIN), "meter", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_meter_read_prints_one_json_reading(served_port: int) -> None:
    result = run("read", f"dlms+tcp://127.0.0.1:{served_port}?client=16&server=1", "--json")
    assert result.returncode == 0, result.stderr
    reading = json.loads(result.stdout)
    assert reading["meter_id"] == "CLI-0042" and reading["relay"] in ("on", "off")
    assert {"timestamp", "import_wh", "export_wh", "power_w", "voltage_v", "current_a"} <= set(
        reading
    )


def test_meter_relay_switches_with_the_password_client(served_port: int) -> None:
    url = f"dlms+tcp://127.0.0.1:{served_port}?client=17&password=12345678"
    result = run("relay", url, "--state", "off")
    assert (result.returncode, result.stdout.strip()) == (0, "off"), result.stderr


def test_a_refused_command_exits_non_zero_with_the_reason_and_no_traceback(
    served_port: int,
) -> None:
    result = run("relay", f"dlms+tcp://127.0.0.1:{served_port}", "--state", "off")
    assert result.returncode == 1
    assert "read-write-denied" in result.stderr and "client=17" in result.stderr
    assert "Traceback" not in result.stderr
