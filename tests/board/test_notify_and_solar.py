"""sd_notify over a real datagram socket; the numpy clear-sky model against pvlib; and the
board's import path kept free of the operator's heavy libraries."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from meterchain.board.notify import keep_watchdog, notify, watchdog_interval_s
from meterchain.board.solar import clear_sky_pv_w


@pytest.fixture
def systemd_socket(tmp_path: Path) -> socket.socket:
    """What systemd listens on: a datagram socket named in $NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(2)
    return sock


def test_notify_sends_one_datagram_of_assignments(systemd_socket: socket.socket) -> None:
    path = systemd_socket.getsockname()
    assert notify("READY=1", "STATUS=reading the meter", socket_path=path)
    assert systemd_socket.recv(4096) == b"READY=1\nSTATUS=reading the meter"


def test_notify_reaches_an_abstract_socket() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0meterchain-test-notify")
        sock.settimeout(2)
        assert notify("WATCHDOG=1", socket_path="@meterchain-test-notify")
        assert sock.recv(64) == b"WATCHDOG=1"


def test_outside_systemd_notify_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert notify("READY=1") is False
    assert watchdog_interval_s() is None


def test_the_watchdog_interval_is_for_this_process_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")  # another process's watchdog
    assert watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_PID", str(__import__("os").getpid()))
    assert watchdog_interval_s() == 60.0


async def test_the_watchdog_is_pinged_only_while_the_agent_is_healthy(
    systemd_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", systemd_socket.getsockname())
    systemd_socket.setblocking(False)
    healthy = [True]
    task = asyncio.create_task(keep_watchdog(lambda: healthy[0], interval_s=0.1))
    await asyncio.sleep(0.33)
    pings = drain(systemd_socket)
    healthy[0] = False
    await asyncio.sleep(0.1)
    drain(systemd_socket)
    await asyncio.sleep(0.3)
    task.cancel()
    assert pings.count(b"WATCHDOG=1") >= 4
    assert drain(systemd_socket) == []  # a stuck agent gets no pings: systemd restarts it


def drain(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(64))
        except BlockingIOError:
            return got


@pytest.mark.parametrize("day", ["2026-11-24", "2026-06-21", "2026-03-01"])
@pytest.mark.parametrize(
    ("latitude", "longitude"), [(-3.73, -38.53), (-23.55, -46.63), (48.14, 11.58)]
)
def test_the_numpy_clear_sky_follows_pvlib(day: str, latitude: float, longitude: float) -> None:
    """Within 11 % of pvlib's (Ineichen) daily energy, the peak in the same quarter-hour."""
    from meterchain.der.forecast import clear_sky_pv_w as pvlib_clear_sky

    start = datetime.fromisoformat(day).replace(hour=3, tzinfo=UTC)
    kwargs = {"latitude": latitude, "longitude": longitude, "peak_power_w": 4000.0,
              "steps": 96, "step_s": 900}  # fmt: skip
    ours = np.array(clear_sky_pv_w(start, **kwargs))  # type: ignore[arg-type]
    reference = np.array(pvlib_clear_sky(start, **kwargs))  # type: ignore[arg-type]
    assert abs(ours.sum() / reference.sum() - 1) < 0.11
    assert abs(int(np.argmax(ours)) - int(np.argmax(reference))) <= 1
    assert ours[reference == 0].max(initial=0) < 50  # no sun at night


def test_the_board_runs_without_the_operators_heavy_libraries(tmp_path: Path) -> None:
    """Building a board's agent (key, store, forecast, planner, devices) and planning one
    interval imports neither pandas, matplotlib, pvlib, scipy, web3 nor the web."""
    code = """
import asyncio, json, sys
from datetime import UTC, datetime
from meterchain.agents.forecasting import BoardForecast
from meterchain.agents.services import build_board
from meterchain.roles import SiteConfig
from meterchain.store.db import open_store
from meterchain.store.records import Records
import meterchain.commands.board, meterchain.cli  # the command line a board runs
store = open_store("sqlite:///" + sys.argv[1])
forecast = BoardForecast(SiteConfig(pv_kwp=4.0), Records(store, "x"), step_s=900)
pv, load = forecast(datetime(2026, 11, 24, 12, tzinfo=UTC), 96)
assert max(pv) > 1000
from meterchain.der.mpc import *  # noqa
heavy = ["pandas", "matplotlib", "pvlib", "scipy", "web3", "fastapi", "uvicorn", "psycopg"]
print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
"""
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "board.db")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
