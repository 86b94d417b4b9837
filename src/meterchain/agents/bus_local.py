"""The in-process bus: one process, many agents (the community simulation)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from meterchain.agents.runtime import Envelope

log = logging.getLogger(__name__)


class LocalBus:
    """Delivers envelopes between agents of one event loop through their queues."""

    def __init__(self) -> None:
        self._mailboxes: dict[str, asyncio.Queue[Envelope]] = {}
        self._groups: dict[str, set[str]] = defaultdict(set)
        self.undeliverable: list[Envelope] = []

    async def register(self, name: str) -> asyncio.Queue[Envelope]:
        return self._mailboxes.setdefault(name, asyncio.Queue())

    async def join(self, name: str, group: str) -> None:
        self._groups[group].add(name)

    async def unregister(self, name: str) -> None:
        for members in self._groups.values():
            members.discard(name)

    def handled(self, envelope: Envelope) -> None:
        """Nothing to forget: in one process a message lives and dies with its agent."""

    async def send(self, envelope: Envelope) -> None:
        receivers = self._groups.get(envelope.receiver) or {envelope.receiver}
        for receiver in sorted(receivers):
            mailbox = self._mailboxes.get(receiver)
            if mailbox is None:
                # Kept, not dropped: a receiver that registers later would be a bug to find.
                log.warning("no agent %r for message %s", receiver, envelope.message_id)
                self.undeliverable.append(envelope)
                continue
            mailbox.put_nowait(envelope)
