"""Device maps are data checked on load; device URLs say what is wrong with them."""

from __future__ import annotations

from pathlib import Path

import pytest

from meterchain.devices.errors import InvalidDeviceUrl
from meterchain.devices.maps import available_device_maps, load_device_map
from meterchain.devices.registry import open_device
from meterchain.devices.url import parse_device_url
from meterchain.meters.modbus_maps import RegisterMapError

# Model lengths as the SunSpec definitions give them (github.com/sunspec/models, json/).
SUNSPEC_LENGTHS = {1: 66, 101: 50, 121: 30, 123: 24, 124: 24, 802: 62}


@pytest.mark.parametrize("name", ["sunspec-storage", "sunspec-pv"])
def test_shipped_maps_follow_the_sunspec_model_lengths(name: str) -> None:
    device_map = load_device_map(name)
    for model_id, length in device_map.sunspec.models:
        assert SUNSPEC_LENGTHS[model_id] == length
        points = device_map.model_points(model_id)
        last = points[-1]
        assert (last.offset or 0) + last.registers == length + 2  # every point, none missing


def test_the_set_points_are_writable_and_the_measurements_are_not() -> None:
    storage = load_device_map("sunspec-storage")
    assert {"StorCtl_Mod", "InWRte", "OutWRte", "InOutWRte_RvrtTms"} <= storage.writable
    assert not {"ChaState", "SoC", "W", "WChaMax_SF"} & storage.writable
    pv = load_device_map("sunspec-pv")
    assert {"WMaxLimPct", "WMaxLim_Ena", "WMaxLimPct_RvrtTms"} <= pv.writable
    assert "W" not in pv.writable
    assert set(available_device_maps()) >= {"sunspec-storage", "sunspec-pv"}


def test_a_bad_access_value_names_the_file_and_the_point(tmp_path: Path) -> None:
    text = (Path(load_device_map("sunspec-pv").register_map.source)).read_text()
    path = tmp_path / "pv.toml"
    entry = 'WMaxLim_Ena = { model = 123, offset = 9, type = "uint16", access = "rw"'
    assert entry in text
    path.write_text(text.replace(entry, entry.replace('"rw"', '"write"')))
    with pytest.raises(RegisterMapError, match=r"pv\.toml: points\.WMaxLim_Ena\.access: 'write'"):
        load_device_map(str(path))


def test_an_unknown_map_lists_the_shipped_ones() -> None:
    with pytest.raises(RegisterMapError, match="shipped maps: sunspec-pv, sunspec-storage"):
        load_device_map("fronius")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("modbus+tcp://127.0.0.1:502", "unknown device protocol 'modbus'"),
        ("sunspec://127.0.0.1:502", "sunspec runs over tcp or rtu"),
        ("sunspec+tcp://127.0.0.1", "needs a port"),
        ("sunspec+rtu://host/dev/ttyUSB0", "names a device path"),
        ("sunspec+tcp://127.0.0.1:502?unit=300&kind=pv", r"unit=300 is outside 0\.\.255"),
        ("sunspec+rtu:///dev/ttyUSB0?unit=0&kind=pv", r"unit=0 is outside 1\.\.247"),
        ("sunspec+tcp://127.0.0.1:502?uint=1&kind=pv", "unknown option uint; known: baud"),
        ("sunspec+tcp://127.0.0.1:502", "add kind=battery or kind=pv"),
        ("sunspec+tcp://127.0.0.1:502?kind=ev", "kind=ev is not one of battery, pv, load"),
        ("sunspec+tcp://127.0.0.1:502?kind=pv&revert_s=-1", "revert_s=-1 is outside"),
        ("relay+tcp://127.0.0.1:502?coil=x", "coil='x' is not an integer"),
        ("relay+tcp://127.0.0.1:502?coil=0&deadline_s=0", "deadline_s=0 must be a positive"),
    ],
)
def test_bad_device_urls_say_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(InvalidDeviceUrl, match=problem):
        open_device(url)


def test_a_serial_url_keeps_its_line_settings() -> None:
    url = parse_device_url("sunspec+rtu:///dev/ttyUSB0?unit=2&baud=19200&parity=E")
    assert (url.device, url.unit(), url.option("baud", ""), url.where) == (
        "/dev/ttyUSB0",
        2,
        "19200",
        "/dev/ttyUSB0",
    )


def test_a_device_url_may_bound_each_operation_like_a_meter_url() -> None:
    """The engine's deadline message suggests `deadline_s=`: device URLs take it too."""
    relay = open_device("relay+tcp://127.0.0.1:502?unit=1&coil=0&deadline_s=12.5")
    assert relay.link.policy.deadline_s == 12.5  # type: ignore[attr-defined]
