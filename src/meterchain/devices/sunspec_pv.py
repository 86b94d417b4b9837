"""A PV inverter over SunSpec Modbus: production from model 101/102/103, its limit from 123.

The active-power limit is model 123's WMaxLimPct, in percent of model 121's WMax, in force
while WMaxLim_Ena is 1; WMaxLimPct_RvrtTms makes the inverter lift it `revert_s` seconds after
the write unless the board writes again. A limit is rounded down to the device's resolution
(its scale factor), so the export it bounds is never exceeded by rounding. Model 123 rather
than the 7xx DER models: the inverters in the field expose the 12x controls, and the storage
controls of model 124 belong to the same generation.
"""

from __future__ import annotations

from datetime import UTC, datetime

from meterchain.devices.alarms import ReadBackMismatch
from meterchain.devices.base import PvState
from meterchain.devices.errors import DeviceError, DeviceMismatch
from meterchain.devices.safety import clamp_pv_limit_pct
from meterchain.devices.sunspec import Snapshot, SunSpecDevice

INVERTER, SETTINGS, CONTROLS = 101, 121, 123
ST = {1: "off", 2: "sleeping", 3: "starting", 4: "mppt", 5: "throttled", 6: "shutting-down",
      7: "fault", 8: "standby"}  # fmt: skip


class SunSpecPvInverter(SunSpecDevice):
    """A SunSpec PV inverter (`sunspec+tcp://HOST:PORT?unit=2`)."""

    kind = "pv"

    async def _snapshot(self) -> Snapshot:
        self.client.require(
            await self.client.models(), [INVERTER, SETTINGS, CONTROLS], "a PV inverter"
        )
        return await self.client.read([INVERTER, SETTINGS, CONTROLS])

    def _rated_w(self, snapshot: Snapshot) -> float:
        rated = snapshot.value("WMax")
        if rated is None or not rated > 0:
            raise DeviceMismatch(
                f"{self.url}: WMax (model 121) is {rated}; the limit is a percentage of it"
            )
        return rated

    def _state(self, snapshot: Snapshot) -> PvState:
        power = snapshot.value("W")
        if power is None:
            raise DeviceMismatch(f"{self.url}: the inverter reports no output power (W)")
        enabled = snapshot.raw("WMaxLim_Ena") == 1
        return PvState(
            device_id=self.client.device_id,
            timestamp=datetime.now(UTC),
            power_w=power,
            energy_wh=snapshot.value("WH") or 0.0,
            rated_power_w=self._rated_w(snapshot),
            limit_pct=snapshot.value("WMaxLimPct") if enabled else None,
            status=ST.get(int(snapshot.raw("St") or 0), "unknown"),
        )

    async def read_state(self) -> PvState:
        return self._state(await self._snapshot())

    async def set_limit_pct(self, percent: float | None) -> float | None:
        """Cap the output at `percent` of WMax (clamped to 0..100), or lift the cap (None)."""
        what = "lifting the PV limit" if percent is None else f"the PV limit {percent:g} %"
        try:
            snapshot = await self._snapshot()
            encode = self.client.encode
            if percent is None:
                writes = {"WMaxLim_Ena": encode(snapshot, "WMaxLim_Ena", 0)}
            else:
                writes = {
                    "WMaxLimPct": encode(
                        snapshot, "WMaxLimPct", clamp_pv_limit_pct(percent), round_down=True
                    ),
                    "WMaxLimPct_RvrtTms": encode(snapshot, "WMaxLimPct_RvrtTms", self.revert_s),
                    "WMaxLim_Ena": encode(snapshot, "WMaxLim_Ena", 1),
                }
            after = await self.client.write_verified(
                CONTROLS, writes, unchanged=snapshot, always=["WMaxLimPct_RvrtTms"]
            )
        except (DeviceError, ReadBackMismatch) as exc:
            raise self.guard.failed(f"writing {what}", exc) from exc
        self.guard.confirmed()
        if percent is None:
            return None
        confirmed = after.value("WMaxLimPct")
        assert confirmed is not None  # it read back as written
        return confirmed

    async def set_limit_w(self, limit_w: float | None) -> float | None:
        """Cap the output at `limit_w` (None lifts the cap); the confirmed cap in W."""
        if limit_w is None:
            await self.set_limit_pct(None)
            return None
        rated = self._rated_w(await self._snapshot())
        percent = await self.set_limit_pct(limit_w / rated * 100)
        return None if percent is None else percent / 100 * rated
