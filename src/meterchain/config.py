"""Configuration models: one TOML file per role (board, market, grid) and per scenario.

Every model forbids unknown keys, so a typo in a file is an error that names the key rather
than a setting silently ignored.
"""

from __future__ import annotations

import tomllib
from datetime import datetime
from pathlib import Path
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
