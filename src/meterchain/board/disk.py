"""Keeping a board's store writable when its SD card fills up.

The store holds what must never be lost (the orders and readings the board signed, the
registers at each interval's boundary, the messages not yet sent) and what can go (live
status, load history beyond the retention, heartbeats). `DiskGuard` watches the free space
of the store's file system:

* below `low_bytes` it says so (`low`): the agent stops writing what it can drop and raises
  an alarm (`disk-full`);
* it keeps a ballast file of `ballast_bytes` beside the store while space allows, and deletes
  it when the space runs out, so the critical writes of the next intervals still fit;
* when space returns, the ballast is made again and the alarm ends.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BALLAST_NAME = ".meterchain-ballast"
DEFAULT_LOW_BYTES = 2 * 2**20
DEFAULT_BALLAST_BYTES = 1 * 2**20


@dataclass
class DiskState:
    free_bytes: int
    low: bool
    ballast_bytes: int

    def as_json(self) -> dict[str, object]:
        return {
            "free_mb": round(self.free_bytes / 2**20, 2),
            "state": "LOW: dropping what can be dropped" if self.low else "ok",
            "ballast_mb": round(self.ballast_bytes / 2**20, 2),
        }


class DiskGuard:
    """Watches the file system that holds `directory` (the store's)."""

    def __init__(
        self,
        directory: Path,
        *,
        low_bytes: int = DEFAULT_LOW_BYTES,
        ballast_bytes: int = DEFAULT_BALLAST_BYTES,
    ) -> None:
        self.directory = directory
        self.ballast = directory / BALLAST_NAME
        self.low_bytes = low_bytes
        self.ballast_bytes = ballast_bytes
        self.low = False

    def free_bytes(self) -> int:
        stats = os.statvfs(self.directory)
        return stats.f_bavail * stats.f_frsize

    def check(self) -> DiskState:
        """Look at the space now; give up or rebuild the ballast; say whether space is low.

        Low starts when less than `low_bytes` is free (the ballast is released then) and ends
        only once there is room for the ballast again, so the state does not flap.
        """
        free = self.free_bytes()
        ballast = self.ballast.stat().st_size if self.ballast.exists() else 0
        if free < self.low_bytes:
            if ballast:
                self.ballast.unlink(missing_ok=True)
                log.warning(
                    "disk nearly full (%d KB free): released the %d KB ballast for the store",
                    free // 1024,
                    ballast // 1024,
                )
                free, ballast = free + ballast, 0
            self.low = True
        elif free >= self.low_bytes + self.ballast_bytes:
            if ballast < self.ballast_bytes:
                self._make_ballast()
                ballast = self.ballast.stat().st_size if self.ballast.exists() else 0
            self.low = False
        return DiskState(free, self.low, ballast)

    def _make_ballast(self) -> None:
        try:
            with self.ballast.open("wb") as file:
                file.truncate(0)
                # Real blocks, not a sparse file: the space must truly be held.
                chunk = b"\0" * 65536
                for _ in range(self.ballast_bytes // len(chunk)):
                    file.write(chunk)
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            log.warning("cannot make the disk ballast %s: %s", self.ballast, exc)
            self.ballast.unlink(missing_ok=True)
