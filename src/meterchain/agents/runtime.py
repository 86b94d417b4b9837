"""The agent runtime: envelopes, the Bus interface, and the Agent base class.

Messages are envelopes in the FIPA-ACL spirit. Their content is a pydantic model named by
`content_type` and validated on receipt: an agent answers what it cannot understand with
`not-understood`, logs it, and carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)


class Performative(StrEnum):
    """What a message does (a subset of FIPA-ACL's communicative acts)."""

    INFORM = "inform"
    REQUEST = "request"
    AGREE = "agree"
    REFUSE = "refuse"
    FAILURE = "failure"
    CONFIRM = "confirm"
    PROPOSE = "propose"
    NOT_UNDERSTOOD = "not-understood"


class Envelope(BaseModel):
    """One message. `content` stays raw until the receiver validates it against its model."""

    model_config = ConfigDict(frozen=True)

    performative: Performative
    sender: str
    receiver: str
    conversation_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    message_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    in_reply_to: str | None = None
    reply_by: datetime | None = None
    # On the sender's (agent) clock: a message still unsent by then is dropped (bus_mqtt).
    expires_at: datetime | None = None
    content_type: str
    content: dict[str, Any]
    sent_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class NotUnderstood(BaseModel):
    """The reply to a message whose content could not be validated."""

    reason: str
    content_type: str


_CONTENT_TYPES: dict[str, type[BaseModel]] = {}


def content_type(name: str) -> Callable[[type[BaseModel]], type[BaseModel]]:
    """Register a pydantic model as a message content type under `name`."""

    def register(model: type[BaseModel]) -> type[BaseModel]:
        existing = _CONTENT_TYPES.get(name)
        if existing is not None and existing is not model:
            raise ValueError(f"content type {name!r} is already {existing.__name__}")
        _CONTENT_TYPES[name] = model
        model.__content_type__ = name  # type: ignore[attr-defined]
        return model

    return register


content_type("not-understood")(NotUnderstood)


def content_type_of(model: BaseModel) -> str:
    name: str | None = getattr(type(model), "__content_type__", None)
    if name is None:
        raise ValueError(f"{type(model).__name__} is not a registered content type")
    return name


class InvalidContent(Exception):
    """A message's content does not match its declared type."""


def decode_content(envelope: Envelope) -> BaseModel:
    model = _CONTENT_TYPES.get(envelope.content_type)
    if model is None:
        raise InvalidContent(f"unknown content type {envelope.content_type!r}")
    try:
        return model.model_validate(envelope.content)
    except ValidationError as exc:
        raise InvalidContent(
            f"{envelope.content_type} from {envelope.sender} refused: {describe_error(exc)}"
        ) from None


def describe_error(exc: ValidationError) -> str:
    """One line naming the first bad field, what is wrong with it and the value given."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "(the message)"
    given = repr(first.get("input"))
    if len(given) > 80:
        given = given[:77] + "..."
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    text = f"{where}: {first['msg']} (got {given}){more}"
    return " ".join(text.split())  # one line, whatever the validator said


class Bus(Protocol):
    """Delivers envelopes to mailboxes by name; the same agent code runs on every bus.

    A receiver is an agent's name or a group's name; `join` subscribes an agent to a group.
    """

    async def register(self, name: str) -> asyncio.Queue[Envelope]:
        """The mailbox where messages for `name` (and its groups) arrive."""
        ...

    async def join(self, name: str, group: str) -> None:
        """Also deliver messages addressed to `group` to `name`'s mailbox."""
        ...

    async def send(self, envelope: Envelope) -> None:
        """Deliver to the receiver's mailbox (or every member's, for a group)."""
        ...

    async def unregister(self, name: str) -> None: ...

    def handled(self, envelope: Envelope) -> None:
        """The agent is done with `envelope`: a bus that kept it for a restart forgets it."""
        ...


class Agent:
    """An asyncio task with a mailbox. Subclasses implement `handle` and, optionally, `act`."""

    def __init__(self, name: str, bus: Bus) -> None:
        self.name = name
        self.bus = bus
        self._mailbox: asyncio.Queue[Envelope] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.not_understood = 0
        self.failures = 0  # messages whose handler raised
        self.envelopes_taken = 0  # from the mailbox, for drain_mailbox

    async def send(
        self,
        receiver: str,
        performative: Performative,
        content: BaseModel,
        *,
        conversation_id: str | None = None,
        in_reply_to: str | None = None,
        reply_by: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> Envelope:
        envelope = Envelope(
            performative=performative,
            sender=self.name,
            receiver=receiver,
            conversation_id=conversation_id or uuid.uuid4().hex,
            in_reply_to=in_reply_to,
            reply_by=reply_by,
            expires_at=expires_at,
            content_type=content_type_of(content),
            content=content.model_dump(mode="json"),
        )
        await self.bus.send(envelope)
        return envelope

    @property
    def mailbox_empty(self) -> bool:
        return self._mailbox is None or self._mailbox.empty()

    def post_local(self, content: BaseModel) -> Envelope:
        """Put a message to this agent itself straight into its mailbox, not through the bus.

        A deployed process's Ticker posts its phase ticks this way: they are handled in order
        with the messages that arrive, and need no broker to get there.
        """
        if self._mailbox is None:
            raise RuntimeError(f"agent {self.name} has no mailbox yet: start it first")
        envelope = Envelope(
            performative=Performative.INFORM,
            sender=self.name,
            receiver=self.name,
            content_type=content_type_of(content),
            content=content.model_dump(mode="json"),
        )
        self._mailbox.put_nowait(envelope)
        return envelope

    async def reply(self, to: Envelope, performative: Performative, content: BaseModel) -> Envelope:
        return await self.send(
            to.sender,
            performative,
            content,
            conversation_id=to.conversation_id,
            in_reply_to=to.message_id,
        )

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        """React to one validated message."""

    async def act(self) -> None:
        """The agent's own behaviour (polling, timers), run beside the mailbox loop."""

    async def setup(self) -> None:
        """Called once after the mailbox exists, before messages are handled."""

    async def start(self) -> None:
        self._mailbox = await self.bus.register(self.name)
        await self.setup()
        self._tasks = [
            asyncio.create_task(self._receive_loop(), name=f"{self.name}:mailbox"),
            asyncio.create_task(self.act(), name=f"{self.name}:act"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.bus.unregister(self.name)

    async def run(self) -> None:
        """Start and run until cancelled (or until `act` raises)."""
        await self.start()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.stop()

    async def _receive_loop(self) -> None:
        assert self._mailbox is not None
        while True:
            envelope = await self._mailbox.get()
            self.envelopes_taken += 1
            await self.deliver(envelope)
            self.bus.handled(envelope)

    async def deliver(self, envelope: Envelope) -> None:
        """Validate and handle one envelope; answer invalid content with not-understood."""
        try:
            content = decode_content(envelope)
        except InvalidContent as exc:
            self.not_understood += 1
            log.warning("%s did not understand %s: %s", self.name, envelope.message_id, exc)
            if envelope.performative is not Performative.NOT_UNDERSTOOD:
                await self.reply(
                    envelope,
                    Performative.NOT_UNDERSTOOD,
                    NotUnderstood(reason=str(exc), content_type=envelope.content_type),
                )
            return
        try:
            await self.handle(envelope, content)
        except Exception as exc:
            # One line at error level (a log shipper keeps it whole); the trace for debugging.
            self.failures += 1
            log.error(
                "%s could not handle %s %s from %s: %s: %s",
                self.name,
                envelope.content_type,
                envelope.message_id,
                envelope.sender,
                type(exc).__name__,
                " ".join(str(exc).split()),
            )
            log.debug("the trace of that failure", exc_info=True)
