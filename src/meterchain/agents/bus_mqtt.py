"""The MQTT 5 bus: agents on many hosts through a broker (Mosquitto, or any MQTT 5 cluster).

Each agent has a persistent session (clean start off, a session expiry) and subscribes with
QoS 1 to its own topic and its groups' topics, so what is sent while it restarts waits at the
broker and arrives when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from meterchain.agents.runtime import Envelope

log = logging.getLogger(__name__)

TOPIC_PREFIX = "meterchain"
SESSION_EXPIRY_S = 3600


class BusUnavailable(Exception):
    """The broker cannot be reached."""


def agent_topic(name: str) -> str:
    return f"{TOPIC_PREFIX}/to/{name}"


class MqttBus:
    """One MQTT connection per agent name registered through it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._clients: dict[str, aiomqtt.Client] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._sender: aiomqtt.Client | None = None
        self._send_lock = asyncio.Lock()

    def _client(self, identifier: str | None, clean_start: bool) -> aiomqtt.Client:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=identifier,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=clean_start,
            properties=properties,
            timeout=5,
        )

    async def _connect(self, client: aiomqtt.Client) -> None:
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise BusUnavailable(
                f"cannot reach the MQTT broker at {self.host}:{self.port} ({exc}); "
                "is mosquitto running there?"
            ) from None

    async def register(self, name: str) -> asyncio.Queue[Envelope]:
        mailbox: asyncio.Queue[Envelope] = asyncio.Queue()
        client = self._client(f"meterchain-{name}", clean_start=False)
        await self._connect(client)
        await client.subscribe(agent_topic(name), qos=1)
        self._clients[name] = client
        self._readers[name] = asyncio.create_task(self._read(name, client, mailbox))
        return mailbox

    async def join(self, name: str, group: str) -> None:
        await self._clients[name].subscribe(agent_topic(group), qos=1)

    async def _read(
        self, name: str, client: aiomqtt.Client, mailbox: asyncio.Queue[Envelope]
    ) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                continue
            try:
                envelope = Envelope.model_validate_json(payload)
            except ValueError as exc:
                log.warning("%s: dropped a malformed envelope on %s: %s", name, message.topic, exc)
                continue
            mailbox.put_nowait(envelope)

    async def send(self, envelope: Envelope) -> None:
        async with self._send_lock:
            if self._sender is None:
                sender = self._client(None, clean_start=True)
                await self._connect(sender)
                self._sender = sender
            try:
                await self._sender.publish(
                    agent_topic(envelope.receiver),
                    envelope.model_dump_json().encode(),
                    qos=1,
                )
            except aiomqtt.MqttError as exc:
                self._sender = None
                raise BusUnavailable(
                    f"could not publish to {self.host}:{self.port}: {exc}"
                ) from None

    async def unregister(self, name: str) -> None:
        reader = self._readers.pop(name, None)
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader
        client = self._clients.pop(name, None)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def close(self) -> None:
        for name in list(self._clients):
            await self.unregister(name)
        if self._sender is not None:
            with contextlib.suppress(Exception):
                await self._sender.__aexit__(None, None, None)
            self._sender = None
