"""SunSpec over Modbus: find a device's models, read their points, write and verify set-points.

The device map says how each point is encoded; the device says where its models are: the
client walks the model chain from the map's base address ("SunS", then ID and length of each
model, up to 0xFFFF) and reads each model it needs in one request. Scale factors are read
from the device with the values they scale, never assumed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from meterchain.devices.alarms import AlarmHook, ReadBackMismatch, WriteGuard, log_alarm
from meterchain.devices.errors import (
    DeviceError,
    DeviceFrameError,
    DeviceMismatch,
    DeviceRejected,
    InvalidDeviceUrl,
)
from meterchain.devices.maps import DEFAULT_MAPS, DeviceMap, load_device_map
from meterchain.devices.modbus_link import LINK_OPTIONS, ModbusLink
from meterchain.devices.url import DeviceUrl
from meterchain.meters.errors import MeterError
from meterchain.meters.modbus_maps import (
    Point,
    RegisterMapError,
    decode_raw,
    decode_scale_factor,
    decode_text,
    encode_raw,
)

SUNSPEC_MARKER = [0x5375, 0x6E53]  # "SunS"
END_MODEL = 0xFFFF
MAX_MODELS = 64
URL_OPTIONS = ("unit", "map", "kind", "revert_s", *LINK_OPTIONS)


@dataclass(frozen=True)
class Model:
    """Where one model sits on the device: the address of its ID register and its length."""

    model_id: int
    start: int
    length: int

    @property
    def size(self) -> int:
        return self.length + 2


class Snapshot:
    """Registers read from some models, decoded through the device map on demand."""

    def __init__(
        self, device_map: DeviceMap, where: Mapping[str, int], words: Mapping[int, int]
    ) -> None:
        self.device_map = device_map
        self.where = where
        self.words = words

    def has(self, name: str) -> bool:
        return name in self.where and self.where[name] in self.words

    def point(self, name: str) -> Point:
        return self.device_map.points[name]

    def registers(self, name: str) -> list[int]:
        point = self.point(name)
        address = self.where[name]
        return [self.words[address + i] for i in range(point.registers)]

    def raw(self, name: str) -> float | None:
        """The unscaled number, None if the point is absent or not implemented."""
        if not self.has(name):
            return None
        try:
            return decode_raw(self.device_map.register_map, self.point(name), self.registers(name))
        except MeterError as exc:
            raise DeviceFrameError(f"point {name}: {exc}") from None

    def scale_factor(self, name: str) -> int | None:
        """The scale factor of point `name` (0 if it has none), None if not implemented."""
        factor_name = self.point(name).scale_factor
        if factor_name is None:
            return 0
        if not self.has(factor_name):
            return None
        try:
            return decode_scale_factor(
                self.device_map.register_map,
                self.point(factor_name),
                self.registers(factor_name),
            )
        except MeterError as exc:
            raise DeviceFrameError(f"{exc}") from None

    def value(self, name: str) -> float | None:
        """The point in its unit (raw × 10^sf × scale), None if absent or not implemented."""
        raw = self.raw(name)
        factor = self.scale_factor(name) if raw is not None else None
        if raw is None or factor is None:
            return None
        value = raw * 10.0**factor * self.point(name).scale
        return value if math.isfinite(value) else None

    def text(self, name: str) -> str:
        try:
            return decode_text(self.point(name), self.registers(name))
        except MeterError as exc:
            raise DeviceFrameError(f"point {name}: {exc}") from None


class SunSpecClient:
    """One SunSpec device: a unit id on a Modbus link, read and written through a device map."""

    def __init__(
        self,
        url: DeviceUrl,
        link: ModbusLink,
        device_map: DeviceMap,
        unit: int,
        aliases: Mapping[int, Iterable[int]] | None = None,
    ) -> None:
        self.url = url
        self.link = link
        self.device_map = device_map
        self.unit = unit
        # A map model that the device may offer under another id with the same layout.
        self.aliases = {m: tuple(ids) for m, ids in (aliases or {}).items()}
        self._models: dict[int, Model] | None = None
        self.device_id = ""

    # ------------------------------------------------------------------ discovery

    async def models(self) -> dict[int, Model]:
        """The device's models by the map's ids, found by walking the chain (once)."""
        if self._models is None:
            self._models = await self._walk()
        return self._models

    def forget(self) -> None:
        """Walk the chain again next time (after an error: the device may have changed)."""
        self._models = None

    async def _walk(self) -> dict[int, Model]:
        base = self.device_map.sunspec.base
        try:
            marker = await self.link.read_holding(self.unit, base, 2)
        except DeviceRejected as exc:
            raise DeviceMismatch(
                f"{self.url}: {exc}; a SunSpec device keeps 'SunS' at its base address "
                f"({base} in map {self.device_map.name!r})"
            ) from None
        if marker != SUNSPEC_MARKER:
            raise DeviceMismatch(
                f"{self.url}: no SunSpec marker 'SunS' at holding register {base} (found "
                f"{marker[0]:#06x} {marker[1]:#06x}); is it a SunSpec device, with its base there?"
            )
        found: dict[int, Model] = {}
        address = base + 2
        for _ in range(MAX_MODELS):
            model_id, length = await self.link.read_holding(self.unit, address, 2)
            if model_id == END_MODEL:
                break
            found.setdefault(model_id, Model(model_id, address, length))
            address += 2 + length
            if address + 2 > 0x10000:
                break
        else:
            raise DeviceFrameError(f"{self.url}: the SunSpec model chain has no end marker")
        for model_id, ids in self.aliases.items():
            if model_id not in found:
                alias = next((found[i] for i in ids if i in found), None)
                if alias is not None:
                    found[model_id] = Model(model_id, alias.start, alias.length)
        for point in self.device_map.points.values():
            model = found.get(point.model or 0)
            if model is not None and (point.offset or 0) + point.registers > model.size:
                raise DeviceMismatch(
                    f"{self.url}: SunSpec model {model.model_id} is {model.length} registers "
                    f"long, too short for point {point.name} at offset {point.offset}"
                )
        if 1 in found and self.device_map.register_map.identity is not None:
            snapshot = await self._read_models(found, [1])
            self.device_id = snapshot.text(self.device_map.register_map.identity)
        return found

    def require(self, models: Mapping[int, Model], needed: Iterable[int], what: str) -> None:
        missing = sorted(set(needed) - set(models))
        if missing:
            offered = sorted(m.model_id for m in models.values())
            raise DeviceMismatch(
                f"{self.url}: {what} needs SunSpec model(s) {missing}; the device offers "
                f"{offered or 'none'}"
            )

    # ------------------------------------------------------------------ reading

    async def read(self, model_ids: Iterable[int]) -> Snapshot:
        """One request per model; models the device lacks are skipped."""
        try:
            return await self._read_models(await self.models(), model_ids)
        except DeviceError:
            self.forget()
            raise

    async def _read_models(self, models: Mapping[int, Model], model_ids: Iterable[int]) -> Snapshot:
        words: dict[int, int] = {}
        for model_id in dict.fromkeys(model_ids):
            model = models.get(model_id)
            if model is None:
                continue
            block = await self.link.read_holding(self.unit, model.start, model.size)
            words.update((model.start + i, word) for i, word in enumerate(block))
        where = {
            name: models[point.model].start + (point.offset or 0)
            for name, point in self.device_map.points.items()
            if point.model is not None and point.model in models
        }
        return Snapshot(self.device_map, where, words)

    # ------------------------------------------------------------------ writing

    def encode(
        self, snapshot: Snapshot, name: str, value: float, *, round_down: bool = False
    ) -> list[int]:
        """`value` in the point's unit as its registers, scaled by the device's scale factor."""
        if name not in self.device_map.writable:
            raise DeviceMismatch(
                f"{self.url}: map {self.device_map.name!r} does not let {name} be written"
            )
        if not snapshot.has(name):
            raise DeviceMismatch(f"{self.url}: the device has no point {name}")
        point = snapshot.point(name)
        factor = snapshot.scale_factor(name)
        if factor is None:
            raise DeviceMismatch(f"{self.url}: the scale factor of {name} is not implemented")
        raw = value / point.scale / 10.0**factor
        raw = float(math.floor(raw + 1e-9) if round_down else round(raw))
        try:
            return encode_raw(self.device_map.register_map, point, raw)
        except ValueError:
            raise DeviceMismatch(
                f"{self.url}: {name} = {value:g} does not fit the device's register "
                f"({point.type}, scale factor {factor})"
            ) from None

    async def write_verified(
        self,
        model_id: int,
        values: Mapping[str, list[int]],
        *,
        unchanged: Snapshot | None = None,
        always: Iterable[str] = (),
    ) -> Snapshot:
        """Write encoded points in the order given, then read the model back and compare.

        Adjacent points are written in one request. Points that already hold their value in
        `unchanged` (a snapshot just read) are not written again, except those in `always`
        (a revert timer restarts when it is written). Raises ReadBackMismatch naming each
        point that reads back different.
        """
        models = await self.models()
        snapshot_where = {
            name: models[model_id].start + (self.device_map.points[name].offset or 0)
            for name in values
        }
        keep = set(always)
        runs: list[tuple[int, list[int], list[str]]] = []
        for name, words in values.items():
            if (
                unchanged is not None
                and name not in keep
                and unchanged.has(name)
                and unchanged.registers(name) == words
            ):
                continue
            address = snapshot_where[name]
            if runs and runs[-1][0] + len(runs[-1][1]) == address:
                runs[-1][1].extend(words)
                runs[-1][2].append(name)
            else:
                runs.append((address, list(words), [name]))
        try:
            for address, words, _ in runs:
                await self.link.write_registers(self.unit, address, words)
            after = await self._read_models(models, [model_id])
        except DeviceError:
            self.forget()
            raise
        wrong = [
            f"{name} reads {after.registers(name)} after writing {words}"
            for name, words in values.items()
            if after.registers(name) != words
        ]
        if wrong:
            raise ReadBackMismatch("; ".join(wrong))
        return after


def open_client(
    url: DeviceUrl,
    kind: str,
    link: ModbusLink | None,
    timeout_s: float,
    tries: int,
) -> tuple[SunSpecClient, bool]:
    """The SunSpec client of a device URL, and whether it owns its link."""
    if url.protocol != "sunspec":
        raise InvalidDeviceUrl(f"{url}: a {kind} is reached over sunspec+tcp:// or sunspec+rtu://")
    url.reject_unknown_options(URL_OPTIONS)
    stated = url.option("kind", kind)
    if stated != kind:
        raise InvalidDeviceUrl(f"{url}: kind={stated}, but it is opened as a {kind}")
    try:
        device_map = load_device_map(url.option("map", DEFAULT_MAPS[kind]))
    except RegisterMapError as exc:
        raise InvalidDeviceUrl(f"{url}: {exc}") from None
    owns = link is None
    link = link or ModbusLink(url, timeout_s=timeout_s, tries=tries)
    model_aliases = {101: (102, 103)} if kind == "pv" else None
    return SunSpecClient(url, link, device_map, url.unit(), model_aliases), owns


def revert_seconds(url: DeviceUrl, default: int | None) -> int:
    revert = url.int_option("revert_s", default or 0)
    if not 0 <= revert <= 0xFFFF:
        raise InvalidDeviceUrl(f"{url}: revert_s={revert} is outside 0..65535 seconds")
    return revert


class SunSpecDevice:
    """What the SunSpec drivers share: the client, the revert timer, the write guard."""

    kind = ""

    def __init__(
        self,
        url: DeviceUrl,
        *,
        link: ModbusLink | None = None,
        timeout_s: float = 2.0,
        tries: int = 3,
        on_alarm: AlarmHook = log_alarm,
        revert_s: int | None = None,
    ) -> None:
        self.url = url
        self.client, self._owns_link = open_client(url, self.kind, link, timeout_s, tries)
        self.revert_s = revert_seconds(url, revert_s)
        self.guard = WriteGuard(str(url), self.kind, on_alarm)

    async def close(self) -> None:
        if self._owns_link:
            await self.client.link.close()
