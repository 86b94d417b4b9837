"""The agent runtime on both buses: delivery, validation, groups, and restarts over MQTT."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import BaseModel

from meterchain.agents.broker import Broker, start_mosquitto
from meterchain.agents.bus_local import LocalBus
from meterchain.agents.runtime import (
    Agent,
    Bus,
    Envelope,
    NotUnderstood,
    Performative,
    content_type,
)


@content_type("test-ping")
class Ping(BaseModel):
    count: int


class Recorder(Agent):
    """Keeps what it receives; answers pings with count + 1."""

    def __init__(self, name: str, bus: Bus) -> None:
        super().__init__(name, bus)
        self.received: list[BaseModel] = []
        self.arrived = asyncio.Event()

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        self.received.append(content)
        self.arrived.set()
        if isinstance(content, Ping) and envelope.performative is Performative.REQUEST:
            await self.reply(envelope, Performative.INFORM, Ping(count=content.count + 1))


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    running = start_mosquitto(superusers=["tester"])  # one login for many agents
    yield running
    running.stop()


@pytest.fixture(params=["local", "mqtt"])
async def bus(request: pytest.FixtureRequest, broker: Broker) -> AsyncIterator[Bus]:
    if request.param == "local":
        yield LocalBus()
        return
    mqtt = broker.bus("tester")
    yield mqtt
    await mqtt.close()


async def wait_for(agent: Recorder, count: int = 1) -> None:
    async with asyncio.timeout(5):
        while len(agent.received) < count:
            agent.arrived.clear()
            await agent.arrived.wait()


async def test_a_request_gets_its_reply_on_either_bus(bus: Bus) -> None:
    alice, bob = Recorder("alice", bus), Recorder("bob", bus)
    await alice.start()
    await bob.start()
    try:
        await alice.send("bob", Performative.REQUEST, Ping(count=1))
        await wait_for(alice)
        assert alice.received == [Ping(count=2)]
        assert bob.received == [Ping(count=1)]
    finally:
        await alice.stop()
        await bob.stop()


async def test_invalid_content_is_answered_with_not_understood(bus: Bus) -> None:
    alice, bob = Recorder("alice2", bus), Recorder("bob2", bus)
    await alice.start()
    await bob.start()
    try:
        bad = Envelope(
            performative=Performative.REQUEST,
            sender="alice2",
            receiver="bob2",
            content_type="test-ping",
            content={"count": "many"},
        )
        await bus.send(bad)
        await wait_for(alice)
        reply = alice.received[0]
        assert isinstance(reply, NotUnderstood)
        assert "count" in reply.reason
        assert bob.not_understood == 1 and bob.received == []
        await alice.send("bob2", Performative.REQUEST, Ping(count=5))  # bob still works
        await wait_for(bob)
    finally:
        await alice.stop()
        await bob.stop()


async def test_group_messages_reach_every_member(bus: Bus) -> None:
    members = [Recorder(f"member{i}", bus) for i in range(3)]
    for member in members:
        await member.start()
        await bus.join(member.name, "street")
    try:
        sender = Recorder("announcer", bus)
        await sender.start()
        await sender.send("street", Performative.INFORM, Ping(count=7))
        for member in members:
            await wait_for(member)
            assert member.received == [Ping(count=7)]
        await sender.stop()
    finally:
        for member in members:
            await member.stop()


async def test_mqtt_keeps_messages_for_an_agent_that_is_restarting(broker: Broker) -> None:
    first_bus = broker.bus("tester")
    board = Recorder("board-restart", first_bus)
    await board.start()
    await board.stop()  # the board goes down; its session stays at the broker
    await first_bus.close()

    market_bus = broker.bus("tester")
    market = Recorder("market-restart", market_bus)
    await market.start()
    await market.send("board-restart", Performative.INFORM, Ping(count=42))

    second_bus = broker.bus("tester")
    again = Recorder("board-restart", second_bus)
    await again.start()
    try:
        await wait_for(again)
        assert again.received == [Ping(count=42)]
    finally:
        await again.stop()
        await market.stop()
        await second_bus.close()
        await market_bus.close()
