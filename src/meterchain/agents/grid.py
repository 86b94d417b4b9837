"""GridAgent: the utility's voice. Publishes tariffs and feeder limits; asks prosumers to
curtail when the feeder's export limit would be exceeded."""

from __future__ import annotations

import logging
from datetime import datetime

from pydantic import BaseModel

from meterchain.agents.messages import Ack, CurtailRequest, TariffNotice, Tick
from meterchain.agents.runtime import Agent, Bus, Envelope, Performative

log = logging.getLogger(__name__)


class GridAgent(Agent):
    """Announces tariffs to the community at every order phase; shares out the feeder limit."""

    def __init__(
        self,
        name: str,
        bus: Bus,
        *,
        tariffs: TariffNotice,
        prosumers: list[str],
        feeder_export_limit_w: float | None = None,
        community: str = "community",
        coordinator: str | None = None,
    ) -> None:
        super().__init__(name, bus)
        self.coordinator = coordinator
        self.tariffs = tariffs
        self.prosumers = prosumers
        self.feeder_export_limit_w = feeder_export_limit_w
        self.community = community

    async def announce(self, interval: int | None = None) -> None:
        await self.send(self.community, Performative.INFORM, self.tariffs)
        log.info(
            "%s: tariffs for interval %s: retail %g, feed-in %g per kWh",
            self.name,
            interval if interval is not None else "now",
            self.tariffs.retail_price,
            self.tariffs.feed_in_price,
            extra={
                "event": "tariffs",
                "interval": interval,
                "retail_price": self.tariffs.retail_price,
                "feed_in_price": self.tariffs.feed_in_price,
            },
        )

    async def request_curtailment(
        self, interval_start: datetime, max_export_w: float, prosumers: list[str] | None = None
    ) -> None:
        """Ask prosumers (default: the whole community) to keep their export under a limit in
        an interval, at once: boards with a PV inverter lower its limit when they receive it."""
        request = CurtailRequest(interval_start=interval_start, max_export_w=max_export_w)
        receivers = prosumers if prosumers is not None else [self.community]
        for receiver in receivers:
            await self.send(receiver, Performative.REQUEST, request)
        log.info(
            "%s: asked %s to export at most %.0f W each from %s",
            self.name,
            self.community if prosumers is None else f"{len(receivers)} prosumers",
            max_export_w,
            interval_start.isoformat(),
            extra={"event": "curtailment", "max_export_w": max_export_w},
        )

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        if isinstance(content, TariffNotice):  # the operator's new tariffs and feeder limit
            self.tariffs = content.model_copy(update={"max_export_w": None})
            if content.max_export_w is not None:
                self.feeder_export_limit_w = content.max_export_w or None
            log.info(
                "%s: %s set the tariffs to retail %g, feed-in %g per kWh; feeder export limit %s",
                self.name,
                envelope.sender,
                self.tariffs.retail_price,
                self.tariffs.feed_in_price,
                "none"
                if self.feeder_export_limit_w is None
                else f"{self.feeder_export_limit_w:g} W",
            )
        if isinstance(content, Tick) and content.phase == "order":
            await self.announce(int(content.interval_start.timestamp()))
            if self.feeder_export_limit_w is not None and self.prosumers:
                share = self.feeder_export_limit_w / len(self.prosumers)
                await self.request_curtailment(content.interval_start, share, self.prosumers)
            if self.coordinator is not None:
                interval = int(content.interval_start.timestamp())
                await self.send(
                    self.coordinator, Performative.INFORM, Ack(what="tariffs", interval=interval)
                )
