"""Configuration models: one TOML file per role (board, market, grid) and per scenario.

Every model forbids unknown keys, so a typo in a file is an error that names the key rather
than a setting silently ignored.
"""

from __future__ import annotations

import tomllib
from datetime import date, datetime
from pathlib import Path
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

Protocol = Literal["modbus", "dlms", "iec62056-21", "nbr14522"]
Mechanism = Literal["pay-as-clear", "pay-as-bid"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(Exception):
    """A configuration file is missing, unreadable or invalid."""


class Location(Strict):
    latitude: float = -3.7319
    longitude: float = -38.5267
    altitude_m: float = 21.0
    timezone: str = "America/Fortaleza"


class Tariffs(Strict):
    """Grid tariffs in currency units per kWh: the grid buys at feed-in and sells at retail."""

    retail_price: float = Field(default=0.95, gt=0)
    feed_in_price: float = Field(default=0.25, ge=0)

    @model_validator(mode="after")
    def _feed_in_below_retail(self) -> Tariffs:
        if self.feed_in_price > self.retail_price:
            raise ValueError(
                f"feed_in_price {self.feed_in_price} is above retail_price {self.retail_price}"
            )
        return self


class SwitchedLoadConfig(Strict):
    """A relay-switched load of a board: its name and the URL of its coil.

    With `power_w` and `energy_wh` it is deferrable: the planner places `energy_wh` a day, at
    `power_w` (on or off), between the local hours `start_hour` and `end_hour`.
    """

    name: str = Field(min_length=1, max_length=32)
    url: str
    power_w: float | None = Field(default=None, gt=0)
    energy_wh: float | None = Field(default=None, gt=0, description="needed every day")
    start_hour: int = Field(default=0, ge=0, le=23)
    end_hour: int = Field(default=24, ge=1, le=24)
    timezone: str = "America/Fortaleza"

    @model_validator(mode="after")
    def _url(self) -> SwitchedLoadConfig:
        _check_device_url(self.url, "load")
        if (self.power_w is None) != (self.energy_wh is None):
            raise ValueError(f"load {self.name!r}: a deferrable load needs power_w and energy_wh")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"load {self.name!r}: unknown time zone {self.timezone!r}") from None
        if self.end_hour <= self.start_hour:
            raise ValueError(
                f"load {self.name!r}: end_hour {self.end_hour} is not after start_hour "
                f"{self.start_hour}"
            )
        return self


def _check_device_url(url: str, kind: str) -> None:
    """The scheme only: the devices package parses the rest when the board opens the device."""
    protocol = "relay" if kind == "load" else "sunspec"
    scheme = url.partition("://")[0].lower()
    if scheme not in (f"{protocol}+tcp", f"{protocol}+rtu"):
        raise ValueError(
            f"{url!r}: a {kind} is reached over {protocol}+tcp://HOST:PORT or "
            f"{protocol}+rtu:///dev/ttyUSB0"
        )


class DevicesConfig(Strict):
    """A board's `[devices]`: what it switches, by URL, and its safety settings."""

    battery: str | None = Field(
        default=None, description="e.g. sunspec+tcp://192.168.1.20:502?unit=1"
    )
    battery_capacity_wh: float | None = Field(default=None, gt=0, description="for the planner")
    battery_max_w: float | None = Field(default=None, gt=0, description="for the planner")
    pv: str | None = Field(default=None, description="e.g. sunspec+rtu:///dev/ttyUSB0?unit=2")
    loads: list[SwitchedLoadConfig] = Field(default_factory=list)
    export_limit_w: float | None = Field(
        default=None, ge=0, description="the connection's own limit"
    )
    timeout_s: float = Field(default=2.0, gt=0)
    tries: int = Field(default=3, ge=1)
    setpoint_revert_s: int = Field(
        default=1800, ge=0, le=65535, description="devices return to their own rule if not re-told"
    )
    alarms_to: str | None = Field(default=None, description="agent or group that receives alarms")

    @model_validator(mode="after")
    def _urls(self) -> DevicesConfig:
        for kind in ("battery", "pv"):
            url = getattr(self, kind)
            if url is not None:
                _check_device_url(url, kind)
        if self.battery is not None and None in (self.battery_capacity_wh, self.battery_max_w):
            raise ValueError(
                "a battery needs battery_capacity_wh and battery_max_w, for the planner"
            )
        names = [load.name for load in self.loads]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"load names used twice: {', '.join(duplicates)}")
        return self


class AirConditionerConfig(Strict):
    """An inverter air conditioner and the room it cools (a 1R1C model: docs/der.md).

    The comfort band is [comfort_min_c, comfort_max_c] while people are home (from
    `home_from_hour` to `home_until_hour`, local time, across midnight if the first is later)
    and [comfort_min_c, comfort_max_away_c] otherwise. `control` "plan" lets the board's
    optimiser run it (pre-cooling on cheap energy); "thermostat" holds the top of the band as
    a plain inverter thermostat does, which is what the plan is measured against.
    """

    max_power_kw: float = Field(1.2, gt=0)
    capacitance_wh_per_k: float = Field(3_000.0, gt=0)
    resistance_k_per_w: float = Field(0.01, gt=0)
    cop_at_reference: float = Field(3.2, gt=0)
    reference_outdoor_c: float = 35.0
    cop_change_per_k: float = -0.08
    heat_gain_w: float = Field(300.0, ge=0)
    comfort_min_c: float = 22.0
    comfort_max_c: float = 26.0
    comfort_max_away_c: float = 28.0
    home_from_hour: float = Field(18.0, ge=0, lt=24)
    home_until_hour: float = Field(7.0, ge=0, lt=24)
    initial_c: float = 27.0
    discomfort_per_kelvin_hour: float = Field(2.0, ge=0)
    control: Literal["plan", "thermostat"] = "plan"

    def comfort_band_c(self, moment: datetime, timezone: str) -> tuple[float, float]:
        """The comfort band in force at a moment (people home or out, local time)."""
        home = self._home(moment, timezone)
        return self.comfort_min_c, self.comfort_max_c if home else self.comfort_max_away_c

    def _home(self, moment: datetime, timezone: str) -> bool:
        local = moment.astimezone(ZoneInfo(timezone))
        hour = local.hour + local.minute / 60
        start, end = self.home_from_hour, self.home_until_hour
        return (start <= hour or hour < end) if start > end else (start <= hour < end)

    @model_validator(mode="after")
    def _band(self) -> AirConditionerConfig:
        if not self.comfort_min_c <= self.comfort_max_c <= self.comfort_max_away_c:
            raise ValueError(
                f"comfort temperatures must satisfy comfort_min_c ({self.comfort_min_c}) <= "
                f"comfort_max_c ({self.comfort_max_c}) <= comfort_max_away_c "
                f"({self.comfort_max_away_c})"
            )
        return self


class ThermalLoadConfig(AirConditionerConfig):
    """A board's relay-switched thermal load (`[[site.der.thermal]]`, docs/der.md): an air
    conditioner, an electric water heater or a heat pump, with the 1R1C model of the room or
    tank it serves. The relay at `url` switches it off, or on at `max_power_kw`.

    Beside the air conditioner's settings: `mode` "heat" for a water heater or heat pump (a
    heat pump's COP rises with the outdoor temperature: a positive `cop_change_per_k`; a
    resistive heater has COP 1 and no change), `surroundings_c` for a machine indoors (a tank in
    the laundry: that temperature instead of the outdoor forecast), `comfort_min_away_c` (the
    band's bottom while people are out, e.g. a tank let cool) and `gain_by_hour_w`, 24 heat
    gains by local hour (hot water drawn is a negative gain) in place of `heat_gain_w`.
    """

    name: str = Field(min_length=1, max_length=32)
    url: str = Field(description="the relay, e.g. relay+rtu:///dev/ttyUSB1?unit=3&coil=1")
    mode: Literal["cool", "heat"] = "cool"
    cop_min: float = Field(1.0, gt=0)
    cop_max: float = Field(8.0, gt=0)
    surroundings_c: float | None = None
    comfort_min_away_c: float | None = None
    gain_by_hour_w: list[float] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _relay(cls, url: str) -> str:
        _check_device_url(url, "load")
        return url

    @field_validator("control")
    @classmethod
    def _planned(cls, control: str) -> str:
        if control != "plan":
            raise ValueError(
                "a board plans its thermal loads: control must be 'plan' ('thermostat' is for "
                "simulated households)"
            )
        return control

    @field_validator("gain_by_hour_w")
    @classmethod
    def _hours(cls, gains: list[float]) -> list[float]:
        if gains and len(gains) != 24:
            raise ValueError(f"give 24 gains, one per local hour, not {len(gains)}")
        return gains

    @model_validator(mode="after")
    def _bounds(self) -> ThermalLoadConfig:
        if self.cop_max < self.cop_min:
            raise ValueError(f"cop_max {self.cop_max} is below cop_min {self.cop_min}")
        if self.comfort_min_away_c is not None and self.comfort_min_away_c > self.comfort_min_c:
            raise ValueError(
                f"comfort_min_away_c {self.comfort_min_away_c} is above comfort_min_c "
                f"{self.comfort_min_c}"
            )
        return self

    def comfort_band_c(self, moment: datetime, timezone: str) -> tuple[float, float]:
        low, high = super().comfort_band_c(moment, timezone)
        if self.comfort_min_away_c is not None and not self._home(moment, timezone):
            low = self.comfort_min_away_c
        return low, high

    def gain_w(self, moment: datetime, timezone: str) -> float:
        """The heat gain at a moment: by local hour when given, else `heat_gain_w`."""
        if not self.gain_by_hour_w:
            return self.heat_gain_w
        return self.gain_by_hour_w[moment.astimezone(ZoneInfo(timezone)).hour]


def _clock_minutes(value: str) -> int:
    try:
        hours, minutes = (int(part) for part in value.split(":"))
    except ValueError:
        raise ValueError(f"{value!r} is not a time of day; write it as HH:MM, e.g. 17:30") from None
    if not (0 <= hours <= 24 and 0 <= minutes < 60) or hours * 60 + minutes > 1440:
        raise ValueError(f"{value!r} is not a time of day between 00:00 and 24:00")
    return hours * 60 + minutes


class BatteryConfig(Strict):
    """A battery behind the board's meter (docs/der.md, "Batteries")."""

    name: str = "battery"
    capacity_kwh: float = Field(gt=0)
    charge_kw: float = Field(gt=0)
    discharge_kw: float = Field(gt=0)
    charge_efficiency: float = Field(0.95, gt=0, le=1)
    discharge_efficiency: float = Field(0.95, gt=0, le=1)
    soc_min: float = Field(0.1, ge=0, le=1)
    soc_max: float = Field(0.95, ge=0, le=1)
    grid_charging: bool = True
    grid_discharging: bool = True
    cell_price_per_kwh: float = Field(0.0, ge=0, description="replacement cells per kWh")
    cycle_life: float = Field(6000.0, gt=0)
    ramp_limit_kw_per_h: float | None = Field(None, gt=0)
    taper_soc: float | None = Field(None, ge=0, lt=1, description="CC-CV taper starts here")
    taper_end_power_fraction: float = Field(0.1, ge=0, le=1)


class DeferrableLoadConfig(Strict):
    """A load the board may shift, needed every day between `earliest` and `latest` (local
    time, HH:MM; `latest` before `earliest` runs past midnight). docs/der.md, "Loads"."""

    name: str
    energy_kwh: float = Field(ge=0)
    earliest: str = "00:00"
    latest: str = "24:00"
    max_power_kw: float = Field(gt=0)
    min_power_kw: float = Field(0.0, ge=0)
    min_energy_kwh: float | None = Field(None, ge=0)
    single_block: bool = False
    surplus_only: bool = False
    program_kw: list[float] = Field(default_factory=list, description="power per step")
    min_on_steps: int = Field(1, ge=1)
    min_off_steps: int = Field(1, ge=1)
    startup_cost: float = Field(0.0, ge=0)
    max_starts: int | None = Field(None, ge=0)
    price_per_kwh: float = 0.0

    @model_validator(mode="after")
    def _times(self) -> DeferrableLoadConfig:
        _clock_minutes(self.earliest)
        _clock_minutes(self.latest)
        return self


class TarifaBrancaConfig(Strict):
    """Group B's white tariff (R$/kWh per post; the ponta post starts at `peak_start`)."""

    off_peak_per_kwh: float = Field(ge=0)
    intermediate_per_kwh: float = Field(ge=0)
    peak_per_kwh: float = Field(ge=0)
    peak_start: str = "17:30"

    @model_validator(mode="after")
    def _time(self) -> TarifaBrancaConfig:
        _clock_minutes(self.peak_start)
        return self


class GroupAConfig(Strict):
    """A Group A binomial tariff: energy by post, demand per kW (green or blue modality)."""

    modality: Literal["verde", "azul"] = "verde"
    energy_peak_per_kwh: float = Field(ge=0)
    energy_off_peak_per_kwh: float = Field(ge=0)
    demand_per_kw: float = Field(ge=0)
    contracted_kw: float = Field(ge=0)
    demand_peak_per_kw: float = Field(0.0, ge=0)
    contracted_peak_kw: float = Field(0.0, ge=0)
    peak_start: str = "17:30"
    tolerance_fraction: float = Field(0.05, ge=0, le=1)
    overrun_multiplier: float = Field(2.0, ge=0)

    @model_validator(mode="after")
    def _time(self) -> GroupAConfig:
        _clock_minutes(self.peak_start)
        return self


class GridLimitWindow(Strict):
    """Import/export limits in force between two times of day (a feeder's schedule)."""

    start: str
    end: str
    import_limit_kw: float | None = Field(None, ge=0)
    export_limit_kw: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _times(self) -> GridLimitWindow:
        _clock_minutes(self.start)
        _clock_minutes(self.end)
        return self


class SocTargetConfig(Strict):
    """A state of charge wanted every day at a time (HH:MM local), e.g. full before the peak."""

    at: str
    soc: float = Field(ge=0, le=1)
    battery: str | None = None

    @model_validator(mode="after")
    def _time(self) -> SocTargetConfig:
        _clock_minutes(self.at)
        return self


class DerConfig(Strict):
    """What the board's optimiser plans with beyond the meter (`[site.der]` of a board).

    Prices: `tarifa_branca` or `group_a` when given, else the grid's flat tariffs. Limits:
    `import_limit_kw`/`export_limit_kw` always, `limit_windows` at their times of day.
    """

    batteries: list[BatteryConfig] = Field(default_factory=list)
    deferrable_loads: list[DeferrableLoadConfig] = Field(default_factory=list)
    tarifa_branca: TarifaBrancaConfig | None = None
    group_a: GroupAConfig | None = None
    import_limit_kw: float | None = Field(None, ge=0)
    export_limit_kw: float | None = Field(None, ge=0)
    limit_windows: list[GridLimitWindow] = Field(default_factory=list)
    soc_targets: list[SocTargetConfig] = Field(default_factory=list)
    thermal: list[ThermalLoadConfig] = Field(default_factory=list)
    end_soc: float = Field(0.5, ge=0, le=1, description="SoC wanted at the horizon's end")
    pv_curtailable: bool = True
    timezone: str = "America/Fortaleza"

    @model_validator(mode="after")
    def _one_tariff(self) -> DerConfig:
        if self.tarifa_branca is not None and self.group_a is not None:
            raise ValueError("give either tarifa_branca (Group B) or group_a, not both")
        names = [b.name for b in self.batteries]
        if len(set(names)) != len(names):
            raise ValueError(f"battery names must be unique, got {names}")
        loads = [d.name for d in self.deferrable_loads] + [t.name for t in self.thermal]
        twice = sorted({n for n in loads if loads.count(n) > 1})
        if twice:
            raise ValueError(f"load names used twice (deferrable or thermal): {', '.join(twice)}")
        return self


Weekday = Literal["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
WEEKDAYS: tuple[Weekday, ...] = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class TopUp(Strict):
    """A prepaid household tops up `amount` (currency units) at `at` (UTC): with a voucher the
    utility printed, or from its wallet."""

    at: datetime
    amount: float = Field(gt=0)
    via: Literal["voucher", "wallet"] = "voucher"

    @model_validator(mode="after")
    def _aware(self) -> TopUp:
        if self.at.tzinfo is None:
            raise ValueError(f"top-up time {self.at.isoformat()} needs a time zone, e.g. …Z")
        return self


class PrepaidConfig(Strict):
    """A scenario's `[prepaid]`: the utility's prepaid settings (money in currency units).

    Defaults follow Brazilian rules: no cut-off before 08:00 or from 18:00, none on Fridays,
    weekends, public holidays or the day before one (docs/prepaid.md).
    """

    emergency_credit: float = Field(default=2.0, ge=0)
    advance_buffer: float = Field(default=1.0, ge=0, description="least lent ahead of use")
    thresholds: list[float] = Field(default=[5.0, 2.0, 0.0], max_length=8)
    utc_offset_h: float = Field(default=-3.0, ge=-14, le=14)
    cut_from_hour: int = Field(default=8, ge=0, le=23)
    cut_to_hour: int = Field(default=18, ge=1, le=24)
    cut_weekdays: list[Weekday] = Field(default=["mon", "tue", "wed", "thu"])
    no_cut_on_holiday_eve: bool = True
    holidays: list[date] = Field(default_factory=list)
    float_credit: float = Field(default=1000.0, gt=0, description="the utility's float")

    @model_validator(mode="after")
    def _consistent(self) -> PrepaidConfig:
        if self.cut_to_hour <= self.cut_from_hour:
            raise ValueError(
                f"cut_to_hour {self.cut_to_hour} is not after cut_from_hour {self.cut_from_hour}"
            )
        if any(b >= a for a, b in zip(self.thresholds, self.thresholds[1:], strict=False)):
            raise ValueError(f"thresholds {self.thresholds} must decrease strictly")
        return self

    @property
    def weekday_mask(self) -> int:
        return sum(1 << WEEKDAYS.index(day) for day in set(self.cut_weekdays))


class PrepaidBoardConfig(Strict):
    """A board's `[prepaid]`: its meter is on prepaid supply (docs/prepaid.md)."""

    enabled: bool = False
    never_cut: bool = Field(
        default=False, description="life-sustaining equipment here: refuse every cut-off"
    )
    offline_after_s: float = Field(
        default=1800.0, gt=0, description="without the chain's word this long, decide alone"
    )


class Household(Strict):
    """One prosumer (or consumer): its meter, its load and what it has on the roof and wall."""

    meter_id: str = Field(pattern=r"^[0-9]{8}$", description="8 digits (NBR 14522 serials)")
    protocol: Protocol = "modbus"
    daily_kwh: float = Field(8.0, gt=0)
    load_profile: Literal["h0", "g0"] = "h0"
    pv_kwp: float = Field(0.0, ge=0)
    battery_kwh: float = Field(0.0, ge=0)
    battery_kw: float = Field(0.0, ge=0)
    connection_kw: float = Field(
        15.0, gt=0, description="what the supply can carry; readings above it are implausible"
    )
    air_conditioner: AirConditionerConfig | None = None
    prepaid: bool = Field(default=False, description="supplied on prepaid credit (PrepaidMeter)")
    starting_credit: float | None = Field(
        default=None, ge=0, description="prepaid credit at the start"
    )
    never_cut: bool = Field(default=False, description="prepaid, never cut off (medical equipment)")
    top_ups: list[TopUp] = Field(default_factory=list)

    @model_validator(mode="after")
    def _prepaid_settings(self) -> Household:
        if not self.prepaid and (
            self.starting_credit is not None or self.never_cut or self.top_ups
        ):
            raise ValueError(
                f"household {self.meter_id}: starting_credit, never_cut and top_ups are for "
                "prepaid households; add prepaid = true"
            )
        return self


class HouseholdGroup(Strict):
    """`count` households alike but for their noise; ids continue from `first_meter_id`."""

    count: int = Field(gt=0)
    first_meter_id: int = Field(ge=10_000_000, le=99_999_999)
    protocols: list[Protocol] = Field(default=["modbus"], min_length=1)
    daily_kwh: float = Field(8.0, gt=0)
    load_profile: Literal["h0", "g0"] = "h0"
    pv_kwp: float = Field(0.0, ge=0)
    battery_kwh: float = Field(0.0, ge=0)
    battery_kw: float = Field(0.0, ge=0)
    connection_kw: float = Field(15.0, gt=0)
    air_conditioner: AirConditionerConfig | None = None

    def expand(self) -> list[Household]:
        return [
            Household(
                meter_id=f"{self.first_meter_id + i:08d}",
                protocol=self.protocols[i % len(self.protocols)],
                daily_kwh=self.daily_kwh,
                load_profile=self.load_profile,
                pv_kwp=self.pv_kwp,
                battery_kwh=self.battery_kwh,
                battery_kw=self.battery_kw,
                connection_kw=self.connection_kw,
                air_conditioner=self.air_conditioner,
            )
            for i in range(self.count)
        ]


class CertificatesConfig(Strict):
    """Renewable-energy certificates in a simulation: every PV meter is a registered device,
    and (with `auto_retire`) every household has its local purchases' certificates retired in
    its name at issuance."""

    enabled: bool = True
    auto_retire: bool = True
    technology: str = Field(default="Solar;Photovoltaic;Roof mounted", min_length=1)


class FundConfig(Strict):
    """A community plant funded by some households: `plant_meter_id` is one of the scenario's
    households (its PV is the plant; it is registered as a generator owned by the fund), and
    each backer buys its number of shares at `price_per_share` (currency units). The goal and
    the cap default to every share the backers buy, so the campaign succeeds at once."""

    plant_meter_id: str = Field(pattern=r"^[0-9]{8}$")
    price_per_share: float = Field(default=100.0, gt=0)
    backers: dict[str, int] = Field(min_length=1, description="meter id → shares")
    goal_shares: int | None = Field(default=None, gt=0)
    cap_shares: int | None = Field(default=None, gt=0)
    name: str = "community solar shares"
    symbol: str = "SUN"

    @model_validator(mode="after")
    def _shares(self) -> FundConfig:
        for meter_id, shares in self.backers.items():
            if shares <= 0:
                raise ValueError(f"backer {meter_id} buys {shares} shares; give a positive number")
        total = sum(self.backers.values())
        cap = self.cap_shares or total
        goal = self.goal_shares or min(total, cap)
        if goal > cap:
            raise ValueError(f"goal_shares {goal} is above cap_shares {cap}")
        if total > cap:
            raise ValueError(f"the backers buy {total} shares, more than cap_shares {cap}")
        if self.plant_meter_id in self.backers:
            raise ValueError(f"the plant {self.plant_meter_id} cannot back itself")
        return self


class Scenario(Strict):
    """A community to simulate: households, tariffs, place and time."""

    name: str
    start: datetime = Field(description="UTC start; local midnight in Fortaleza is 03:00Z")
    days: float = Field(1.0, gt=0)
    interval_s: int = Field(900, ge=60)
    seed: int = 1
    cloudiness: float = Field(0.3, ge=0, le=1)
    mechanism: Mechanism = "pay-as-clear"
    device_link: Literal["sunspec", "in-process"] = Field(
        default="sunspec",
        description="batteries and PV inverters driven over SunSpec Modbus on loopback, as a "
        "board drives them, or (to compare) the battery set straight in the physical model",
    )
    location: Location = Location()
    tariffs: Tariffs = Tariffs()
    prepaid: PrepaidConfig = PrepaidConfig()
    households: list[Household] = Field(default_factory=list)
    groups: list[HouseholdGroup] = Field(default_factory=list)
    certificates: CertificatesConfig = CertificatesConfig()
    fund: FundConfig | None = None

    @model_validator(mode="after")
    def _unique_meters(self) -> Scenario:
        ids = [h.meter_id for h in self.all_households()]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"meter ids used twice: {', '.join(duplicates)}")
        if not ids:
            raise ValueError("a scenario needs at least one household")
        if self.start.tzinfo is None:
            raise ValueError("start needs a time zone, e.g. 2026-11-24T03:00:00Z")
        if self.fund is not None:
            unknown = sorted({self.fund.plant_meter_id, *self.fund.backers} - set(ids))
            if unknown:
                raise ValueError(f"fund names meters that are not households: {', '.join(unknown)}")
        return self

    def all_households(self) -> list[Household]:
        return [*self.households, *(h for group in self.groups for h in group.expand())]

    @property
    def intervals(self) -> int:
        return round(self.days * 86400 / self.interval_s)


ModelT = TypeVar("ModelT", bound=BaseModel)


def load_toml(path: Path, model: type[ModelT]) -> ModelT:
    """Read a TOML file into `model`, with errors that name the file, the key and the problem."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(top level)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None
