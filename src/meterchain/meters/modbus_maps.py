"""Modbus register maps: TOML data files, checked on load, and the codec for their values.

A map says where a meter keeps each value (table and address, or SunSpec model and offset),
how it is encoded (type, word order, scale, SunSpec scale factor) and which points feed a
`Reading`. A new meter model is a new map file in `meters/maps/`, not new code.

Everything here is pure: words in, numbers out, and back (the simulator encodes with it).
"""

from __future__ import annotations

import math
import re
import struct
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from meterchain.meters.errors import FrameError, ImplausibleReading, MeterError

MAPS_DIR = Path(__file__).parent / "maps"

TABLES = ("input", "holding")
#: Register count of each type; strings take `registers` from the map.
TYPE_SIZES: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "bitfield16": 1,
    "sunssf": 1,
    "pad": 1,
    "int32": 2,
    "uint32": 2,
    "acc32": 2,
    "bitfield32": 2,
    "float32": 2,
    "string": 0,
}
NUMERIC_TYPES = tuple(t for t in TYPE_SIZES if t not in ("string", "pad"))
READING_FIELDS = ("voltage_v", "current_a", "power_w", "import_wh", "export_wh")
QUANTITIES = (*READING_FIELDS, "meter_id")
MAX_READ_REGISTERS = 125  # Modbus limit for function codes 3 and 4
MAX_STRING_REGISTERS = 64

_INT_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-0x8000, 0x7FFF),
    "sunssf": (-0x8000, 0x7FFF),
    "uint16": (0, 0xFFFF),
    "bitfield16": (0, 0xFFFF),
    "pad": (0, 0xFFFF),
    "int32": (-0x8000_0000, 0x7FFF_FFFF),
    "uint32": (0, 0xFFFF_FFFF),
    "acc32": (0, 0xFFFF_FFFF),
    "bitfield32": (0, 0xFFFF_FFFF),
}
#: SunSpec "not implemented" values (acc32 has none we can use: its 0 is a real count).
_SUNSPEC_UNIMPLEMENTED: dict[str, int] = {
    "int16": 0x8000,
    "sunssf": 0x8000,
    "pad": 0x8000,
    "uint16": 0xFFFF,
    "bitfield16": 0xFFFF,
    "int32": 0x8000_0000,
    "uint32": 0xFFFF_FFFF,
    "bitfield32": 0xFFFF_FFFF,
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RegisterMapError(MeterError):
    """A register map file is missing or its content is wrong (the message names file and key)."""


class MapMismatch(MeterError):
    """The device does not lay out its registers as the map says (wrong map or wrong device)."""


@dataclass(frozen=True)
class Point:
    """One value in the meter's registers."""

    name: str
    type: str
    registers: int
    table: str = "holding"
    address: int | None = None
    model: int | None = None
    offset: int | None = None
    scale: float = 1.0
    scale_factor: str | None = None
    quantity: str | None = None
    value: int | float | str | None = None
    unit: str = ""


@dataclass(frozen=True)
class Relay:
    """The breaker, as a coil; `connected` is the coil value while energy flows."""

    coil: int
    connected: bool = True


@dataclass(frozen=True)
class SunSpecLayout:
    """Where the SunSpec marker sits and the models the simulator lays out after it."""

    base: int
    models: tuple[tuple[int, int], ...]  # (model id, length without ID and L)

    def standard_starts(self) -> dict[int, int]:
        """Address of each model's ID register when laid out one after the other from `base`."""
        starts: dict[int, int] = {}
        address = self.base + 2
        for model_id, length in self.models:
            starts.setdefault(model_id, address)
            address += 2 + length
        return starts

    @property
    def end_address(self) -> int:
        """Address of the end marker (0xFFFF, 0) after the last model."""
        return self.base + 2 + sum(2 + length for _, length in self.models)


@dataclass(frozen=True)
class RegisterMap:
    """A meter model's register layout, as loaded from its TOML file."""

    name: str
    source: str
    points: Mapping[str, Point]
    reading: Mapping[str, str]
    word_order: str = "big"
    max_gap_registers: int = 0
    sunspec_sentinels: bool = False
    identity: str | None = None
    relay: Relay | None = None
    sunspec: SunSpecLayout | None = None

    def locate(self, model_starts: Mapping[int, int] | None = None) -> dict[str, tuple[str, int]]:
        """(table, address) of every point; SunSpec points are placed from `model_starts`."""
        starts = model_starts
        if starts is None:
            starts = self.sunspec.standard_starts() if self.sunspec else {}
        located: dict[str, tuple[str, int]] = {}
        for name, point in self.points.items():
            if point.address is not None:
                located[name] = (point.table, point.address)
            else:
                assert point.model is not None and point.offset is not None
                located[name] = ("holding", starts[point.model] + point.offset)
        return located

    def reading_points(self) -> list[str]:
        """The points one reading needs: the Reading's fields and their scale factors."""
        names = list(dict.fromkeys(self.reading.values()))
        for name in list(names):
            factor = self.points[name].scale_factor
            if factor is not None and factor not in names:
                names.append(factor)
        return names

    def models_used(self) -> set[int]:
        return {p.model for p in self.points.values() if p.model is not None}


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------


def available_maps() -> list[str]:
    """Names of the maps shipped with meterchain."""
    return sorted(path.stem for path in MAPS_DIR.glob("*.toml"))


def load_map(name_or_path: str) -> RegisterMap:
    """A shipped map by name (`sdm630`) or any map file by path (`./my_meter.toml`)."""
    path = map_path(name_or_path, MAPS_DIR, "register map")
    return parse_map(read_map_file(path, "register map"), str(path))


def map_path(name_or_path: str, maps_dir: Path, kind: str) -> Path:
    """The file of a shipped map (`sdm630` in `maps_dir`) or of a path (`./my.toml`).

    Meter and device maps are found the same way; `kind` ("register map", "device map")
    names them in the error that lists the shipped ones.
    """
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        return Path(name_or_path)
    path = maps_dir / f"{name_or_path}.toml"
    if not path.is_file():
        shipped = sorted(each.stem for each in maps_dir.glob("*.toml"))
        raise RegisterMapError(
            f"unknown {kind} {name_or_path!r}; shipped maps: "
            f"{', '.join(shipped)} (or give the path of a .toml map file)"
        )
    return path


def read_map_file(path: Path, kind: str) -> dict[str, object]:
    """The TOML of a map file; a missing, unreadable or malformed file is a `RegisterMapError`."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise RegisterMapError(f"{kind} file {path} does not exist") from None
    except OSError as exc:
        raise RegisterMapError(f"cannot read {kind} file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RegisterMapError(f"{path}: not valid TOML: {exc}") from None


class MapChecker:
    """Reads keys from the parsed TOML, naming the file and the key in every complaint.

    Public so that device maps (`devices/maps.py`), which extend the meter maps' syntax, check
    their keys with the same words.
    """

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> RegisterMapError:
        return RegisterMapError(f"{self.source}: {key}: {problem}")

    def table(self, data: object, key: str) -> Mapping[str, object]:
        if not isinstance(data, dict):
            raise self.fail(key, f"must be a table, not {type(data).__name__}")
        return data

    def only(self, data: Mapping[str, object], key: str, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        for name in data:
            if name not in allowed:
                where = f"{key}.{name}" if key else name
                raise self.fail(where, f"unknown key; allowed here: {', '.join(allowed)}")

    def integer(self, value: object, key: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, not {value!r}")
        if not low <= value <= high:
            raise self.fail(key, f"{value} is out of range {low}..{high}")
        return value

    def number(self, value: object, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, not {value!r}")
        if not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, not {value!r}")
        return float(value)

    def text(self, value: object, key: str, choices: Iterable[str] | None = None) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, not {value!r}")
        if choices is not None:
            options = tuple(choices)
            if value not in options:
                raise self.fail(key, f"{value!r} is not one of {', '.join(options)}")
        return value

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, not {value!r}")
        return value


_TOP_KEYS = (
    "name",
    "word_order",
    "max_gap_registers",
    "sentinels",
    "identity",
    "reading",
    "relay",
    "sunspec",
    "points",
)
_POINT_KEYS = (
    "table",
    "address",
    "model",
    "offset",
    "type",
    "registers",
    "scale",
    "scale_factor",
    "quantity",
    "value",
    "unit",
)


def parse_map(data: Mapping[str, object], source: str) -> RegisterMap:
    """Check a parsed map file and build the `RegisterMap`; `source` names it in errors."""
    check = MapChecker(source)
    data = check.table(data, "(file)")
    check.only(data, "", _TOP_KEYS)
    if "name" not in data:
        raise check.fail("name", "missing; give the meter model's name")
    name = check.text(data["name"], "name")
    word_order, max_gap, sentinels = parse_encoding(check, data, "none")
    sunspec = parse_sunspec(check, data["sunspec"]) if "sunspec" in data else None
    if "points" not in data:
        raise check.fail("points", "missing; a map needs at least the points of a reading")
    raw_points = check.table(data["points"], "points")
    points = {
        point_name: parse_point(check, point_name, raw, sunspec)
        for point_name, raw in raw_points.items()
    }
    check_points(check, points, sunspec)
    reading = _parse_reading(check, data.get("reading"), points)
    identity = None
    if "identity" in data:
        identity = check.text(data["identity"], "identity")
        point = points.get(identity)
        if point is None:
            raise check.fail("identity", f"names point {identity!r}, which is not in [points]")
        if point.type not in ("string", "uint16", "uint32"):
            raise check.fail("identity", f"point {identity!r} must be a string, uint16 or uint32")
    relay = _parse_relay(check, data["relay"]) if "relay" in data else None
    return RegisterMap(
        name=name,
        source=source,
        points=points,
        reading=reading,
        word_order=word_order,
        max_gap_registers=max_gap,
        sunspec_sentinels=sentinels,
        identity=identity,
        relay=relay,
        sunspec=sunspec,
    )


def parse_encoding(
    check: MapChecker, data: Mapping[str, object], default_sentinels: str
) -> tuple[str, int, bool]:
    """A map's `word_order`, `max_gap_registers` and whether SunSpec sentinels apply."""
    word_order = check.text(data.get("word_order", "big"), "word_order", ("big", "little"))
    max_gap = check.integer(data.get("max_gap_registers", 0), "max_gap_registers", 0, 100)
    sentinels = check.text(
        data.get("sentinels", default_sentinels), "sentinels", ("none", "sunspec")
    )
    return word_order, max_gap, sentinels == "sunspec"


def parse_sunspec(check: MapChecker, raw: object) -> SunSpecLayout:
    """The `[sunspec]` table: the marker's address and the models in their order."""
    section = check.table(raw, "sunspec")
    check.only(section, "sunspec", ("base", "models"))
    if "base" not in section or "models" not in section:
        raise check.fail("sunspec", "needs base (address of 'SunS') and models")
    base = check.integer(section["base"], "sunspec.base", 0, 0xFFFF)
    models_raw = section["models"]
    if not isinstance(models_raw, list) or not models_raw:
        raise check.fail("sunspec.models", "must be a non-empty list of {id, length} tables")
    models: list[tuple[int, int]] = []
    for index, entry in enumerate(models_raw):
        key = f"sunspec.models[{index}]"
        model = check.table(entry, key)
        check.only(model, key, ("id", "length"))
        if "id" not in model or "length" not in model:
            raise check.fail(key, "needs id and length")
        model_id = check.integer(model["id"], f"{key}.id", 1, 0xFFFE)
        length = check.integer(model["length"], f"{key}.length", 0, 0xFFFF)
        models.append((model_id, length))
    layout = SunSpecLayout(base, tuple(models))
    if layout.end_address + 2 > 0x10000:
        raise check.fail("sunspec.models", "the models do not fit below address 65536")
    return layout


def parse_point(check: MapChecker, name: str, raw: object, sunspec: SunSpecLayout | None) -> Point:
    """One `[points.NAME]` table: where the point is, its type and how its value scales."""
    key = f"points.{name}"
    if not _NAME.match(name):
        raise check.fail(key, "point names are letters, digits and underscores")
    entry = check.table(raw, key)
    check.only(entry, key, _POINT_KEYS)
    if "type" not in entry:
        raise check.fail(f"{key}.type", f"missing; one of {', '.join(TYPE_SIZES)}")
    type_ = check.text(entry["type"], f"{key}.type", TYPE_SIZES)
    if type_ == "string":
        if "registers" not in entry:
            raise check.fail(f"{key}.registers", "a string point needs its register count")
        size = check.integer(entry["registers"], f"{key}.registers", 1, MAX_STRING_REGISTERS)
    else:
        if "registers" in entry:
            raise check.fail(f"{key}.registers", f"only strings have it; {type_} is fixed-size")
        size = TYPE_SIZES[type_]
    table = "holding"
    address: int | None = None
    model: int | None = None
    offset: int | None = None
    if "address" in entry:
        if "model" in entry or "offset" in entry:
            raise check.fail(key, "give either table and address, or model and offset")
        if "table" not in entry:
            raise check.fail(f"{key}.table", f"missing; one of {', '.join(TABLES)}")
        table = check.text(entry["table"], f"{key}.table", TABLES)
        address = check.integer(entry["address"], f"{key}.address", 0, 0x10000 - size)
    elif "model" in entry and "offset" in entry:
        if "table" in entry:
            raise check.fail(f"{key}.table", "SunSpec points are always holding registers")
        if sunspec is None:
            raise check.fail(key, "model and offset need a [sunspec] section")
        lengths = dict(reversed(sunspec.models))
        model = check.integer(entry["model"], f"{key}.model", 1, 0xFFFE)
        if model not in lengths:
            raise check.fail(f"{key}.model", f"model {model} is not in sunspec.models")
        offset = check.integer(entry["offset"], f"{key}.offset", 2, 0xFFFF)
        if offset + size > 2 + lengths[model]:
            raise check.fail(
                f"{key}.offset",
                f"offset {offset} + {size} registers runs past model {model} "
                f"(length {lengths[model]})",
            )
    else:
        raise check.fail(key, "needs table and address, or (SunSpec) model and offset")
    scale = check.number(entry.get("scale", 1.0), f"{key}.scale")
    if scale == 0:
        raise check.fail(f"{key}.scale", "must not be 0")
    scale_factor = None
    if "scale_factor" in entry:
        scale_factor = check.text(entry["scale_factor"], f"{key}.scale_factor")
        if type_ not in NUMERIC_TYPES or type_ == "sunssf":
            raise check.fail(f"{key}.scale_factor", f"a {type_} point cannot have one")
    quantity = None
    if "quantity" in entry:
        quantity = check.text(entry["quantity"], f"{key}.quantity", QUANTITIES)
        if quantity == "meter_id" and type_ not in ("string", "uint16", "uint32"):
            raise check.fail(f"{key}.quantity", "meter_id needs a string, uint16 or uint32")
        if quantity != "meter_id" and type_ not in NUMERIC_TYPES:
            raise check.fail(f"{key}.quantity", f"{quantity} needs a numeric type, not {type_}")
    value = (
        _parse_value(check, f"{key}.value", entry["value"], type_, size)
        if ("value" in entry)
        else None
    )
    if value is not None and quantity is not None:
        raise check.fail(key, "give quantity (a live value) or value (a constant), not both")
    unit = check.text(entry.get("unit", ""), f"{key}.unit")
    return Point(
        name, type_, size, table, address, model, offset, scale, scale_factor, quantity, value, unit
    )


def _parse_value(
    check: MapChecker, key: str, raw: object, type_: str, size: int
) -> int | float | str:
    if type_ == "string":
        text = check.text(raw, key)
        try:
            encode_text(text, size)
        except ValueError as exc:
            raise check.fail(key, str(exc)) from None
        return text
    if type_ == "float32":
        return check.number(raw, key)
    low, high = _INT_RANGES[type_]
    return check.integer(raw, key, low, high)


def check_points(
    check: MapChecker, points: Mapping[str, Point], sunspec: SunSpecLayout | None
) -> None:
    """Checks across points: scale factors name sunssf points, and no two points overlap."""
    _check_scale_factors(check, points)
    _check_overlaps(check, points, sunspec)


def _check_scale_factors(check: MapChecker, points: Mapping[str, Point]) -> None:
    for name, point in points.items():
        if point.scale_factor is None:
            continue
        factor = points.get(point.scale_factor)
        key = f"points.{name}.scale_factor"
        if factor is None:
            raise check.fail(key, f"names {point.scale_factor!r}, which is not in [points]")
        if factor.type != "sunssf":
            raise check.fail(key, f"{point.scale_factor!r} must be of type sunssf")
        if factor.table != point.table:
            raise check.fail(key, f"{point.scale_factor!r} must be in the same table")


def _check_overlaps(
    check: MapChecker, points: Mapping[str, Point], sunspec: SunSpecLayout | None
) -> None:
    starts = sunspec.standard_starts() if sunspec else {}
    spans: list[tuple[str, int, int, str]] = []
    for name, point in points.items():
        if point.address is not None:
            spans.append((point.table, point.address, point.registers, name))
        else:
            assert point.model is not None and point.offset is not None
            spans.append(("holding", starts[point.model] + point.offset, point.registers, name))
    if sunspec is not None:
        spans.append(("holding", sunspec.base, 2, "(SunSpec marker)"))
        for model_id, model_start in starts.items():
            spans.append(("holding", model_start, 2, f"(model {model_id} header)"))
        spans.append(("holding", sunspec.end_address, 2, "(SunSpec end marker)"))
    spans.sort()
    for (table_a, start_a, size_a, name_a), (table_b, start_b, _, name_b) in pairwise(spans):
        if table_a == table_b and start_b < start_a + size_a:
            raise check.fail(
                f"points.{name_b}", f"overlaps {name_a} in the {table_a} registers at {start_b}"
            )


def _parse_reading(check: MapChecker, raw: object, points: Mapping[str, Point]) -> dict[str, str]:
    if raw is None:
        raise check.fail("reading", f"missing; map each of {', '.join(READING_FIELDS)} to a point")
    section = check.table(raw, "reading")
    check.only(section, "reading", READING_FIELDS)
    reading: dict[str, str] = {}
    for field_name in READING_FIELDS:
        key = f"reading.{field_name}"
        if field_name not in section:
            raise check.fail(key, "missing; name the point that holds it")
        point_name = check.text(section[field_name], key)
        point = points.get(point_name)
        if point is None:
            raise check.fail(key, f"names point {point_name!r}, which is not in [points]")
        if point.type not in NUMERIC_TYPES or point.type == "sunssf":
            raise check.fail(key, f"point {point_name!r} is a {point.type}, not a measured value")
        if point.quantity not in (None, field_name):
            raise check.fail(
                key, f"point {point_name!r} carries {point.quantity}, not {field_name}"
            )
        reading[field_name] = point_name
    return reading


def _parse_relay(check: MapChecker, raw: object) -> Relay:
    section = check.table(raw, "relay")
    check.only(section, "relay", ("coil", "connected"))
    if "coil" not in section:
        raise check.fail("relay.coil", "missing; the coil address of the breaker")
    coil = check.integer(section["coil"], "relay.coil", 0, 0xFFFF)
    connected = check.boolean(section.get("connected", True), "relay.connected")
    return Relay(coil, connected)


# --------------------------------------------------------------------------------------------
# Read planning
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadSpan:
    """One read request: `count` registers of `table` from `address`."""

    table: str
    address: int
    count: int


def plan_reads(
    locations: Iterable[tuple[str, int, int]],
    max_gap_registers: int,
    max_count: int = MAX_READ_REGISTERS,
) -> list[ReadSpan]:
    """Fewest requests that cover every (table, address, size), bridging small gaps."""
    spans: list[ReadSpan] = []
    for table, address, size in sorted(set(locations)):
        last = spans[-1] if spans else None
        if last is not None and last.table == table:
            end = last.address + last.count
            new_end = max(end, address + size)
            if address - end <= max_gap_registers and new_end - last.address <= max_count:
                spans[-1] = ReadSpan(table, last.address, new_end - last.address)
                continue
        spans.append(ReadSpan(table, address, size))
    return spans


# --------------------------------------------------------------------------------------------
# Codec: register words <-> values
# --------------------------------------------------------------------------------------------

Bank = Mapping[tuple[str, int], int]
"""Register words read from a meter, by (table, address)."""


def words_of(bank: Bank, table: str, address: int, count: int) -> list[int]:
    """`count` words from `bank`, or FrameError if the meter's answer did not include them."""
    try:
        return [bank[(table, address + i)] for i in range(count)]
    except KeyError:
        raise FrameError(
            f"the answer did not include {table} registers {address}..{address + count - 1}"
        ) from None


def _check_words(point: Point, words: list[int]) -> None:
    if len(words) != point.registers:
        raise FrameError(f"point {point.name} takes {point.registers} registers, got {len(words)}")
    for word in words:
        if not 0 <= word <= 0xFFFF:
            raise FrameError(f"point {point.name}: {word} is not a 16-bit register value")


def _join32(words: list[int], word_order: str) -> int:
    high, low = (words[0], words[1]) if word_order == "big" else (words[1], words[0])
    return (high << 16) | low


def _split32(value: int, word_order: str) -> list[int]:
    high, low = (value >> 16) & 0xFFFF, value & 0xFFFF
    return [high, low] if word_order == "big" else [low, high]


def decode_raw(register_map: RegisterMap, point: Point, words: list[int]) -> float | None:
    """The number in a point's registers before scaling; None when SunSpec says unimplemented."""
    _check_words(point, words)
    if point.type in ("string", "pad"):
        raise FrameError(f"point {point.name} is a {point.type}, not a number")
    if point.type == "float32":
        joined = _join32(words, register_map.word_order)
        return float(struct.unpack(">f", joined.to_bytes(4, "big"))[0])
    unsigned = _join32(words, register_map.word_order) if point.registers == 2 else words[0]
    if register_map.sunspec_sentinels and _SUNSPEC_UNIMPLEMENTED.get(point.type) == unsigned:
        return None
    if point.type in ("int16", "sunssf"):
        return float(unsigned - 0x10000 if unsigned >= 0x8000 else unsigned)
    if point.type == "int32":
        return float(unsigned - 0x1_0000_0000 if unsigned >= 0x8000_0000 else unsigned)
    return float(unsigned)


def decode_scale_factor(register_map: RegisterMap, point: Point, words: list[int]) -> int | None:
    """A SunSpec scale factor (-10..10), None if unimplemented; ImplausibleReading otherwise."""
    raw = decode_raw(register_map, point, words)
    if raw is None:
        return None
    if not -10 <= raw <= 10:
        raise ImplausibleReading(
            f"scale factor {point.name} is {int(raw)}; SunSpec allows -10..10 "
            "(is the map right for this meter?)"
        )
    return int(raw)


def decode_number(
    register_map: RegisterMap, point: Point, words: list[int], scale_factor: int | None = 0
) -> float:
    """A point's value in meterchain's unit: raw x 10^sf x scale; NaN if not available."""
    raw = decode_raw(register_map, point, words)
    if raw is None or scale_factor is None:
        return math.nan
    return raw * 10.0**scale_factor * point.scale


def decode_point(
    register_map: RegisterMap, name: str, bank: Bank, where: Mapping[str, tuple[str, int]]
) -> float:
    """Decode point `name` (with its scale factor) from the words read into `bank`."""
    point = register_map.points[name]
    table, address = where[name]
    words = words_of(bank, table, address, point.registers)
    factor: int | None = 0
    if point.scale_factor is not None:
        factor_point = register_map.points[point.scale_factor]
        factor_table, factor_address = where[point.scale_factor]
        factor = decode_scale_factor(
            register_map,
            factor_point,
            words_of(bank, factor_table, factor_address, factor_point.registers),
        )
    return decode_number(register_map, point, words, factor)


def decode_text(point: Point, words: list[int]) -> str:
    """ASCII text, two characters per register, NUL- or space-padded."""
    _check_words(point, words)
    data = b"".join(word.to_bytes(2, "big") for word in words).rstrip(b"\x00 ")
    if any(byte < 0x20 or byte > 0x7E for byte in data):
        raise ImplausibleReading(
            f"point {point.name} should hold text but holds bytes {data.hex(' ')}"
        )
    return data.decode("ascii")


def decode_identity(register_map: RegisterMap, point: Point, words: list[int]) -> str:
    """The meter's id from its identity point: text, or a serial number in decimal."""
    if point.type == "string":
        text = decode_text(point, words)
    else:
        raw = decode_raw(register_map, point, words)
        text = "" if raw is None else str(int(raw))
    if not text:
        raise ImplausibleReading(f"the meter reports an empty identity in point {point.name}")
    return text


def encode_text(text: str, registers: int) -> list[int]:
    """Text as registers (the simulator's side); ValueError if it does not fit."""
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{text!r} is not plain ASCII") from None
    if len(data) > 2 * registers:
        raise ValueError(f"{text!r} is longer than {2 * registers} characters")
    data = data.ljust(2 * registers, b"\x00")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def unimplemented_words(register_map: RegisterMap, point: Point) -> list[int]:
    """What a device serves for a point it does not implement."""
    if point.type == "float32":
        return _split32(0x7FC0_0000, register_map.word_order)  # quiet NaN
    if point.type == "string" or not register_map.sunspec_sentinels:
        return [0] * point.registers
    marker = _SUNSPEC_UNIMPLEMENTED.get(point.type, 0)
    return _split32(marker, register_map.word_order) if point.registers == 2 else [marker]


def encode_raw(register_map: RegisterMap, point: Point, raw: float) -> list[int]:
    """A raw (unscaled) number as registers; ValueError if the type cannot hold it."""
    if point.type == "string":
        raise ValueError(f"point {point.name} is a string")
    if point.type == "float32":
        packed = struct.unpack(">I", struct.pack(">f", raw))[0]
        return _split32(packed, register_map.word_order)
    low, high = _INT_RANGES[point.type]
    if not math.isfinite(raw) or not low <= raw <= high:
        raise ValueError(f"{raw} does not fit point {point.name} ({point.type})")
    unsigned = int(raw) & (0xFFFF_FFFF if point.registers == 2 else 0xFFFF)
    return _split32(unsigned, register_map.word_order) if point.registers == 2 else [unsigned]


def encode_number(
    register_map: RegisterMap, point: Point, value: float, scale_factor: int = 0
) -> list[int]:
    """A value in meterchain's unit as the point's registers (inverse of `decode_number`).

    Counters (acc32) are rounded down, so a meter never shows energy it has not measured.
    """
    raw = value / point.scale / 10.0**scale_factor
    if point.type != "float32":
        raw = float(math.floor(raw) if point.type == "acc32" else round(raw))
    return encode_raw(register_map, point, raw)
