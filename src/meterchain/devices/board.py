"""The devices of one board and the three things the board asks of them.

- Carry out the market's plan: the battery set-point of the interval.
- Keep the export under a limit (a grid curtailment request, the feeder's share, the
  connection's own limit): cap the PV inverter at what the measured load and the battery
  leave room for.
- When the market is lost, fall back to the safe local rule (`safety.safe_local_setpoints`):
  the battery self-consumes, the PV never pushes the export over the limit.

Each step measures through the meter reading the agent passes in and the devices' own
states; every write is confirmed by the drivers, which raise an alarm when it is not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from meterchain.config import DevicesConfig
from meterchain.devices.alarms import DeviceAlarm, log_alarm
from meterchain.devices.base import BatteryInverter, BatteryState, PvInverter, SwitchedLoad
from meterchain.devices.modbus_link import LinkPool
from meterchain.devices.safety import (
    LocalSetpoints,
    SiteMeasurement,
    pv_cap_for_export_w,
    safe_local_setpoints,
)
from meterchain.model import Reading

log = logging.getLogger(__name__)


@dataclass
class BoardDevices:
    """What one board drives; `export_limit_w` is the connection's own limit, if any."""

    battery: BatteryInverter | None = None
    pv: PvInverter | None = None
    loads: dict[str, SwitchedLoad] = field(default_factory=dict)
    export_limit_w: float | None = None
    links: LinkPool | None = None
    pv_capped: bool = False
    alarms: list[DeviceAlarm] = field(default_factory=list)

    def export_limit(self, requested_w: float | None) -> float | None:
        """The tighter of a request and the connection's own limit (None: no limit)."""
        limits = [w for w in (requested_w, self.export_limit_w) if w is not None]
        return min(limits) if limits else None

    def record_alarm(self, alarm: DeviceAlarm) -> None:
        """The drivers' alarm hook: log now, keep for the agent to publish."""
        log_alarm(alarm)
        self.alarms.append(alarm)

    def take_alarms(self) -> list[DeviceAlarm]:
        alarms, self.alarms = self.alarms, []
        return alarms

    async def _measure(self, reading: Reading) -> tuple[SiteMeasurement, BatteryState | None]:
        pv_w = (await self.pv.read_state()).power_w if self.pv is not None else 0.0
        state = await self.battery.read_state() if self.battery is not None else None
        battery_w = (state.power_w or 0.0) if state is not None else 0.0
        soc = state.soc_fraction if state is not None else None
        return SiteMeasurement(reading.power_w, pv_w, battery_w, soc), state

    async def limit_export(
        self, limit_w: float | None, reading: Reading, battery_w: float | None = None
    ) -> float | None:
        """Cap the PV so the export stays within `limit_w` (None lifts a cap the board set).

        `battery_w` is the battery set-point about to hold (default: what it does now).
        Returns the confirmed cap in W, None when there is none.
        """
        if self.pv is None:
            return None
        if limit_w is None:
            if self.pv_capped:
                await self.pv.set_limit_w(None)
                self.pv_capped = False
            return None
        measured, _ = await self._measure(reading)
        planned = measured.battery_power_w if battery_w is None else battery_w
        cap = pv_cap_for_export_w(limit_w, measured.load_w, planned)
        confirmed = await self.pv.set_limit_w(cap)
        self.pv_capped = True
        log.info(
            "PV capped at %.0f W to keep the export within %.0f W (load %.0f W, battery %.0f W)",
            confirmed or 0.0,
            limit_w,
            measured.load_w,
            planned,
        )
        return confirmed

    async def fall_back(
        self, reading: Reading, requested_export_w: float | None, hold_s: float
    ) -> LocalSetpoints:
        """Apply the safe local rule: self-consume, never export over the limit."""
        measured, battery_state = await self._measure(reading)
        rule = safe_local_setpoints(
            measured,
            export_limit_w=self.export_limit(requested_export_w),
            battery=battery_state.limits if battery_state is not None else None,
            has_pv=self.pv is not None,
            capacity_wh=battery_state.capacity_wh if battery_state is not None else None,
            hold_s=hold_s,
        )
        if self.battery is not None and rule.battery_window_w is not None:
            await self.battery.set_window_w(*rule.battery_window_w)
        if self.pv is not None:
            await self.pv.set_limit_w(rule.pv_limit_w)
            self.pv_capped = rule.pv_limit_w is not None
        return rule

    async def close(self) -> None:
        devices = [self.battery, self.pv, *self.loads.values()]
        for device in devices:
            if device is not None:
                await device.close()
        if self.links is not None:
            await self.links.close()


def open_board_devices(config: DevicesConfig) -> BoardDevices:
    """The devices a board's [devices] section lists, sharing one link per bus."""
    from meterchain.devices.registry import open_device

    links = LinkPool(timeout_s=config.timeout_s, tries=config.tries)
    board = BoardDevices(export_limit_w=config.export_limit_w, links=links)

    def device(url: str, kind: str) -> object:
        return open_device(
            url, kind, links=links, on_alarm=board.record_alarm, revert_s=config.setpoint_revert_s
        )

    if config.battery is not None:
        battery = device(config.battery, "battery")
        assert isinstance(battery, BatteryInverter)
        board.battery = battery
    if config.pv is not None:
        pv = device(config.pv, "pv")
        assert isinstance(pv, PvInverter)
        board.pv = pv
    for load in config.loads:
        switched = device(load.url, "load")
        assert isinstance(switched, SwitchedLoad)
        board.loads[load.name] = switched
    return board
