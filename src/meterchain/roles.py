"""Configuration of the deployed roles: a board (`agent run`), the market, the grid.

One TOML file per process, read with `meterchain.config.load_toml`. Every model forbids
unknown keys, so a typo names the key instead of being ignored. The sections every role shares
(`[broker]`, `[clock]`, `[schedule]`) must be the same in all files of one community: the
processes agree on virtual time and on the phases of an interval only through them.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from meterchain.config import DerConfig, DevicesConfig, Mechanism, PrepaidBoardConfig, Tariffs

DEFAULT_DEPLOYMENT = Path("var/deployment.json")


class RoleModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerConfig(RoleModel):
    """Where the MQTT 5 broker listens."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, gt=0, lt=65536)
    connect_timeout_s: float = Field(default=30.0, gt=0, description="give up starting after this")
    username: str | None = Field(default=None, description="for a broker with a password file")
    password_env: str = Field(
        default="MCHAIN_BROKER_PASSWORD", description="variable holding the broker password"
    )
    password_file: Path | None = Field(default=None, description="or: a file holding it")
    password_credential: str | None = Field(
        default=None,
        description="or: a systemd credential (LoadCredential=) holding it, by name",
    )
    tls_ca_file: Path | None = Field(
        default=None, description="connect with TLS, checking the broker against this CA"
    )


class ClockConfig(RoleModel):
    """The community's clock: real time (speed 1, no start), or virtual time running faster.

    Virtual time reads `virtual_start` at the wall-clock moment `start` and runs `speed` times
    faster from there, so every process given the same three values agrees on it whenever it
    starts (up to the hosts' clock offsets times `speed`).
    """

    speed: float = Field(default=1.0, gt=0)
    start: datetime | None = Field(default=None, description="wall-clock anchor (UTC)")
    virtual_start: datetime | None = Field(default=None, description="virtual time at `start`")

    @model_validator(mode="after")
    def _anchored(self) -> ClockConfig:
        for name in ("start", "virtual_start"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} needs a time zone, e.g. 2026-11-24T12:00:00Z")
        if self.speed != 1.0 and self.start is None:
            raise ValueError(
                "a clock faster than real time needs `start` (the wall-clock moment it is "
                "anchored at), the same in every process of the community"
            )
        if self.virtual_start is not None and self.start is None:
            raise ValueError("virtual_start needs `start` (the wall-clock moment it applies to)")
        return self


class ScheduleConfig(RoleModel):
    """The moments of an interval T (its start), in virtual seconds.

    Boards send orders at T − order_lead_s; the market closes the gate at T − gate_closure_s
    (clears, settles the batch on chain); boards send their end-of-interval readings at
    T + interval_s + reading_delay_s; the market settles delivery at T + interval_s +
    settle_delay_s with whatever readings arrived. The grid announces tariffs at
    T − order_lead_s − tariff_lead_s.
    """

    interval_s: int = Field(default=900, ge=1)
    order_lead_s: float = Field(default=300.0, gt=0)
    gate_closure_s: float = Field(default=60.0, ge=0)
    reading_delay_s: float = Field(default=10.0, ge=0)
    settle_delay_s: float = Field(default=120.0, gt=0)
    tariff_lead_s: float = Field(default=30.0, ge=0)
    catch_up_intervals: int = Field(
        default=4, ge=0, description="how far back a restarted process looks for phases it missed"
    )

    @model_validator(mode="after")
    def _ordered(self) -> ScheduleConfig:
        if self.gate_closure_s >= self.order_lead_s:
            raise ValueError(
                f"gate_closure_s ({self.gate_closure_s:g}) must be less than order_lead_s "
                f"({self.order_lead_s:g}): boards need time to send orders before the gate closes"
            )
        if self.settle_delay_s <= self.reading_delay_s:
            raise ValueError(
                f"settle_delay_s ({self.settle_delay_s:g}) must be more than reading_delay_s "
                f"({self.reading_delay_s:g}): readings need time to arrive before settlement"
            )
        return self


class MarketRef(RoleModel):
    """Which market a board signs for: from the deployment file, or given outright."""

    deployment: Path | None = Field(default=None, description="deployment file of `chain deploy`")
    chain_id: int | None = Field(default=None, gt=0)
    address: str | None = Field(default=None, pattern=r"^0x[0-9a-fA-F]{40}$")

    @model_validator(mode="after")
    def _one_source(self) -> MarketRef:
        given = self.chain_id is not None, self.address is not None
        if any(given) and not all(given):
            raise ValueError("give both chain_id and address, or neither (use `deployment`)")
        if all(given) and self.deployment is not None:
            raise ValueError("give either `deployment` or chain_id + address, not both")
        return self


class KeyConfig(RoleModel):
    """An encrypted keystore and where its password comes from (never the file itself)."""

    keystore: Path
    password_file: Path | None = None
    password_env: str = "MCHAIN_KEY_PASSWORD"
    password_credential: str | None = Field(
        default=None,
        description="a systemd credential (LoadCredential=) holding the password, by name; "
        "`meterchain board install` sets it",
    )


class SiteConfig(RoleModel):
    """What is behind a board's meter, for its forecast and optimiser."""

    pv_kwp: float = Field(default=0.0, ge=0)
    daily_kwh: float = Field(default=8.0, gt=0)
    latitude: float = Field(default=-3.7319, ge=-90, le=90)
    longitude: float = Field(default=-38.5267, ge=-180, le=180)
    altitude_m: float = 21.0
    horizon_steps: int = Field(default=96, ge=1, le=672)
    timezone: str = Field(default="America/Fortaleza", description="for deferrable loads' windows")
    der: DerConfig | None = Field(default=None, description="what the optimiser plans with")


class BoardConfig(RoleModel):
    """`meterchain agent run --config board.toml`: the agent on one meter's board."""

    meter_id: str = Field(min_length=1, max_length=32)
    meter_url: str
    meter_timeout_s: float = Field(default=2.0, gt=0)
    meter_retries: int = Field(default=3, ge=1)
    name: str | None = Field(default=None, description="agent name; default prosumer-METER_ID")
    market_agent: str = "market"
    monitor_agent: str | None = Field(default="monitor", description="heartbeats go here")
    community: str = "community"
    store: str = "sqlite:///var/board.db"
    key: KeyConfig
    market: MarketRef = MarketRef(deployment=DEFAULT_DEPLOYMENT)
    broker: BrokerConfig = BrokerConfig()
    clock: ClockConfig = ClockConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    site: SiteConfig = SiteConfig()
    tariffs: Tariffs = Tariffs()
    decimals: int = Field(default=2, ge=0, le=18, description="the credit token's decimals")
    devices: DevicesConfig = DevicesConfig()
    prepaid: PrepaidBoardConfig = PrepaidBoardConfig()
    retention_days: float = Field(
        default=90, gt=0, description="how long the board keeps its interval records"
    )

    @model_validator(mode="after")
    def _one_relay_per_name(self) -> BoardConfig:
        thermal = {t.name for t in self.site.der.thermal} if self.site.der is not None else set()
        both = sorted(thermal & {load.name for load in self.devices.loads})
        if both:
            raise ValueError(
                f"{', '.join(both)}: named by [[site.der.thermal]] and by [[devices.loads]]; "
                "a thermal load names its own relay (url), give each load one name"
            )
        return self

    @property
    def agent_name(self) -> str:
        return self.name or f"prosumer-{self.meter_id}"


class MarketConfig(RoleModel):
    """`meterchain market run --config market.toml`: the community's market operator."""

    name: str = "market"
    community: str = "community"
    monitor_agent: str | None = Field(default="monitor", description="refusals go here")
    rpc_url: str | None = Field(default=None, description="default: the deployment file's")
    deployment: Path = DEFAULT_DEPLOYMENT
    store: str = "sqlite:///var/market.db"
    key: KeyConfig
    mechanism: Mechanism = "pay-as-clear"
    broker: BrokerConfig = BrokerConfig()
    clock: ClockConfig = ClockConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    tariffs: Tariffs = Tariffs()
    chain_retry_max_s: float = Field(
        default=5.0, gt=0, description="longest wait between chain retries"
    )


class GridConfig(RoleModel):
    """`meterchain grid run --config grid.toml`: the utility's tariffs and feeder limits."""

    name: str = "grid"
    community: str = "community"
    broker: BrokerConfig = BrokerConfig()
    clock: ClockConfig = ClockConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    tariffs: Tariffs = Tariffs()
    feeder_export_limit_w: float | None = Field(default=None, gt=0)
    prosumers: list[str] = Field(default_factory=list, description="agent names to curtail")
