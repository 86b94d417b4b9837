"""A board's [devices] section: devices by URL, checked when the file is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from meterchain.config import ConfigError, load_toml
from meterchain.roles import BoardConfig

BOARD = """
meter_id = "40010001"
meter_url = "modbus+rtu:///dev/ttyUSB0?unit=1&map=sdm630"
[key]
keystore = "var/board.json"
"""


def board(tmp_path: Path, devices: str) -> BoardConfig:
    path = tmp_path / "board.toml"
    path.write_text(BOARD + "[devices]\n" + devices)
    return load_toml(path, BoardConfig)


def test_devices_are_listed_by_url(tmp_path: Path) -> None:
    config = board(
        tmp_path,
        """
battery = "sunspec+rtu:///dev/ttyUSB0?unit=1"
battery_capacity_wh = 10000
battery_max_w = 3000
pv = "sunspec+tcp://192.168.1.20:502?unit=2"
export_limit_w = 5000
alarms_to = "monitor"
[[devices.loads]]
name = "heater"
url = "relay+rtu:///dev/ttyUSB0?unit=3&coil=0"
power_w = 2000
energy_wh = 3000
start_hour = 10
end_hour = 16
""",
    )
    devices = config.devices
    assert (
        devices.battery == "sunspec+rtu:///dev/ttyUSB0?unit=1" and devices.setpoint_revert_s == 1800
    )
    assert devices.loads[0].name == "heater" and devices.loads[0].energy_wh == 3000


def test_a_board_without_devices_has_none(tmp_path: Path) -> None:
    path = tmp_path / "board.toml"
    path.write_text(BOARD)
    config = load_toml(path, BoardConfig)
    assert config.devices.battery is None and config.devices.loads == []


@pytest.mark.parametrize(
    ("devices", "problem"),
    [
        ('pv = "relay+tcp://h:502?coil=1"', r"devices: .*a pv is reached over sunspec\+tcp"),
        ('battery = "sunspec+tcp://h:502"', "needs battery_capacity_wh and battery_max_w"),
        ('batery = "sunspec+tcp://h:502"', r"devices\.batery: Extra inputs are not permitted"),
        ("export_limit_w = -1", r"devices\.export_limit_w: Input should be greater than"),
    ],
)
def test_a_wrong_devices_section_names_the_key(tmp_path: Path, devices: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        board(tmp_path, devices)
