"""From a device URL to its driver; the kind comes from the caller, the URL, or the device."""

from __future__ import annotations

from meterchain.devices.alarms import AlarmHook, log_alarm
from meterchain.devices.base import KINDS, Actuator
from meterchain.devices.errors import DeviceMismatch, InvalidDeviceUrl
from meterchain.devices.maps import load_device_map
from meterchain.devices.modbus_link import LinkPool, ModbusLink
from meterchain.devices.relay import RelayLoad
from meterchain.devices.sunspec import SunSpecClient
from meterchain.devices.sunspec_battery import SunSpecBattery
from meterchain.devices.sunspec_pv import SunSpecPvInverter
from meterchain.devices.url import DeviceUrl, parse_device_url
from meterchain.meters.modbus_maps import RegisterMapError


def _parsed(url: str | DeviceUrl) -> DeviceUrl:
    return url if isinstance(url, DeviceUrl) else parse_device_url(url)


def open_device(
    url: str | DeviceUrl,
    kind: str | None = None,
    *,
    links: LinkPool | None = None,
    timeout_s: float = 2.0,
    tries: int = 3,
    on_alarm: AlarmHook = log_alarm,
    revert_s: int | None = None,
) -> Actuator:
    """The driver for `url` as a `kind` (battery, pv or load). It connects on first use.

    Devices opened through one `links` pool share a connection per TCP endpoint or serial
    port (an RS-485 bus with several units); close the pool, not the devices, at the end.
    """
    parsed = _parsed(url)
    kind = kind or parsed.options.get("kind") or ("load" if parsed.protocol == "relay" else None)
    if kind is None:
        raise InvalidDeviceUrl(
            f"{parsed}: say what the device is: add kind=battery or kind=pv to the URL"
        )
    if kind not in KINDS:
        raise InvalidDeviceUrl(f"{parsed}: kind={kind} is not one of {', '.join(KINDS)}")
    link = links.link(parsed) if links is not None else None
    if kind == "load":
        return RelayLoad(parsed, link=link, timeout_s=timeout_s, tries=tries, on_alarm=on_alarm)
    driver = SunSpecBattery if kind == "battery" else SunSpecPvInverter
    return driver(
        parsed, link=link, timeout_s=timeout_s, tries=tries, on_alarm=on_alarm, revert_s=revert_s
    )


async def detect_kind(url: str | DeviceUrl, *, timeout_s: float = 2.0, tries: int = 3) -> str:
    """What a device is: a relay URL is a load; a SunSpec device with model 124 is a battery,
    one with model 123 a PV inverter (a hybrid needs kind= in its URL)."""
    parsed = _parsed(url)
    if parsed.protocol == "relay":
        return "load"
    if "kind" in parsed.options:
        return parsed.options["kind"]
    try:
        device_map = load_device_map(parsed.options.get("map", "sunspec-storage"))
    except RegisterMapError as exc:
        raise InvalidDeviceUrl(f"{parsed}: {exc}") from None
    link = ModbusLink(parsed, timeout_s=timeout_s, tries=tries)
    try:
        models = await SunSpecClient(parsed, link, device_map, parsed.unit()).models()
    finally:
        await link.close()
    found = [kind for kind, model in (("battery", 124), ("pv", 123)) if model in models]
    if len(found) == 1:
        return found[0]
    offered = sorted(m.model_id for m in models.values())
    if found:
        raise InvalidDeviceUrl(
            f"{parsed}: the device is both a battery and a PV inverter (models {offered}); "
            "add kind=battery or kind=pv to the URL"
        )
    raise DeviceMismatch(
        f"{parsed}: the device has neither storage controls (124) nor PV controls (123); "
        f"it offers models {offered}"
    )
