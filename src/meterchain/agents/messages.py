"""What agents say to each other: the content models of their envelopes.

Orders and readings travel with their EIP-712 signatures, in on-chain units, so the market
agent can post exactly what the boards signed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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

    meter_id: str
    interval: int = Field(gt=0)
    side: Literal["buy", "sell"]
    quantity_wh: int = Field(gt=0)
    limit_price_units: int = Field(ge=0)
    nonce: int = Field(ge=0)
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")

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

    meter_id: str
    interval: int = Field(gt=0)


@content_type("reading")
class ReadingSubmission(Content):
    """A signed reading: cumulative import and export registers (Wh) at both ends of an
    interval."""

    meter_id: str
    interval: int = Field(gt=0)
    start_import_wh: int = Field(ge=0)
    start_export_wh: int = Field(ge=0)
    end_import_wh: int = Field(ge=0)
    end_export_wh: int = Field(ge=0)
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")

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
