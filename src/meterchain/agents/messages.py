"""What agents say to each other: the content models of their envelopes.

Orders and readings travel with their EIP-712 signatures, in on-chain units, so the market
agent can post exactly what the boards signed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from meterchain.agents.runtime import content_type
from meterchain.chain.signing import (
    OrderMessage,
    OrderSide,
    ReadingMessage,
    SignedOrder,
    SignedReading,
    meter_id_to_bytes32,
)

PhaseName = Literal["order", "clear", "delivery", "settle"]

UINT64_END = 2**64  # what the chain's uint64 fields hold: 0 .. 2**64 - 1
UINT32_END = 2**32  # a trade's quantity in a packed batch
# secp256k1's group order: r and s of a signature lie in 1 .. n-1, and s in the lower half
# (EIP-2), as OpenZeppelin's ECDSA.recover requires.
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _check_meter_id(value: str) -> str:
    if len(value.encode("utf-8")) > 32:
        raise ValueError("a meter id is at most 32 bytes of UTF-8 (it is a bytes32 on chain)")
    return value


def _check_signature(value: str) -> str:
    raw = bytes.fromhex(value[2:])
    r = int.from_bytes(raw[:32], "big")
    s = int.from_bytes(raw[32:64], "big")
    if not 0 < r < SECP256K1_ORDER:
        raise ValueError("r is zero or not below the curve order: not a signature")
    if not 0 < s <= SECP256K1_ORDER // 2:
        raise ValueError("s is zero or in the upper half of the curve order (EIP-2): not accepted")
    if raw[64] not in (27, 28):
        raise ValueError(f"v is {raw[64]}, not 27 or 28")
    return value


MeterId = Annotated[str, Field(min_length=1, max_length=32), AfterValidator(_check_meter_id)]
IntervalNumber = Annotated[int, Field(gt=0, lt=UINT64_END)]
Uint64 = Annotated[int, Field(ge=0, lt=UINT64_END)]
Signature = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{130}$"), AfterValidator(_check_signature)]


class Content(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@content_type("tick")
class Tick(Content):
    """A moment of an interval: prosumers send orders at `order` and readings at `delivery`
    (the interval's end); the market clears at `clear` (gate closure) and settles at `settle`.
    A tick handled after its `deadline` (a board that was busy or down) is too late to act on."""

    interval_start: datetime
    phase: PhaseName
    deadline: datetime | None = None
    overdue: bool = False  # posted after its deadline (the process was down at the time)


@content_type("tariffs")
class TariffNotice(Content):
    """The grid's prices (currency units per kWh) and the feeder's limits."""

    retail_price: float = Field(gt=0)
    feed_in_price: float = Field(ge=0)
    max_export_w: float | None = None
    max_import_w: float | None = None


@content_type("curtail")
class CurtailRequest(Content):
    """The grid asks a prosumer to keep its export below `max_export_w` in an interval."""

    interval_start: datetime
    max_export_w: float = Field(ge=0)


@content_type("order")
class OrderSubmission(Content):
    """A signed limit order for one interval (on-chain units: Wh, smallest units per kWh)."""

    meter_id: MeterId
    interval: IntervalNumber
    side: Literal["buy", "sell"]
    quantity_wh: int = Field(gt=0, lt=UINT32_END)
    limit_price_units: Uint64
    nonce: Uint64
    signature: Signature

    @property
    def order_id(self) -> str:
        return f"{self.meter_id}:{self.nonce}"

    def to_signed(self) -> SignedOrder:
        return SignedOrder(
            order=OrderMessage(
                meter_id=meter_id_to_bytes32(self.meter_id),
                interval=self.interval,
                side=OrderSide.BUY if self.side == "buy" else OrderSide.SELL,
                quantity_wh=self.quantity_wh,
                limit_price=self.limit_price_units,
                nonce=self.nonce,
            ),
            signature=bytes.fromhex(self.signature[2:]),
        )


@content_type("no-order")
class NoOrder(Content):
    """A prosumer has nothing to trade in an interval (so the market need not wait for it)."""

    meter_id: MeterId
    interval: IntervalNumber


@content_type("reading")
class ReadingSubmission(Content):
    """A signed reading: cumulative import and export registers (Wh) at both ends of an
    interval."""

    meter_id: MeterId
    interval: IntervalNumber
    start_import_wh: Uint64
    start_export_wh: Uint64
    end_import_wh: Uint64
    end_export_wh: Uint64
    signature: Signature

    def to_signed(self) -> SignedReading:
        return SignedReading(
            reading=ReadingMessage(
                meter_id=meter_id_to_bytes32(self.meter_id),
                interval=self.interval,
                start_import_wh=self.start_import_wh,
                start_export_wh=self.start_export_wh,
                end_import_wh=self.end_import_wh,
                end_export_wh=self.end_export_wh,
            ),
            signature=bytes.fromhex(self.signature[2:]),
        )

    @classmethod
    def from_signed(cls, meter_id: str, signed: SignedReading) -> ReadingSubmission:
        r = signed.reading
        return cls(
            meter_id=meter_id,
            interval=r.interval,
            start_import_wh=r.start_import_wh,
            start_export_wh=r.start_export_wh,
            end_import_wh=r.end_import_wh,
            end_export_wh=r.end_export_wh,
            signature="0x" + signed.signature.hex(),
        )


class TradeNotice(Content):
    buy_order: str
    sell_order: str
    buyer: str
    seller: str
    quantity_wh: int
    price: float


@content_type("cleared")
class ClearingNotice(Content):
    """An interval's clearing, as settled on chain (`tx_hash`), or why it was not."""

    interval: int
    price: float | None
    trades: list[TradeNotice]
    tx_hash: str | None = None
    gas_used: int = 0
    error: str | None = None


@content_type("delivered")
class DeliveryNotice(Content):
    """An interval's delivery settled on chain (or why not), and whose readings were missing."""

    interval: int
    tx_hash: str | None
    gas_used: int
    missing_readings: list[str] = Field(default_factory=list)
    error: str | None = None


@content_type("void")
class VoidNotice(Content):
    """An interval the market will not trade, and why: every order for it is void, and the
    boards buy and sell with the grid at its tariffs (their energy is still settled)."""

    interval: int
    reason: str


@content_type("ack")
class Ack(Content):
    """The receiver handled a message (the simulation waits on these between phases)."""

    what: str
    interval: int


@content_type("device-alarm")
class DeviceAlarmNotice(Content):
    """A board's device did not do what it was told (or does again: `active` False)."""

    meter_id: str
    device: str
    kind: str
    code: str
    message: str
    active: bool
    at: datetime


# ---- the web interface's round trips and monitoring (agents/board_config.py, agents/monitor.py)


class DeferrableLoadSetting(Content):
    """A load the board may place anywhere in a daily window (local time, HH:MM)."""

    name: str = Field(min_length=1, max_length=40)
    energy_wh: float = Field(gt=0, le=100_000)
    max_power_w: float = Field(gt=0, le=50_000)
    window_start: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    window_end: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


class TradingConfig(Content):
    """How a board trades: the prosumer sets it in the web interface, the board applies it.

    `optimiser` plans with the MILP and clamps its orders' limits to the two prices;
    `fixed` bids the forecast net load at `max_buy_price` and offers surplus at
    `min_sell_price`, leaving the battery idle. Prices are currency units per kWh.
    """

    strategy: Literal["optimiser", "fixed"] = "optimiser"
    max_buy_price: float | None = Field(default=None, ge=0, le=100)
    min_sell_price: float | None = Field(default=None, ge=0, le=100)
    battery_reserve_fraction: float | None = Field(default=None, ge=0, le=1)
    target_soc_fraction: float | None = Field(default=None, ge=0, le=1)
    deferrable_loads: list[DeferrableLoadSetting] = Field(default_factory=list, max_length=8)
    relay: Literal["on", "off"] = "on"


@content_type("board-config")
class ConfigUpdate(Content):
    """A new configuration for one board's trading device (version increases per meter)."""

    meter_id: str
    version: int = Field(gt=0)
    config: TradingConfig
    requested_by: str


@content_type("board-config-ack")
class ConfigAck(Content):
    """The board's answer: accepted from `effective_from` (the next interval it plans), or
    refused with the reason."""

    meter_id: str
    version: int
    accepted: bool
    reason: str | None = None
    effective_from: datetime | None = None


@content_type("heartbeat")
class Heartbeat(Content):
    """A board is alive: what its meter said (or why it did not), its battery, its config."""

    meter_id: str
    interval: int
    phase: PhaseName
    at: datetime
    import_wh: float | None = None
    export_wh: float | None = None
    power_w: float | None = None
    voltage_v: float | None = None
    relay: str | None = None
    meter_error: str | None = None
    soc_fraction: float | None = None
    soc_min_fraction: float | None = None
    soc_max_fraction: float | None = None
    battery_power_w: float | None = None
    config_version: int = 0


@content_type("alarm")
class AlarmNotice(Content):
    """Something wrong, raised (or cleared: `active` false) by an agent or the monitor."""

    kind: str
    severity: Literal["info", "warning", "critical"] = "warning"
    meter_id: str | None = None
    message: str
    active: bool = True
    at: datetime


@content_type("signer-changed")
class SignerChanged(Content):
    """The operator rotated or revoked a meter's key: forget what was known of its signer."""

    meter_id: str
