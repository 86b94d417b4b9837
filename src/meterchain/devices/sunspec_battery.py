"""A battery inverter over SunSpec Modbus: model 124 (basic storage controls), 802 if present.

State of charge comes from 802's SoC where the device has model 802, else from 124's
ChaState; the limits from 124's WChaMax and, where present, 802's rated charge and discharge
rates and state-of-charge band (SoCMin/SoCMax, SoCRsvMin/SocRsvMax) and 124's MinRsvPct.

A set-point is a window of battery power (+ charge): StorCtl_Mod = 3 makes InWRte the charge
limit and OutWRte the discharge limit, both in percent of WChaMax; a negative limit forces the
other direction, so InWRte = p, OutWRte = -p holds the battery at p percent (the convention
Fronius documents and evcc's fronius-gen24 template uses). InOutWRte_RvrtTms makes the device
return to its own self-consumption after `revert_s` seconds unless the board writes again.
Every write is read back; a device that does not confirm raises WriteNotConfirmed and an alarm.
"""

from __future__ import annotations

from datetime import UTC, datetime

from meterchain.devices.alarms import ReadBackMismatch
from meterchain.devices.base import BatteryLimits, BatteryState
from meterchain.devices.errors import (
    DeviceError,
    DeviceFrameError,
    DeviceMismatch,
)
from meterchain.devices.safety import clamp_battery_window_w
from meterchain.devices.sunspec import Snapshot, SunSpecDevice

STORAGE, BATTERY = 124, 802
CHARGE_BIT, DISCHARGE_BIT = 1, 2
CHA_ST = {
    1: "off",
    2: "empty",
    3: "discharging",
    4: "charging",
    5: "full",
    6: "holding",
    7: "testing",
}


class SunSpecBattery(SunSpecDevice):
    """A SunSpec storage inverter (`sunspec+tcp://HOST:PORT?unit=1`)."""

    kind = "battery"

    # ------------------------------------------------------------------ reading

    async def _snapshot(self) -> Snapshot:
        self.client.require(await self.client.models(), [STORAGE], "a battery inverter")
        return await self.client.read([STORAGE, BATTERY])

    async def read_state(self) -> BatteryState:
        return self._state(await self._snapshot())

    async def soc_fraction(self) -> float:
        return (await self.read_state()).soc_fraction

    def _base_w(self, snapshot: Snapshot) -> float:
        base = snapshot.value("WChaMax")
        if base is None or not base > 0:
            raise DeviceMismatch(
                f"{self.url}: WChaMax (model 124) is {base}; the set-points are percentages of it"
            )
        return base

    def _state(self, snapshot: Snapshot) -> BatteryState:
        soc_pct = snapshot.value("SoC")
        if soc_pct is None:
            soc_pct = snapshot.value("ChaState")
        if soc_pct is None:
            raise DeviceMismatch(
                f"{self.url}: the device reports no state of charge (802 SoC, 124 ChaState)"
            )
        if not -0.5 <= soc_pct <= 100.5:
            raise DeviceFrameError(f"{self.url}: state of charge {soc_pct:g} % cannot be true")
        base = self._base_w(snapshot)
        charge = [base, *(v for v in [snapshot.value("WChaRteMax")] if v is not None)]
        discharge = [base, *(v for v in [snapshot.value("WDisChaRteMax")] if v is not None)]
        floors = [snapshot.value(n) for n in ("MinRsvPct", "SoCRsvMin", "SoCMin")]
        ceilings = [snapshot.value(n) for n in ("SoCMax", "SocRsvMax")]
        limits = BatteryLimits(
            max_charge_w=min(charge),
            max_discharge_w=min(discharge),
            soc_min_fraction=max([0.0, *(v / 100 for v in floors if v is not None)]),
            soc_max_fraction=min([1.0, *(v / 100 for v in ceilings if v is not None)]),
        )
        status_code = snapshot.raw("ChaSt") or snapshot.raw("ChaSt_802")
        return BatteryState(
            device_id=self.client.device_id,
            timestamp=datetime.now(UTC),
            soc_fraction=min(1.0, max(0.0, soc_pct / 100)),
            power_w=snapshot.value("W"),
            window_w=self._window(snapshot, base),
            limits=limits,
            capacity_wh=snapshot.value("WHRtg"),
            status=CHA_ST.get(int(status_code or 0), "unknown"),
        )

    @staticmethod
    def _window(snapshot: Snapshot, base_w: float) -> tuple[float, float] | None:
        mode = int(snapshot.raw("StorCtl_Mod") or 0)
        if not mode & (CHARGE_BIT | DISCHARGE_BIT):
            return None
        high, low = base_w, -base_w
        charge_pct, discharge_pct = snapshot.value("InWRte"), snapshot.value("OutWRte")
        if mode & CHARGE_BIT and charge_pct is not None:
            high = charge_pct / 100 * base_w
        if mode & DISCHARGE_BIT and discharge_pct is not None:
            low = -discharge_pct / 100 * base_w
        return (low, high)

    # ------------------------------------------------------------------ set-points

    async def set_power_w(self, power_w: float) -> float:
        """Hold the battery at `power_w` (+ charge), clamped to its limits; the confirmed W."""
        low, high = await self.set_window_w(power_w, power_w)
        return high if power_w >= 0 else low

    async def set_window_w(self, low_w: float, high_w: float) -> tuple[float, float]:
        """Let the battery follow the surplus within [low, high] W; the confirmed window."""
        what = f"the battery window [{low_w:g}, {high_w:g}] W"
        try:
            snapshot = await self._snapshot()
            state = self._state(snapshot)
            low, high = clamp_battery_window_w(low_w, high_w, state.limits, state.soc_fraction)
            base = self._base_w(snapshot)
            encode = self.client.encode
            # Equal bounds encode to the same magnitude both ways (rounding is symmetric), so a
            # fixed set-point never becomes an inverted or widened window.
            in_words = encode(snapshot, "InWRte", high / base * 100)
            out_words = encode(snapshot, "OutWRte", -low / base * 100)
            after = await self.client.write_verified(
                STORAGE,
                {
                    "InOutWRte_RvrtTms": encode(snapshot, "InOutWRte_RvrtTms", self.revert_s),
                    "OutWRte": out_words,
                    "InWRte": in_words,
                    "StorCtl_Mod": encode(snapshot, "StorCtl_Mod", CHARGE_BIT | DISCHARGE_BIT),
                },
                unchanged=snapshot,
                always=["InOutWRte_RvrtTms"],
            )
        except (DeviceError, ReadBackMismatch) as exc:
            raise self.guard.failed(f"writing {what}", exc) from exc
        window = self._window(after, base)
        assert window is not None
        self.guard.confirmed()
        return window

    async def self_consume(self) -> None:
        """StorCtl_Mod = 0: the inverter follows the site's surplus by itself."""
        try:
            snapshot = await self._snapshot()
            await self.client.write_verified(
                STORAGE, {"StorCtl_Mod": self.client.encode(snapshot, "StorCtl_Mod", 0)}
            )
        except (DeviceError, ReadBackMismatch) as exc:
            raise self.guard.failed("handing the battery to self-consumption", exc) from exc
        self.guard.confirmed()
