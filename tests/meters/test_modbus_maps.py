"""Modbus register maps: the shipped files, their validation, and the register codec."""

from __future__ import annotations

import math
import struct
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterchain.meters.errors import FrameError, ImplausibleReading, MeterError
from meterchain.meters.modbus_maps import (
    MAPS_DIR,
    READING_FIELDS,
    ReadSpan,
    RegisterMap,
    RegisterMapError,
    available_maps,
    decode_identity,
    decode_number,
    decode_point,
    decode_raw,
    decode_scale_factor,
    encode_number,
    encode_text,
    load_map,
    parse_map,
    plan_reads,
    unimplemented_words,
)

SDM630 = load_map("sdm630")
SUNSPEC = load_map("sunspec203")


def test_meterchain_ships_the_sdm630_and_sunspec_203_maps() -> None:
    assert {"sdm630", "sunspec203"} <= set(available_maps())
    for register_map in (SDM630, SUNSPEC):
        assert set(register_map.reading) == set(READING_FIELDS)
        assert register_map.relay is not None and register_map.identity is not None


def test_sdm630_points_are_eastron_float32_input_registers() -> None:
    where = SDM630.locate()
    expected = {
        "voltage_l1": 0x0000,
        "current_l1": 0x0006,
        "power_l1": 0x000C,
        "total_power": 0x0034,
        "import_energy": 0x0048,
        "export_energy": 0x004A,
    }
    for name, address in expected.items():
        assert where[name] == ("input", address)
        assert SDM630.points[name].type == "float32"
    assert SDM630.word_order == "big"
    assert SDM630.reading["power_w"] == "total_power"
    assert SDM630.points["import_energy"].scale == 1000  # kWh on the wire, Wh in meterchain


def test_sunspec_203_sits_after_the_marker_and_the_common_model() -> None:
    layout = SUNSPEC.sunspec
    assert layout is not None and layout.base == 40000
    assert layout.standard_starts() == {1: 40002, 203: 40070}
    assert layout.end_address == 40177
    where = SUNSPEC.locate()
    assert where["SN"] == ("holding", 40052)
    assert where["A"] == ("holding", 40072)
    assert where["W"] == ("holding", 40088)
    assert where["W_SF"] == ("holding", 40092)
    assert where["TotWhExp"] == ("holding", 40108)
    assert where["TotWhImp"] == ("holding", 40116)
    assert where["TotWh_SF"] == ("holding", 40124)
    assert where["Evt"] == ("holding", 40175)


def test_sunspec_203_map_covers_the_whole_model_without_holes() -> None:
    points = sorted((p.offset, p.registers) for p in SUNSPEC.points.values() if p.model == 203)
    position = 2
    for offset, size in points:
        assert offset == position
        position += size
    assert position == 2 + 105  # model 203's length is 105


def test_every_sunspec_value_has_its_scale_factor() -> None:
    for field_name, point_name in SUNSPEC.reading.items():
        factor = SUNSPEC.points[point_name].scale_factor
        assert factor is not None, field_name
        assert SUNSPEC.points[factor].type == "sunssf"


def test_an_unknown_map_name_lists_the_shipped_maps() -> None:
    with pytest.raises(RegisterMapError, match=r"unknown register map 'sdm999'.*sdm630"):
        load_map("sdm999")


def test_a_map_file_that_is_not_toml_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("name = \n")
    with pytest.raises(RegisterMapError, match=r"broken\.toml: not valid TOML"):
        load_map(str(path))


def _sdm630_data() -> dict[str, Any]:
    with open(MAPS_DIR / "sdm630.toml", "rb") as handle:
        return tomllib.load(handle)


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda d: d.pop("name"), r"name: missing"),
        (lambda d: d.update(colour="red"), r"colour: unknown key"),
        (lambda d: d.update(word_order="middle"), r"word_order: 'middle' is not one of"),
        (lambda d: d["points"]["voltage_l1"].update(type="flaot32"), r"voltage_l1\.type"),
        (lambda d: d["points"]["voltage_l1"].update(address=70000), r"voltage_l1\.address"),
        (lambda d: d["points"]["voltage_l1"].update(table="coil"), r"voltage_l1\.table"),
        (lambda d: d["points"]["voltage_l1"].update(adress=3), r"voltage_l1\.adress: unknown"),
        (lambda d: d["points"]["voltage_l1"].update(scale=0), r"voltage_l1\.scale: must not"),
        (lambda d: d["points"]["current_l1"].update(address=0x0001), r"current_l1: overlaps"),
        (lambda d: d["points"]["serial"].pop("registers"), r"serial\.registers"),
        (lambda d: d["reading"].pop("power_w"), r"reading\.power_w: missing"),
        (lambda d: d["reading"].update(power_w="nowhere"), r"reading\.power_w: names point"),
        (lambda d: d["reading"].update(power_w="voltage_l1"), r"carries voltage_v, not power_w"),
        (lambda d: d.update(identity="ghost"), r"identity: names point 'ghost'"),
        (lambda d: d["relay"].update(coil=-1), r"relay\.coil: -1 is out of range"),
        (lambda d: d["points"]["frequency"].update(value="sixty"), r"frequency\.value"),
        (lambda d: d["points"]["voltage_l1"].update(model=1, offset=2), r"either table"),
        (lambda d: d["points"]["voltage_l1"].update(scale_factor="x"), r"names 'x'"),
    ],
)
def test_bad_map_content_names_the_file_and_the_key(mutate: Any, complaint: str) -> None:
    data = _sdm630_data()
    mutate(data)
    with pytest.raises(RegisterMapError, match=complaint) as caught:
        parse_map(data, "/maps/my_meter.toml")
    assert str(caught.value).startswith("/maps/my_meter.toml: ")


def test_sunspec_points_must_fit_inside_their_model() -> None:
    with open(MAPS_DIR / "sunspec203.toml", "rb") as handle:
        data = tomllib.load(handle)
    data["points"]["Evt"]["offset"] = 106
    with pytest.raises(RegisterMapError, match=r"points\.Evt\.offset: .*runs past model 203"):
        parse_map(data, "sunspec.toml")


def test_float32_is_decoded_high_word_first() -> None:
    point = SDM630.points["voltage_l1"]
    high, low = struct.unpack(">HH", struct.pack(">f", 231.5))
    assert decode_number(SDM630, point, [high, low]) == 231.5


def test_little_word_order_swaps_the_words() -> None:
    swapped = RegisterMap("swapped", "test", SDM630.points, SDM630.reading, word_order="little")
    high, low = struct.unpack(">HH", struct.pack(">f", 231.5))
    assert decode_number(swapped, SDM630.points["voltage_l1"], [low, high]) == 231.5


def test_energy_in_kwh_becomes_wh() -> None:
    point = SDM630.points["import_energy"]
    assert decode_number(SDM630, point, encode_number(SDM630, point, 1_234_000.0)) == 1_234_000.0


def test_sunspec_values_are_scaled_by_their_scale_factor() -> None:
    current = SUNSPEC.points["AphA"]
    assert decode_number(SUNSPEC, current, [1234], scale_factor=-2) == pytest.approx(12.34)
    assert decode_number(SUNSPEC, current, [0xFFFE], scale_factor=0) == -2.0


def test_sunspec_not_implemented_reads_as_nan() -> None:
    assert math.isnan(decode_number(SUNSPEC, SUNSPEC.points["W"], [0x8000]))
    assert decode_scale_factor(SUNSPEC, SUNSPEC.points["W_SF"], [0x8000]) is None
    assert math.isnan(decode_number(SUNSPEC, SUNSPEC.points["W"], [100], scale_factor=None))


def test_a_scale_factor_beyond_ten_is_implausible() -> None:
    with pytest.raises(ImplausibleReading, match="scale factor W_SF is 11"):
        decode_scale_factor(SUNSPEC, SUNSPEC.points["W_SF"], [11])


def test_counters_are_rounded_down_so_a_meter_never_overstates_energy() -> None:
    point = SUNSPEC.points["TotWhImp"]
    assert encode_number(SUNSPEC, point, 1999.9) == [0, 1999]


def test_the_identity_is_text_without_its_padding() -> None:
    point = SDM630.points["serial"]
    assert decode_identity(SDM630, point, encode_text("house-7", 16)) == "house-7"


def test_an_identity_with_control_bytes_is_implausible() -> None:
    point = SDM630.points["serial"]
    with pytest.raises(ImplausibleReading, match="should hold text"):
        decode_identity(SDM630, point, [0x0102] + [0] * 15)


def test_an_empty_identity_is_implausible() -> None:
    with pytest.raises(ImplausibleReading, match="empty identity"):
        decode_identity(SDM630, SDM630.points["serial"], [0] * 16)


def test_text_that_does_not_fit_is_refused_by_the_encoder() -> None:
    with pytest.raises(ValueError, match="longer than 4"):
        encode_text("too long", 2)


def test_reads_bridge_small_gaps_and_split_large_ones() -> None:
    spans = plan_reads(
        [("input", 0, 2), ("input", 6, 2), ("input", 0x48, 4), ("holding", 5, 1)],
        max_gap_registers=10,
    )
    assert spans == [
        ReadSpan("holding", 5, 1),
        ReadSpan("input", 0, 8),
        ReadSpan("input", 0x48, 4),
    ]


def test_no_read_asks_for_more_than_125_registers() -> None:
    spans = plan_reads([("input", i * 2, 2) for i in range(100)], max_gap_registers=10)
    assert all(span.count <= 125 for span in spans)
    assert sum(span.count for span in spans) == 200


def test_one_reading_needs_few_requests() -> None:
    sdm = plan_reads(
        ((*SDM630.locate()[n], SDM630.points[n].registers) for n in SDM630.reading_points()),
        SDM630.max_gap_registers,
    )
    sunspec = plan_reads(
        ((*SUNSPEC.locate()[n], SUNSPEC.points[n].registers) for n in SUNSPEC.reading_points()),
        SUNSPEC.max_gap_registers,
    )
    assert (len(sdm), len(sunspec)) == (2, 1)


# -------------------------------------------------------------------------------- fuzzing

words = st.integers(min_value=0, max_value=0xFFFF)


@pytest.mark.parametrize("register_map", [SDM630, SUNSPEC], ids=lambda m: m.name)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_register_words_decode_or_raise_a_meter_error(
    register_map: RegisterMap, data: st.DataObject
) -> None:
    where = register_map.locate()
    assert register_map.identity is not None
    needed = [*register_map.reading_points(), register_map.identity]
    cells = sorted(
        {
            (where[name][0], where[name][1] + i)
            for name in needed
            for i in range(register_map.points[name].registers)
        }
    )
    drawn = data.draw(st.lists(words, min_size=len(cells), max_size=len(cells)))
    bank = dict(zip(cells, drawn, strict=True))
    for field_name, point_name in register_map.reading.items():
        try:
            value = decode_point(register_map, point_name, bank, where)
        except MeterError:
            continue
        assert isinstance(value, float), field_name
    point = register_map.points[register_map.identity]
    table, address = where[point.name]
    try:
        identity = decode_identity(
            register_map, point, [bank[(table, address + i)] for i in range(point.registers)]
        )
    except MeterError:
        return
    assert identity and identity.isprintable()


@settings(max_examples=200, deadline=None)
@given(st.lists(words, min_size=0, max_size=4), st.sampled_from(sorted(SUNSPEC.points)))
def test_words_of_the_wrong_count_are_a_frame_error(chosen: list[int], name: str) -> None:
    point = SUNSPEC.points[name]
    if len(chosen) == point.registers:
        return
    with pytest.raises(FrameError):
        decode_raw(SUNSPEC, point, chosen) if point.type != "string" else decode_identity(
            SUNSPEC, point, chosen
        )


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_float32_points_round_trip_within_float32_precision(value: float) -> None:
    point = SDM630.points["total_power"]
    back = decode_number(SDM630, point, encode_number(SDM630, point, value))
    assert back == pytest.approx(value, rel=1e-6, abs=1e-30)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-32767, max_value=32767), st.integers(min_value=-3, max_value=3))
def test_sunspec_int16_points_round_trip_exactly(raw: int, factor: int) -> None:
    point = SUNSPEC.points["W"]
    value = raw * 10.0**factor
    encoded = encode_number(SUNSPEC, point, value, factor)
    assert decode_number(SUNSPEC, point, encoded, factor) == pytest.approx(value)


def test_unimplemented_points_are_served_as_sunspec_markers() -> None:
    assert unimplemented_words(SUNSPEC, SUNSPEC.points["VA"]) == [0x8000]
    assert unimplemented_words(SUNSPEC, SUNSPEC.points["Evt"]) == [0xFFFF, 0xFFFF]
    assert math.isnan(
        decode_number(
            SDM630,
            SDM630.points["power_l1"],
            unimplemented_words(SDM630, SDM630.points["power_l1"]),
        )
    )


junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_damage_to_a_map_file_is_a_register_map_error(data: st.DataObject) -> None:
    """Replace one value anywhere in a valid map with junk: a clear error or a valid map."""
    tree = _sdm630_data()
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            paths.append((node, key))
            if isinstance(child, dict | list):
                walk(child)

    walk(tree)
    container, key = data.draw(st.sampled_from(paths))
    container[key] = data.draw(junk)
    try:
        parse_map(tree, "fuzz.toml")
    except RegisterMapError as exc:
        assert str(exc).startswith("fuzz.toml: ")
