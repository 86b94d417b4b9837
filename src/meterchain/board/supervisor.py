"""What runs beside a board's agent: the watchdog, the disk, retention, the clock, the status.

Every `period_s` (real seconds) the supervisor
* pings systemd's watchdog while the agent's tasks are alive (`notify`);
* checks the store's disk (`DiskGuard`): while it is low, the agent stops its optional writes
  (load history, heartbeats, this status) and a `disk-full` alarm is raised;
* prunes what the retention policy no longer keeps (`store.retention`), once a virtual hour;
* raises `clock-skew` when the board's clock is more than `skew_alarm_s` off the market's;
* raises `broker-unreachable` when the broker has been away for more than an interval;
* writes the status `board status` shows, and sends each alarm's start and end to the
  operator's monitor as a `device-alarm` (device "board").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from meterchain.board.disk import DiskGuard
from meterchain.board.notify import keep_watchdog, notify
from meterchain.board.skew import CorrectedClock
from meterchain.board.status import STATUS_KEY, STATUS_KIND
from meterchain.store.errors import StoreError
from meterchain.store.retention import Retention

if TYPE_CHECKING:
    from meterchain.agents.bus_mqtt import MqttBus
    from meterchain.agents.prosumer import ProsumerAgent

log = logging.getLogger(__name__)


class BoardSupervisor:
    """Keeps a board's agent healthy and visible; see the module's docstring."""

    def __init__(
        self,
        agent: ProsumerAgent,
        bus: MqttBus,
        *,
        clock: CorrectedClock,
        interval_s: int,
        speed: float,
        guard: DiskGuard | None,
        retention: Retention | None,
        period_s: float = 5.0,
        skew_alarm_s: float = 30.0,
        alive: Callable[[], bool] = lambda: True,
    ) -> None:
        self.agent = agent
        self.bus = bus
        self.clock = clock
        self.interval_s = interval_s
        self.speed = speed
        self.guard = guard
        self.retention = retention
        self.period_s = period_s
        self.skew_alarm_s = skew_alarm_s
        self.alive = alive
        self.alarms: dict[str, str] = {}
        self.disk: dict[str, object] | None = None
        self._pruned_at: datetime | None = None
        self._offline_since: float | None = None

    async def run(self) -> None:
        notify("READY=1", f"STATUS=board agent {self.agent.name} running")
        watchdog = asyncio.create_task(keep_watchdog(self.alive), name="watchdog")
        await self.first_reading()
        try:
            while True:
                await self.check()
                await asyncio.sleep(self.period_s)
        finally:
            watchdog.cancel()
            notify("STOPPING=1")

    async def first_reading(self) -> None:
        """Read the meter once at start: the status has a reading, and a dead meter shows."""
        from meterchain.meters.errors import MeterError

        try:
            reading = await self.agent.read_meter()
        except MeterError as exc:
            log.warning("%s: no first reading: %s", self.agent.name, exc)
            return
        log.info(
            "%s: first reading: import %.0f Wh, export %.0f Wh, %.0f W",
            self.agent.name,
            reading.import_wh,
            reading.export_wh,
            reading.power_w,
            extra={"event": "first_reading"},
        )

    async def check(self) -> None:
        """One round: disk, retention, clock, broker, status, alarms."""
        alarms: dict[str, str] = {}
        if self.guard is not None:
            state = self.guard.check()
            self.disk = state.as_json()
            self.agent.drop_optional_writes = state.low
            if state.low:
                alarms["disk-full"] = (
                    f"the store's disk has {state.free_bytes // 1024} KB free: the board keeps "
                    "its signed orders and readings and stops writing history and status; free "
                    "space on the SD card"
                )
        self._prune(low=bool(alarms))
        offset = self.clock.estimator.offset_s
        if offset is not None and abs(offset) > self.skew_alarm_s:
            alarms["clock-skew"] = (
                f"this board's clock is {offset:+.0f} s off the market's; corrected from the "
                "market's messages, but set up NTP"
            )
        loop = asyncio.get_running_loop()
        if self.bus.connected:
            self._offline_since = None
        elif self._offline_since is None:
            self._offline_since = loop.time()
        elif (loop.time() - self._offline_since) * self.speed > self.interval_s:
            alarms["broker-unreachable"] = (
                f"no broker for {(loop.time() - self._offline_since) * self.speed / 60:.0f} "
                f"minutes ({self.bus.last_error or 'no answer'}): the board reads, stores and "
                "runs its devices on the safe local rule until it is back"
            )
        await self._announce(alarms)
        if not self.agent.drop_optional_writes:
            self._write_status()

    def _prune(self, *, low: bool) -> None:
        if self.retention is None:
            return
        now = self.clock.now()
        due = self._pruned_at is None or (now - self._pruned_at).total_seconds() >= 3600
        if not (due or low):
            return
        self._pruned_at = now
        try:
            removed = self.retention.prune(now)
        except StoreError as exc:
            log.warning("%s: pruning old records failed: %s", self.agent.name, exc)
            return
        if removed:
            self.agent.records._cache.clear()  # the agent reads them afresh
            log.info("%s: retention removed %d old records", self.agent.name, removed)

    async def _announce(self, alarms: dict[str, str]) -> None:
        """Log each alarm's start and end, and tell the monitor."""
        from meterchain.agents.messages import DeviceAlarmNotice
        from meterchain.agents.runtime import Performative

        changes = [(code, text, True) for code, text in alarms.items() if code not in self.alarms]
        changes += [(code, text, False) for code, text in self.alarms.items() if code not in alarms]
        self.alarms = alarms
        for code, text, active in changes:
            if active:
                log.warning("%s: alarm %s: %s", self.agent.name, code, text)
            else:
                log.info("%s: alarm %s is over", self.agent.name, code)
            target = self.agent.alarms_to or self.agent.monitor
            if target is None:
                continue
            notice = DeviceAlarmNotice(
                meter_id=self.agent.meter_id,
                device="board",
                kind="board",
                code=code,
                message=text if active else f"over: {text}",
                active=active,
                at=datetime.now(UTC),
            )
            try:
                await self.agent.send(target, Performative.INFORM, notice)
            except StoreError as exc:  # a full disk may refuse even this
                log.warning("%s: could not queue the %s alarm: %s", self.agent.name, code, exc)

    def snapshot(self) -> dict[str, Any]:
        reading = self.agent.last_reading
        return {
            "at": datetime.now(UTC).isoformat(),
            "virtual_now": self.clock.now().isoformat(),
            "last_reading": None
            if reading is None
            else {
                "at": reading.timestamp.isoformat(),
                "import_wh": reading.import_wh,
                "export_wh": reading.export_wh,
                "power_w": reading.power_w,
            },
            "meter_error": self.agent.last_meter_error,
            "broker": {
                "where": self.bus.where,
                "connected": self.bus.connected,
                "last_error": self.bus.last_error or None,
                "pending": self.bus.pending,
                "expired": self.bus.expired,
            },
            "clock": {
                "offset_s": self.clock.estimator.offset_s,
                "samples": self.clock.estimator.samples,
            },
            "disk": self.disk,
            "alarms": [{"code": code, "message": text} for code, text in self.alarms.items()],
        }

    def _write_status(self) -> None:
        try:
            self.agent.records.put(STATUS_KIND, STATUS_KEY, self.snapshot())
        except StoreError as exc:
            log.warning("%s: could not write its status: %s", self.agent.name, exc)
