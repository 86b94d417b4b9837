"""A full disk: the board keeps its critical state, drops what it can, raises an alarm, and
resumes when space returns (issue 13). Its store lives on a small tmpfs that the test fills.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from board_harness import AGENT, INTERVAL_S, Board, MarketListener, make_board

from meterchain.agents.broker import Broker, start_mosquitto

SPEED = 600.0
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MB tmpfs for the board's state (needs root, as mounting does)."""
    mount = tmp_path / "board" / "state"
    mount.mkdir(parents=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def broker() -> Iterator[Broker]:
    running = start_mosquitto(agents=[AGENT])
    yield running
    running.stop()


def fill(directory: Path) -> Path:
    """Write until the file system has no byte left."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\xff" * size)
    finally:
        os.close(fd)
    return filler


def wait_until(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_full_disk_keeps_signing_drops_history_alarms_and_recovers(
    broker: Broker, small_disk: Path, tmp_path: Path
) -> None:
    board: Board = make_board(tmp_path / "board", broker, SPEED)
    assert board.store.parent == small_disk
    listener = MarketListener(broker)
    try:
        board.start()
        board.wait_for(r"board agent .*: ready", timeout_s=60)
        board.wait_for(r"sent the reading of interval", timeout_s=30)
        wait_until(lambda: (small_disk / ".meterchain-ballast").exists(), 10, "no ballast made")

        filler = fill(small_disk)
        at_full = len(board.output())
        readings_before = {r["interval"] for r in listener.of_type("reading")}
        board.wait_for(r"alarm disk-full", timeout_s=10, after=at_full)
        board.wait_for(r"released the \d+ KB ballast", timeout_s=10, after=at_full)
        status_then = board.records("board-status")["now"]["at"]
        # Four intervals on a full disk: the signed readings go on (critical state) ...
        time.sleep(4 * INTERVAL_S / SPEED)
        readings_full = {r["interval"] for r in listener.of_type("reading")} - readings_before
        assert len(readings_full) >= 3, board.output()[-3000:]
        kept = board.records("delivery")
        assert all(str(i) in kept for i in readings_full)
        # ... what can be dropped is not written: no status, no load history.
        assert board.records("board-status")["now"]["at"] == status_then
        history = {k.split(":")[0] for k in board.records("readings")}
        late = {str(i) for i in readings_full} - {str(min(readings_full))}
        assert not (late & history), "load history written on a full disk"

        filler.unlink()
        at_space = len(board.output())
        board.wait_for(r"alarm disk-full is over", timeout_s=10, after=at_space)
        wait_until(lambda: (small_disk / ".meterchain-ballast").exists(), 10, "no new ballast")
        wait_until(
            lambda: board.records("board-status")["now"]["at"] != status_then, 10, "no status"
        )
        board.stop()
        assert board.integrity() == "ok"
        assert "Traceback" not in board.output()
    finally:
        board.stop()
        listener.close()
        os.sync()
