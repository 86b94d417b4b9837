"""GridAgent: the utility's voice. Publishes tariffs and feeder limits; asks prosumers to
curtail when the feeder's export limit would be exceeded."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from meterchain.agents.messages import Ack, CurtailRequest, TariffNotice, Tick
from meterchain.agents.runtime import Agent, Bus, Envelope, Performative


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

    async def announce(self) -> None:
        await self.send(self.community, Performative.INFORM, self.tariffs)

    async def request_curtailment(
        self, interval_start: datetime, max_export_w: float, prosumers: list[str] | None = None
    ) -> None:
        """Ask prosumers (default: the whole community) to keep their export under a limit in
        an interval, at once: boards with a PV inverter lower its limit when they receive it."""
        request = CurtailRequest(interval_start=interval_start, max_export_w=max_export_w)
        for receiver in prosumers if prosumers is not None else [self.community]:
            await self.send(receiver, Performative.REQUEST, request)

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        if isinstance(content, TariffNotice):  # the operator's new tariffs and feeder limit
            self.tariffs = content.model_copy(update={"max_export_w": None})
            if content.max_export_w is not None:
                self.feeder_export_limit_w = content.max_export_w or None
        if isinstance(content, Tick) and content.phase == "order":
            await self.announce()
            if self.feeder_export_limit_w is not None and self.prosumers:
                share = self.feeder_export_limit_w / len(self.prosumers)
                await self.request_curtailment(content.interval_start, share, self.prosumers)
            if self.coordinator is not None:
                interval = int(content.interval_start.timestamp())
                await self.send(
                    self.coordinator, Performative.INFORM, Ack(what="tariffs", interval=interval)
                )
