"""A board's `[[site.der.thermal]]` loads: read from its TOML, planned with the 1R1C model,
switched by a relay, and tracked by the model between plans (a board has no room sensor).

The loop below is the board's: every quarter hour it plans (HiGHS, kept model), the relay is
on or off for the interval, and the next plan starts from the temperature that gives.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meterchain.agents.messages import TariffNotice
from meterchain.agents.services import board_planner
from meterchain.config import ConfigError, load_toml
from meterchain.der.equipment import with_thermal_relays
from meterchain.der.optimiser import optimise
from meterchain.devices.board import open_board_devices
from meterchain.roles import BoardConfig

AFTERNOON = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)  # 14:00 in Fortaleza, a Tuesday
TARIFFS = TariffNotice(retail_price=0.95, feed_in_price=0.25)
BOARD = """
meter_id = "40010001"
meter_url = "modbus+rtu:///dev/ttyUSB0?unit=1&map=sdm630"
[key]
keystore = "var/board.json"
[site]
horizon_steps = 40
[site.der.tarifa_branca]
off_peak_per_kwh = 0.56
intermediate_per_kwh = 0.88
peak_per_kwh = 1.44
"""
BEDROOM_AC = """
[[site.der.thermal]]
name = "bedroom-ac"
url = "relay+tcp://127.0.0.1:1502?unit=3&coil=1"
max_power_kw = 1.1
capacitance_wh_per_k = 2500
resistance_k_per_w = 0.012
heat_gain_w = 250
initial_c = 26.0
comfort_min_c = 22
comfort_max_c = 26
comfort_max_away_c = 28
home_from_hour = 17.5
home_until_hour = 7
"""
WATER_HEATER = """
[[site.der.thermal]]
name = "boiler"
url = "relay+rtu:///dev/ttyUSB1?unit=4&coil=0"
mode = "heat"
max_power_kw = 2.0
capacitance_wh_per_k = 232
resistance_k_per_w = 1.5
surroundings_c = 28
cop_at_reference = 1.0
cop_change_per_k = 0.0
initial_c = 50
comfort_min_c = 45
comfort_min_away_c = 35
comfort_max_c = 75
comfort_max_away_c = 75
home_from_hour = 18
home_until_hour = 7
gain_by_hour_w = [0, 0, 0, 0, 0, -1500, -1500, 0, 0, 0, 0, 0,
                  0, 0, 0, 0, 0, 0, -1000, -2500, 0, 0, 0, 0]
"""


def board(tmp_path: Path, *sections: str, horizon_steps: int = 40) -> BoardConfig:
    path = tmp_path / "board.toml"
    head = BOARD.replace("horizon_steps = 40", f"horizon_steps = {horizon_steps}")
    path.write_text(head + "".join(sections))
    return load_toml(path, BoardConfig)


def no_pv(_start: datetime, steps: int) -> tuple[list[float], list[float]]:
    return [0.0] * steps, [300.0] * steps


def test_a_board_pre_cools_before_the_peak_and_keeps_the_band_with_its_relay(
    tmp_path: Path,
) -> None:
    planner = board_planner(board(tmp_path, BEDROOM_AC), no_pv)
    (ac,) = planner.air_conditioners
    powers, rooms = [], []
    for quarter in range(28):  # 14:00 to 21:00, planned every interval as the board does
        start = AFTERNOON + timedelta(minutes=15 * quarter)
        plan = planner.plan(start, TARIFFS, None, start)
        powers.append(plan.thermal_power_w["bedroom-ac"])
        rooms.append(ac.modelled_c(start + timedelta(minutes=15), 900))
    assert set(powers) <= {0.0, 1100.0}  # a relay: off or on at full power
    peak = range(14, 26)  # 17:30 to 20:30, the ponta post at 1.44
    before = range(0, 10)  # 14:00 to 16:30, off-peak at 0.56
    # pre-cooling: the room is brought below the band's top before the peak, on cheap energy,
    assert min(rooms[8:14]) < 26.0 - 0.5
    assert sum(powers[t] for t in before) > sum(powers[t] for t in peak)
    # and people at home from 17:30 find the band held (a relay overshoots by a little)
    assert max(rooms[13:]) <= 26.0 + 0.3
    assert min(rooms) >= 22.0 - 1e-6


def test_the_relay_is_opened_with_the_boards_devices(tmp_path: Path) -> None:
    config = board(tmp_path, BEDROOM_AC, WATER_HEATER)
    devices = open_board_devices(with_thermal_relays(config.devices, config.site.der))
    assert set(devices.loads) == {"bedroom-ac", "boiler"}
    assert devices.loads["boiler"].coil == 0  # type: ignore[attr-defined]


def test_a_water_heater_is_heated_from_its_surroundings_with_hourly_draws(
    tmp_path: Path,
) -> None:
    planner = board_planner(board(tmp_path, WATER_HEATER, horizon_steps=96), no_pv)
    midnight = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)  # 00:00 local
    (tank,) = planner.problem(midnight, TARIFFS, None).thermal_loads
    assert tank.mode == "heat" and set(tank.outdoor_c) == {28.0}
    assert tank.heat_gain_w[4 * 5] == -1500 and tank.heat_gain_w[4 * 19 + 3] == -2500
    assert tank.comfort_min_c[4 * 12] == 35 and tank.comfort_min_c[4 * 20] == 45  # out, home
    schedule = optimise(planner.problem(midnight, TARIFFS, None))
    heater = schedule.thermal_w["boiler"]
    prices = planner.problem(midnight, TARIFFS, None).buy_price_per_kwh
    # heated on cheap energy: nothing in the ponta post, and hot for the evening showers
    assert sum(w for w, price in zip(heater, prices, strict=True) if price == 1.44) == 0
    assert min(schedule.temperature_c["boiler"][4 * 18 :]) >= 45.0 - 1e-6


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ('url = "sunspec+tcp://127.0.0.1:502"', "site.der.thermal.0.url: .*relay\\+tcp://"),
        ('control = "thermostat"', "site.der.thermal.0.control: .*a board plans its thermal"),
        ("gain_by_hour_w = [0, 1]", "site.der.thermal.0.gain_by_hour_w: .*give 24 gains"),
        ('mode = "dry"', "site.der.thermal.0.mode: Input should be 'cool' or 'heat'"),
        ("cop_max = 0.5", "cop_max 0.5 is below cop_min 1.0"),
        ("comfort_max_c = 30", "comfort_max_c \\(30.0\\) <= comfort_max_away_c"),
        ("fan_speed = 3", "site.der.thermal.0.fan_speed: Extra inputs are not permitted"),
    ],
)
def test_a_wrong_thermal_load_names_the_field(tmp_path: Path, change: str, problem: str) -> None:
    lines = [line for line in BEDROOM_AC.splitlines() if not line.startswith(change.split()[0])]
    with pytest.raises(ConfigError, match=problem):
        board(tmp_path, "\n".join([*lines, change, ""]))


def test_a_name_given_twice_is_refused(tmp_path: Path) -> None:
    relay = '[devices]\n[[devices.loads]]\nname = "bedroom-ac"\nurl = "relay+tcp://h:1?coil=2"\n'
    with pytest.raises(ConfigError, match=r"bedroom-ac: named by \[\[site.der.thermal\]\]"):
        board(tmp_path, BEDROOM_AC, relay)
    ev = '[[site.der.deferrable_loads]]\nname = "bedroom-ac"\nenergy_kwh = 1\nmax_power_kw = 1\n'
    with pytest.raises(ConfigError, match=r"load names used twice .*: bedroom-ac"):
        board(tmp_path, BEDROOM_AC, ev)


def test_the_example_board_config_documents_the_section() -> None:
    example = Path(__file__).parents[2] / "examples" / "board.toml"
    text = "\n".join(line.removeprefix("# ") for line in example.read_text().splitlines())
    assert "[[site.der.thermal]]" in text
