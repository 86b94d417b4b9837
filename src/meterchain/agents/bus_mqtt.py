"""The MQTT 5 bus: agents on many hosts through a broker (Mosquitto, or any MQTT 5 cluster).

Each agent has a persistent session (clean start off, a session expiry) and subscribes with
QoS 1 to its own topic and its groups' topics, so what is sent while it restarts waits at the
broker and arrives when it is back.

The broker may go away (a restart, a network cut): every connection reconnects with
exponential back-off. An agent's session picks up its queued messages when it is back; a send
waits (up to `send_timeout_s`) until the broker takes the message. QoS 1 means a message can
arrive twice after a reconnect, so agents handle every message idempotently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from meterchain.agents.runtime import Envelope

log = logging.getLogger(__name__)

TOPIC_PREFIX = "meterchain"
SESSION_EXPIRY_S = 3600
PUBLISH_TIMEOUT_S = 10.0


class BusUnavailable(Exception):
    """The broker cannot be reached."""


def agent_topic(name: str) -> str:
    return f"{TOPIC_PREFIX}/to/{name}"


@dataclass
class _Session:
    """One agent's persistent connection: its mailbox, its groups, its reader task."""

    name: str
    mailbox: asyncio.Queue[Envelope]
    groups: set[str] = field(default_factory=set)
    client: aiomqtt.Client | None = None
    task: asyncio.Task[None] | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    connections: int = 0
    last_error: str = ""


class MqttBus:
    """One MQTT connection per agent name registered through it, and one for sending."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        connect_timeout_s: float = 10.0,
        send_timeout_s: float = 600.0,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.send_timeout_s = send_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._sessions: dict[str, _Session] = {}
        self._sender: aiomqtt.Client | None = None
        self._send_lock = asyncio.Lock()
        self.reconnects = 0  # connections made again after one was lost (all sessions + sender)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def _client(self, identifier: str | None, *, persistent: bool) -> aiomqtt.Client:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_S if persistent else 0
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=identifier,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not persistent,
            properties=properties,
            timeout=5,
        )

    def _next_delay(self, delay: float) -> float:
        return min(delay * 2, self.backoff_max_s)

    # ---- receiving ----------------------------------------------------------------------------

    async def register(self, name: str) -> asyncio.Queue[Envelope]:
        """Open `name`'s persistent session; BusUnavailable if no broker within the timeout."""
        if name in self._sessions:
            return self._sessions[name].mailbox
        session = _Session(name, asyncio.Queue())
        self._sessions[name] = session
        session.task = asyncio.create_task(self._run_session(session), name=f"mqtt:{name}")
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await session.connected.wait()
        except TimeoutError:
            await self.unregister(name)
            raise BusUnavailable(
                f"cannot reach the MQTT broker at {self.where} within "
                f"{self.connect_timeout_s:g} s ({session.last_error or 'no answer'}); "
                "is mosquitto running there?"
            ) from None
        return session.mailbox

    async def join(self, name: str, group: str) -> None:
        session = self._sessions[name]
        session.groups.add(group)
        if session.client is not None:
            with contextlib.suppress(aiomqtt.MqttError):  # resubscribed on reconnect anyway
                await session.client.subscribe(agent_topic(group), qos=1)

    async def _run_session(self, session: _Session) -> None:
        """Connect, subscribe, read into the mailbox; on any loss, back off and reconnect."""
        delay = self.backoff_initial_s
        while True:
            client = self._client(f"meterchain-{session.name}", persistent=True)
            try:
                await client.__aenter__()
            except aiomqtt.MqttError as exc:
                session.last_error = str(exc)
                await asyncio.sleep(delay)
                delay = self._next_delay(delay)
                continue
            try:
                for topic in (session.name, *sorted(session.groups)):
                    await client.subscribe(agent_topic(topic), qos=1)
                session.client = client
                session.connections += 1
                if session.connections > 1:
                    self.reconnects += 1
                    log.info("%s: reconnected to the broker at %s", session.name, self.where)
                session.connected.set()
                delay = self.backoff_initial_s
                async for message in client.messages:
                    self._deliver(session, message)
            except aiomqtt.MqttError as exc:
                session.last_error = str(exc)
                log.warning(
                    "%s: lost the broker at %s (%s); reconnecting", session.name, self.where, exc
                )
            finally:
                session.client = None
                session.connected.clear()
                with contextlib.suppress(Exception):
                    await client.__aexit__(None, None, None)
            await asyncio.sleep(delay)
            delay = self._next_delay(delay)

    def _deliver(self, session: _Session, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            return
        try:
            envelope = Envelope.model_validate_json(payload)
        except ValueError as exc:
            log.warning(
                "%s: dropped a malformed envelope on %s: %s", session.name, message.topic, exc
            )
            return
        session.mailbox.put_nowait(envelope)

    # ---- sending ------------------------------------------------------------------------------

    async def send(self, envelope: Envelope) -> None:
        """Publish with QoS 1; while the broker is away, retry with back-off up to the timeout."""
        payload = envelope.model_dump_json().encode()
        topic = agent_topic(envelope.receiver)
        deadline = time.monotonic() + self.send_timeout_s
        delay = self.backoff_initial_s
        failures = 0
        async with self._send_lock:
            while True:
                try:
                    if self._sender is None:
                        sender = self._client(None, persistent=False)
                        await sender.__aenter__()
                        self._sender = sender
                        if failures:
                            self.reconnects += 1
                    await self._sender.publish(topic, payload, qos=1, timeout=PUBLISH_TIMEOUT_S)
                    if failures:
                        log.info(
                            "published to %s again after %d failed tries", self.where, failures
                        )
                    return
                except aiomqtt.MqttError as exc:
                    await self._drop_sender()
                    failures += 1
                    if time.monotonic() + delay > deadline:
                        raise BusUnavailable(
                            f"could not publish to the MQTT broker at {self.where} for "
                            f"{self.send_timeout_s:g} s ({exc}); is it running?"
                        ) from None
                    if failures == 1:
                        log.warning("cannot publish to %s (%s); retrying", self.where, exc)
                    await asyncio.sleep(delay)
                    delay = self._next_delay(delay)

    async def _drop_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            with contextlib.suppress(Exception):
                await sender.__aexit__(None, None, None)

    # ---- closing ------------------------------------------------------------------------------

    async def unregister(self, name: str) -> None:
        session = self._sessions.pop(name, None)
        if session is None or session.task is None:
            return
        session.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await session.task

    async def close(self) -> None:
        for name in list(self._sessions):
            await self.unregister(name)
        await self._drop_sender()
