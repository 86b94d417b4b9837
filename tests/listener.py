"""An agent that keeps everything it is told: the other side of the bus in agent tests."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from meterchain.agents.runtime import Agent, Bus, Envelope


class Listener(Agent):
    """Keeps every message's content, in arrival order; joins `groups` (e.g. "community")."""

    def __init__(self, name: str, bus: Bus, groups: tuple[str, ...] = ()) -> None:
        super().__init__(name, bus)
        self.groups = groups
        self.received: list[BaseModel] = []

    async def setup(self) -> None:
        for group in self.groups:
            await self.bus.join(self.name, group)

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        self.received.append(content)

    def of(self, kind: type[BaseModel]) -> list[Any]:
        return [c for c in self.received if isinstance(c, kind)]

    async def wait_for(
        self, kind: type[BaseModel], count: int = 1, timeout_s: float = 20
    ) -> list[Any]:
        async with asyncio.timeout(timeout_s):
            while len(self.of(kind)) < count:
                await asyncio.sleep(0.01)
        return self.of(kind)
