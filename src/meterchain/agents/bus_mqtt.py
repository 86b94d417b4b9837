"""The MQTT 5 bus: agents on many hosts through a broker (Mosquitto, or any MQTT 5 cluster).

Each agent has a persistent session (clean start off, a session expiry) and subscribes with
QoS 1 to its own topic and its groups' topics, so what is sent while it restarts waits at the
broker and arrives when it is back.

No agent ever waits for the broker. A send writes the message to the process's spool (its
store, or memory for a process without one) and returns; a publisher task sends the spool in
order whenever the broker is there, with exponential back-off while it is not, and forgets each
message once the broker has acknowledged it. A message taken from the broker is written to the
spool before it is acknowledged and forgotten once the agent has handled it, so a process
killed in between finds it again. QoS 1 means a message can arrive twice (after a reconnect or
a restart), so agents handle every message idempotently.

A message to X from Y goes to the topic `meterchain/to/X/from/Y`; an agent subscribes to
`meterchain/to/NAME/#` and to its groups' topics. The community broker's ACL (`broker_files`)
lets a client write only under its own name, so the topic's sender is the one the broker
authenticated: an envelope that names another sender is dropped. A message that carries an
expiry (`Envelope.expires_at`, on the agent's clock) and is still in the spool when it passes
is dropped instead of sent: an order after its gate closure or a reading after its settlement
would only be refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import aiomqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from meterchain.agents.runtime import Envelope, describe_error
from meterchain.clock import Clock
from meterchain.store.bus_spool import MemorySpool, Spool, Spooled

log = logging.getLogger(__name__)

TOPIC_PREFIX = "meterchain"
SESSION_EXPIRY_S = 3600
PUBLISH_TIMEOUT_S = 10.0
PUBLISH_BATCH = 100
# Publish errors no retry can cure: the message is dropped (and logged) instead of blocking
# the queue behind it for ever.
PERMANENT_PUBLISH_ERRORS = {MQTTErrorCode.MQTT_ERR_PAYLOAD_SIZE, MQTTErrorCode.MQTT_ERR_INVAL}


class BusUnavailable(Exception):
    """The broker cannot be reached."""


def agent_topic(name: str) -> str:
    """Where messages to agent (or group) `name` go: its subscription is this plus `/#`."""
    return f"{TOPIC_PREFIX}/to/{name}"


def message_topic(receiver: str, sender: str) -> str:
    """The topic of one message: the receiver's, then the sender's name (the ACL checks it)."""
    return f"{agent_topic(receiver)}/from/{sender}"


def topic_sender(topic: str) -> str | None:
    """The sender a message's topic names (None for a topic without one)."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[0] == TOPIC_PREFIX and parts[1] == "to" and parts[3] == "from":
        return parts[4]
    return None


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
    connected_since: float | None = None  # monotonic seconds


class MqttBus:
    """One MQTT connection per agent name registered through it, and one for sending."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        spool: Spool | None = None,
        credentials: tuple[str, str] | None = None,
        tls_ca_file: str | None = None,
        connect_timeout_s: float = 10.0,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        wait_for_broker: bool = True,
        clock: Clock | None = None,
        on_receive: Callable[[Envelope], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.spool: Spool = spool if spool is not None else MemorySpool()
        self.credentials = credentials
        self.tls_ca_file = tls_ca_file
        self.connect_timeout_s = connect_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        # A board starts (and keeps working) without the broker: its sessions connect in the
        # background. Other processes wait for it at start, up to connect_timeout_s.
        self.wait_for_broker = wait_for_broker
        self.clock = clock  # the agents' clock, for messages' expiry
        self.on_receive = on_receive  # sees each envelope fresh from the broker (board.skew)
        self._sessions: dict[str, _Session] = {}
        self._sender: aiomqtt.Client | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._kept: dict[str, list[int]] = {}  # message id -> spool ids of unhandled copies
        self.reconnects = 0  # connections made again after one was lost (all sessions + sender)
        self.published = 0
        self.dropped = 0  # messages refused by the broker for good, or malformed on arrival
        self.expired = 0  # messages whose expiry passed before the broker could take them
        self.impostors = 0  # envelopes naming another sender than their topic

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """Whether every agent's session is connected to the broker now."""
        return bool(self._sessions) and all(s.connected.is_set() for s in self._sessions.values())

    @property
    def last_error(self) -> str:
        return next((s.last_error for s in self._sessions.values() if s.last_error), "")

    @property
    def pending(self) -> int:
        """Messages sent by the agent that the broker has not acknowledged yet."""
        return self.spool.pending_count()

    def _client(self, identifier: str | None, *, persistent: bool) -> aiomqtt.Client:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_S if persistent else 0
        username, password = self.credentials or (None, None)
        tls = None if self.tls_ca_file is None else aiomqtt.TLSParameters(ca_certs=self.tls_ca_file)
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=identifier,
            username=username,
            password=password,
            tls_params=tls,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not persistent,
            properties=properties,
            timeout=5,
        )

    def _next_delay(self, delay: float) -> float:
        return min(delay * 2, self.backoff_max_s)

    # ---- receiving ----------------------------------------------------------------------------

    async def register(self, name: str) -> asyncio.Queue[Envelope]:
        """Open `name`'s persistent session; BusUnavailable if no broker within the timeout.

        Messages taken for `name` before a restart but never handled are in its mailbox first.
        """
        if name in self._sessions:
            return self._sessions[name].mailbox
        session = _Session(name, asyncio.Queue())
        self._sessions[name] = session
        for kept in self.spool.unhandled(name):
            self._to_mailbox(session, kept.payload, kept.id)
        session.task = asyncio.create_task(self._run_session(session), name=f"mqtt:{name}")
        self._start_publisher()
        if not self.wait_for_broker:
            return session.mailbox
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
                await session.client.subscribe(agent_topic(group) + "/#", qos=1)

    async def _run_session(self, session: _Session) -> None:
        """Connect, subscribe, read into the mailbox; on any loss, back off and reconnect."""
        delay = self.backoff_initial_s
        while True:
            client = self._client(f"meterchain-{session.name}", persistent=True)
            # Acknowledge a message only once it is written down (see _deliver).
            client._client.manual_ack_set(True)
            try:
                await client.__aenter__()
            except aiomqtt.MqttError as exc:
                session.last_error = str(exc)
                await asyncio.sleep(delay)
                delay = self._next_delay(delay)
                continue
            try:
                for topic in (session.name, *sorted(session.groups)):
                    await client.subscribe(agent_topic(topic) + "/#", qos=1)
                session.client = client
                session.connected_since = asyncio.get_running_loop().time()
                session.connections += 1
                if session.connections > 1:
                    self.reconnects += 1
                    log.info("%s: reconnected to the broker at %s", session.name, self.where)
                session.connected.set()
                delay = self.backoff_initial_s
                async for message in client.messages:
                    self._deliver(session, client, message)
            except aiomqtt.MqttError as exc:
                session.last_error = str(exc)
                log.warning(
                    "%s: lost the broker at %s (%s); reconnecting", session.name, self.where, exc
                )
            finally:
                session.client = None
                session.connected_since = None
                session.connected.clear()
                with contextlib.suppress(Exception):
                    await client.__aexit__(None, None, None)
            await asyncio.sleep(delay)
            delay = self._next_delay(delay)

    def _deliver(self, session: _Session, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        """Write the message down, acknowledge it, put it in the mailbox."""
        payload = message.payload
        if isinstance(payload, bytes | bytearray):
            text = bytes(payload).decode("utf-8", errors="replace")
            self._to_mailbox(session, text, None, topic=str(message.topic))
        client._client.ack(message.mid, message.qos)

    def _to_mailbox(
        self, session: _Session, payload: str, kept_id: int | None, *, topic: str = ""
    ) -> bool:
        """Validate an envelope and queue it (kept in the spool until handled)."""
        try:
            envelope = Envelope.model_validate_json(payload)
        except ValidationError as exc:
            self.dropped += 1
            log.warning(
                "%s: dropped a malformed envelope%s: %s",
                session.name,
                f" on {topic}" if topic else "",
                describe_error(exc),
            )
            if kept_id is not None:
                self.spool.handled([kept_id])
            return False
        claimed = topic_sender(topic) if topic else None
        if claimed is not None and envelope.sender != claimed:
            self.impostors += 1
            log.warning(
                "%s: dropped a message on %s that claims to come from %r",
                session.name,
                topic,
                envelope.sender,
            )
            return False
        if kept_id is None:
            kept_id = self.spool.keep(session.name, payload)
            if self.on_receive is not None:
                self.on_receive(envelope)
        self._kept.setdefault(envelope.message_id, []).append(kept_id)
        session.mailbox.put_nowait(envelope)
        return True

    def handled(self, envelope: Envelope) -> None:
        """Forget a handled message (and any duplicate copy of it taken meanwhile)."""
        kept = self._kept.pop(envelope.message_id, None)
        if kept:
            self.spool.handled(kept)

    # ---- sending ------------------------------------------------------------------------------

    async def send(self, envelope: Envelope) -> None:
        """Queue for publishing (QoS 1) and return at once: never waits for the broker."""
        topic = message_topic(envelope.receiver, envelope.sender)
        self.spool.push(topic, envelope.model_dump_json())
        self._idle.clear()
        self._wake.set()
        self._start_publisher()

    def _start_publisher(self) -> None:
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.create_task(self._publish_queued(), name="mqtt:publisher")

    async def _publish_queued(self) -> None:
        """Send the spool in order while the broker is there; back off while it is not."""
        delay = self.backoff_initial_s
        failures = 0
        while True:
            self._wake.clear()
            peeked = self.spool.peek(PUBLISH_BATCH)
            batch = self._unexpired(peeked)
            if peeked and not batch:
                continue
            if not batch:
                self._idle.set()
                await self._wake.wait()
                continue
            for message in batch:
                try:
                    await self._publish(message.address, message.payload)
                except aiomqtt.MqttCodeError as exc:
                    # A refused connection carries a (unhashable) ReasonCode, not an error code.
                    if isinstance(exc.rc, int) and exc.rc in PERMANENT_PUBLISH_ERRORS:
                        self.dropped += 1
                        log.error(
                            "the broker at %s refuses a message to %s for good (%s); dropped it",
                            self.where,
                            message.address,
                            exc,
                        )
                        self.spool.sent(message.id)
                        continue
                    failures = await self._publish_failed(exc, failures, delay)
                    delay = self._next_delay(delay)
                    break
                except aiomqtt.MqttError as exc:
                    failures = await self._publish_failed(exc, failures, delay)
                    delay = self._next_delay(delay)
                    break
                self.spool.sent(message.id)
                self.published += 1
                if failures:
                    log.info(
                        "publishing to %s again after %d failed tries; %d messages still queued",
                        self.where,
                        failures,
                        self.pending,
                    )
                    failures = 0
                    delay = self.backoff_initial_s

    def _unexpired(self, batch: list[Spooled]) -> list[Spooled]:
        """Drop (and forget) the messages of `batch` whose expiry has passed."""
        if self.clock is None:
            return batch
        now = self.clock.now()
        kept = []
        for message in batch:
            if '"expires_at":"' in message.payload:  # set (JSON null otherwise)
                expires_at = Envelope.model_validate_json(message.payload).expires_at
                if expires_at is not None and expires_at <= now:
                    self.spool.sent(message.id)
                    self.expired += 1
                    continue
            kept.append(message)
        if len(kept) < len(batch):
            log.info(
                "dropped %d queued messages whose time had passed (%d dropped so far)",
                len(batch) - len(kept),
                self.expired,
            )
        return kept

    async def _publish(self, topic: str, payload: str) -> None:
        if self._sender is None:
            sender = self._client(None, persistent=False)
            await sender.__aenter__()
            self._sender = sender
        await self._sender.publish(topic, payload.encode(), qos=1, timeout=PUBLISH_TIMEOUT_S)

    async def _publish_failed(self, exc: Exception, failures: int, delay: float) -> int:
        await self._drop_sender()
        if failures == 0:
            self.reconnects += 1
            log.warning(
                "cannot publish to the broker at %s (%s); %d messages wait in the spool, retrying",
                self.where,
                exc,
                self.pending,
            )
        await asyncio.sleep(delay)
        return failures + 1

    async def flush(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for everything queued to reach the broker; True if it did."""
        if self.pending == 0:
            return True
        self._start_publisher()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self.pending:
                    self._idle.clear()
                    await self._idle.wait()
        return self.pending == 0

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

    async def close(self, flush_s: float = 2.0) -> None:
        """Stop; first give queued messages up to `flush_s` to go out (the rest stay spooled)."""
        if flush_s > 0 and self.pending:
            await self.flush(flush_s)
        for name in list(self._sessions):
            await self.unregister(name)
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
            self._publisher = None
        await self._drop_sender()
