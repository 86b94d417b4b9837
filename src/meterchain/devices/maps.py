"""Device register maps: SunSpec models as TOML data, checked on load.

A device map is a meter map (the syntax of `meters/maps/*.toml`, parsed by the same code in
`meters/modbus_maps.py`) plus `access = "rw"` on the points a client may write. A new
inverter is a new map file in `devices/maps/`, not new code; the drivers refer to points by
their SunSpec names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from meterchain.meters.modbus_maps import (
    MapChecker,
    Point,
    RegisterMap,
    SunSpecLayout,
    check_points,
    map_path,
    parse_encoding,
    parse_point,
    parse_sunspec,
    read_map_file,
)

MAPS_DIR = Path(__file__).parent / "maps"
DEFAULT_MAPS = {"battery": "sunspec-storage", "pv": "sunspec-pv"}
_TOP_KEYS = (
    "name",
    "word_order",
    "max_gap_registers",
    "sentinels",
    "identity",
    "sunspec",
    "points",
)


@dataclass(frozen=True)
class DeviceMap:
    """A SunSpec device's points: where they are, how they are encoded, which may be written."""

    register_map: RegisterMap
    writable: frozenset[str]

    @property
    def name(self) -> str:
        return self.register_map.name

    @property
    def points(self) -> Mapping[str, Point]:
        return self.register_map.points

    @property
    def sunspec(self) -> SunSpecLayout:
        layout = self.register_map.sunspec
        assert layout is not None  # checked on load
        return layout

    def model_points(self, model_id: int) -> list[Point]:
        """The points of one model, in register order."""
        points = [p for p in self.points.values() if p.model == model_id]
        return sorted(points, key=lambda p: p.offset or 0)


def available_device_maps() -> list[str]:
    return sorted(path.stem for path in MAPS_DIR.glob("*.toml"))


def load_device_map(name_or_path: str) -> DeviceMap:
    """A shipped map by name (`sunspec-storage`) or any map file by path."""
    path = map_path(name_or_path, MAPS_DIR, "device map")
    return parse_device_map(read_map_file(path, "device map"), str(path))


def parse_device_map(data: Mapping[str, object], source: str) -> DeviceMap:
    """Check a parsed device map and build it; `source` names it in errors."""
    check = MapChecker(source)
    data = check.table(data, "(file)")
    check.only(data, "", _TOP_KEYS)
    if "name" not in data:
        raise check.fail("name", "missing; give the device model's name")
    if "sunspec" not in data:
        raise check.fail("sunspec", "missing; a device map lays out SunSpec models")
    sunspec = parse_sunspec(check, data["sunspec"])
    raw_points = check.table(data.get("points", {}), "points")
    points: dict[str, Point] = {}
    writable: set[str] = set()
    for point_name, raw in raw_points.items():
        entry = dict(check.table(raw, f"points.{point_name}"))
        access = check.text(entry.pop("access", "r"), f"points.{point_name}.access", ("r", "rw"))
        if access == "rw":
            writable.add(point_name)
        points[point_name] = parse_point(check, point_name, entry, sunspec)
    check_points(check, points, sunspec)
    identity = None
    if "identity" in data:
        identity = check.text(data["identity"], "identity")
        if identity not in points or points[identity].type != "string":
            raise check.fail("identity", f"must name a string point in [points], not {identity!r}")
    word_order, max_gap, sentinels = parse_encoding(check, data, "sunspec")
    register_map = RegisterMap(
        name=check.text(data["name"], "name"),
        source=source,
        points=points,
        reading={},
        word_order=word_order,
        max_gap_registers=max_gap,
        sunspec_sentinels=sentinels,
        identity=identity,
        sunspec=sunspec,
    )
    return DeviceMap(register_map, frozenset(writable))
