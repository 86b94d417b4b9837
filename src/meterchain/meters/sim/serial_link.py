"""A virtual null-modem cable: two pseudo-terminals whose masters are bridged.

Each end has a device path (`/dev/pts/N`), so the simulator and the driver both open a serial
port by name exactly as they would open `/dev/ttyUSB0` on a board. A `tamper` function, if given,
rewrites what the meter sends before the client sees it: a noisy line for tests.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import tty
from collections.abc import Callable
from types import TracebackType


class VirtualSerialLink:
    """Two connected serial paths: `meter_end` for the simulator, `client_end` for drivers."""

    def __init__(self, tamper: Callable[[bytes], bytes] | None = None) -> None:
        self._tamper = tamper
        self._master_a, slave_a = os.openpty()
        self._master_b, slave_b = os.openpty()
        for fd in (slave_a, slave_b, self._master_a, self._master_b):
            tty.setraw(fd)
        self.meter_end = os.ttyname(slave_a)
        self.client_end = os.ttyname(slave_b)
        # Keep the slaves open so the masters never see EOF when one side closes and reopens.
        self._slaves = (slave_a, slave_b)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._pump, name="serial-link", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        peers = {self._master_a: self._master_b, self._master_b: self._master_a}
        while True:
            ready, _, _ = select.select([self._master_a, self._master_b, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if data and fd == self._master_a and self._tamper is not None:
                    data = self._tamper(data)
                if data:
                    os.write(peers[fd], data)

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=2)
        for fd in (self._master_a, self._master_b, *self._slaves, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> VirtualSerialLink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
