"""systemd's service notification protocol (sd_notify), written out: it is one datagram.

A service started with `Type=notify` tells systemd it is ready (`READY=1`), what it is doing
(`STATUS=…`) and that it is alive (`WATCHDOG=1`, at least every `WatchdogSec=`) by sending
newline-separated assignments to the datagram socket named in `$NOTIFY_SOCKET` (a path, or
`@name` in the abstract namespace). No maintained small library does only this (`sdnotify`
was last released in 2017; `systemd-python` needs libsystemd headers to build on the board),
and the protocol is a dozen lines, so it lives here. Outside systemd every call is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def notify(*assignments: str, socket_path: str | None = None) -> bool:
    """Send `assignments` (e.g. "READY=1", "STATUS=reading") to systemd; False outside it."""
    path = socket_path if socket_path is not None else os.environ.get(NOTIFY_SOCKET_ENV, "")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    message = "\n".join(assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", path, exc)
        return False
    return True


def watchdog_interval_s() -> float | None:
    """The watchdog's period if systemd set one for this process (`WatchdogSec=`), else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        return int(usec) / 1_000_000
    except ValueError:
        return None


async def keep_watchdog(healthy: Callable[[], bool], interval_s: float | None = None) -> None:
    """Ping the watchdog at half its period while `healthy()` says so; stop pinging otherwise,
    so systemd restarts a process that is stuck (an event loop that no longer turns never
    gets here at all). Returns at once when there is no watchdog."""
    period = interval_s if interval_s is not None else watchdog_interval_s()
    if period is None:
        return
    while True:
        if healthy():
            notify("WATCHDOG=1")
        else:
            log.error("not pinging the systemd watchdog: the agent is not healthy")
        await asyncio.sleep(period / 2)
