"""A relay-switched load: one coil of a Modbus relay board (`relay+tcp://HOST:PORT?unit=3&coil=0`).

Switching writes the coil, checks the echo and reads the coil back; a board that does not
confirm raises WriteNotConfirmed and an alarm.
"""

from __future__ import annotations

from datetime import UTC, datetime

from meterchain.devices.alarms import AlarmHook, ReadBackMismatch, WriteGuard, log_alarm
from meterchain.devices.base import LoadState
from meterchain.devices.errors import DeviceError, InvalidDeviceUrl
from meterchain.devices.modbus_link import LINK_OPTIONS, ModbusLink
from meterchain.devices.url import DeviceUrl

URL_OPTIONS = ("unit", "coil", "kind", *LINK_OPTIONS)


class RelayLoad:
    """A load behind one coil of a relay board."""

    kind = "load"

    def __init__(
        self,
        url: DeviceUrl,
        *,
        link: ModbusLink | None = None,
        timeout_s: float = 2.0,
        tries: int = 3,
        on_alarm: AlarmHook = log_alarm,
    ) -> None:
        if url.protocol != "relay":
            raise InvalidDeviceUrl(
                f"{url}: a switched load is reached over relay+tcp:// or relay+rtu://"
            )
        url.reject_unknown_options(URL_OPTIONS)
        if url.option("kind", self.kind) != self.kind:
            raise InvalidDeviceUrl(f"{url}: a relay URL is always kind=load")
        if "coil" not in url.options:
            raise InvalidDeviceUrl(
                f"{url}: name the relay's coil, e.g. {url.raw.split('?')[0]}?unit=1&coil=0"
            )
        self.url = url
        self.unit = url.unit()
        self.coil = url.int_option("coil", 0)
        if not 0 <= self.coil <= 0xFFFF:
            raise InvalidDeviceUrl(f"{url}: coil={self.coil} is outside 0..65535")
        self._owns_link = link is None
        self.link = link or ModbusLink(url, timeout_s=timeout_s, tries=tries)
        self.device_id = f"unit {self.unit} coil {self.coil} on {url.where}"
        self.guard = WriteGuard(str(url), self.kind, on_alarm)

    async def read_state(self) -> LoadState:
        (on,) = await self.link.read_coils(self.unit, self.coil, 1)
        return LoadState(self.device_id, datetime.now(UTC), on)

    async def switch(self, on: bool) -> bool:
        what = f"switching the load {'on' if on else 'off'}"
        try:
            echoed = await self.link.write_coil(self.unit, self.coil, on)
            if echoed != on:
                raise ReadBackMismatch(f"the board echoed {echoed} for {on}")
            (now,) = await self.link.read_coils(self.unit, self.coil, 1)
            if now != on:
                raise ReadBackMismatch(f"coil {self.coil} reads {now} after writing {on}")
        except (DeviceError, ReadBackMismatch) as exc:
            raise self.guard.failed(what, exc) from exc
        self.guard.confirmed()
        return now

    async def close(self) -> None:
        if self._owns_link:
            await self.link.close()
