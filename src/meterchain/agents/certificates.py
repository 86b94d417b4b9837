"""CertificateAgent: issues each interval's renewable-energy certificates once its delivery is
settled on chain.

It listens to the community's DeliveryNotice (the market agent publishes one per interval) and
calls `CertificateIssuer.issue`, so certificates appear right after settlement without any
change to the market agent. Issuing is permissionless: the market's operator runs it beside
the market agent (the simulation does), or anyone else may run one with their own key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pydantic import BaseModel

from meterchain.agents.messages import Ack, DeliveryNotice
from meterchain.agents.runtime import Agent, Bus, Envelope, Performative
from meterchain.chain.errors import ChainError
from meterchain.ledger.issuer import CertificateIssuer, Issuance

log = logging.getLogger(__name__)


class CertificateAgent(Agent):
    """Certifies every interval the market delivers."""

    def __init__(
        self,
        name: str,
        bus: Bus,
        *,
        issuer: CertificateIssuer,
        community: str = "community",
        coordinator: str | None = None,
    ) -> None:
        super().__init__(name, bus)
        self.issuer = issuer
        self.community = community
        self.coordinator = coordinator
        self.issued: dict[int, Issuance] = {}
        self.refused: list[str] = []  # intervals it could not certify, and why

    async def setup(self) -> None:
        await self.bus.join(self.name, self.community)

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        if isinstance(content, DeliveryNotice):
            await self.certify(content)

    async def certify(self, notice: DeliveryNotice) -> Issuance | None:
        """Issue the notice's interval if its delivery settled (a failed delivery has none)."""
        issuance: Issuance | None = None
        if notice.error is None and notice.tx_hash is not None:
            try:
                issuance = await asyncio.to_thread(self.issuer.issue, notice.interval)
            except ChainError as exc:
                problem = f"certificates of interval {notice.interval} not issued: {exc}"
                self.refused.append(problem)
                log.error("%s: %s", self.name, problem)
            else:
                self.issued[notice.interval] = issuance
                log.info(
                    "%s: interval %d: %d certificates, %d Wh (%d Wh retired for local buyers)",
                    self.name, notice.interval, issuance.certificates, issuance.certified_wh,
                    issuance.auto_retired_wh,
                )  # fmt: skip
        if self.coordinator is not None:
            await self.send(
                self.coordinator,
                Performative.INFORM,
                Ack(what="certified", interval=notice.interval),
            )
        return issuance


def issue_after_delivery(issuer: CertificateIssuer, name: str) -> Callable[[int], Awaitable[None]]:
    """A market agent's follow-up to a settled delivery: issue its certificates (a deployed
    market does it with its own sender; anyone else may call `issue` too)."""

    async def issue(interval: int) -> None:
        issuance = await asyncio.to_thread(issuer.issue, interval)
        log.info(
            "%s: interval %d: %d certificates, %d Wh (%d Wh retired for local buyers)",
            name, interval, issuance.certificates, issuance.certified_wh,
            issuance.auto_retired_wh,
            extra={"event": "certified", "interval": interval, "wh": issuance.certified_wh},
        )  # fmt: skip

    return issue
