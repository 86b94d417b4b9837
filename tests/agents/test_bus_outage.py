"""No agent blocks on the bus: while the broker is away, an agent keeps handling its mail, and
what it sends waits in its store until the broker is back (even across a restart of the agent).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from meterchain.agents.broker import Broker, start_mosquitto
from meterchain.agents.runtime import Agent, Bus, Envelope, Performative, content_type
from meterchain.store.bus_spool import MessageSpool
from meterchain.store.db import open_store


@content_type("test-outage-ping")
class OutagePing(BaseModel):
    count: int


class Relay(Agent):
    """Handles pings posted to it by passing each on to `listener`."""

    def __init__(self, name: str, bus: Bus) -> None:
        super().__init__(name, bus)
        self.handled: list[int] = []

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        assert isinstance(content, OutagePing)
        await self.send("listener", Performative.INFORM, content)
        self.handled.append(content.count)


class Listener(Agent):
    def __init__(self, name: str, bus: Bus) -> None:
        super().__init__(name, bus)
        self.received: list[int] = []

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        assert isinstance(content, OutagePing)
        self.received.append(content.count)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[list[Broker]]:
    """A broker that keeps its sessions on disk; the list holds the running one."""
    running = [start_mosquitto(data_dir=tmp_path / "broker", superusers=["tester"])]
    yield running
    running[0].stop()


async def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s:g} s: {what}") from None


async def test_an_agent_keeps_handling_its_mail_while_the_broker_is_down(
    broker: list[Broker],
) -> None:
    relay_bus, listener_bus = broker[0].bus("tester"), broker[0].bus("tester")
    relay, listener = Relay("relay", relay_bus), Listener("listener", listener_bus)
    await relay.start()
    await listener.start()
    try:
        broker[0].stop()
        for count in range(3):
            relay.post_local(OutagePing(count=count))
        # Each ping makes the relay send; with the broker gone the sends must not hold it up.
        await until(lambda: relay.handled == [0, 1, 2], 2.0, "the relay handled every ping")
        assert listener.received == []

        broker[0] = broker[0].restart()
        await until(lambda: listener.received == [0, 1, 2], 15.0, "queued messages delivered")
    finally:
        await relay.stop()
        await listener.stop()
        await relay_bus.close()
        await listener_bus.close()


async def test_what_an_agent_queued_goes_out_after_the_agent_itself_restarts(
    broker: list[Broker], tmp_path: Path
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'relay.db'}")
    listener_bus = broker[0].bus("tester")
    listener = Listener("listener", listener_bus)
    await listener.start()
    first_bus = broker[0].bus("tester", spool=MessageSpool(store, "relay"))
    relay = Relay("relay", first_bus)
    await relay.start()
    try:
        broker[0].stop()
        for count in range(3):
            relay.post_local(OutagePing(count=count))
        await until(lambda: relay.handled == [0, 1, 2], 2.0, "the relay handled every ping")
        assert MessageSpool(store, "relay").pending_count() == 3
        # The relay dies with its messages unsent: nothing is flushed, only the store remains.
        await relay.stop()
        await first_bus.close(flush_s=0)

        broker[0] = broker[0].restart()
        second_bus = broker[0].bus("tester", spool=MessageSpool(store, "relay"))
        again = Relay("relay", second_bus)
        await again.start()
        try:
            await until(lambda: listener.received == [0, 1, 2], 15.0, "the spool was sent")
            await until(lambda: second_bus.pending == 0, 5.0, "the spool emptied")
        finally:
            await again.stop()
            await second_bus.close()
    finally:
        await listener.stop()
        await listener_bus.close()
        store.close()


async def test_a_message_is_kept_in_the_store_until_its_agent_has_handled_it(
    broker: list[Broker], tmp_path: Path
) -> None:
    """Taken from the broker means written down: an agent killed before handling a message it
    has already acknowledged finds it again when it restarts."""
    store = open_store(f"sqlite:///{tmp_path / 'listener.db'}")
    sender_bus = broker[0].bus("tester")
    sender = Relay("relay", sender_bus)
    await sender.start()
    first_bus = broker[0].bus("tester", spool=MessageSpool(store, "listener"))
    mailbox = await first_bus.register("listener")  # registered, but no agent takes its mail
    try:
        sender.post_local(OutagePing(count=7))
        async with asyncio.timeout(5):
            while mailbox.empty():
                await asyncio.sleep(0.02)
        assert MessageSpool(store, "listener").unhandled_count() == 1
        await first_bus.close(flush_s=0)  # killed before it handled the ping

        second_bus = broker[0].bus("tester", spool=MessageSpool(store, "listener"))
        listener = Listener("listener", second_bus)
        await listener.start()
        try:
            await until(lambda: listener.received == [7], 5.0, "the kept message handled")
            assert MessageSpool(store, "listener").unhandled_count() == 0
        finally:
            await listener.stop()
            await second_bus.close()
    finally:
        await sender.stop()
        await sender_bus.close()
        store.close()
