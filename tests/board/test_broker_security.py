"""The community broker lets no board speak for another (issue 13, "Broker security").

Mosquitto runs on the files `meterchain broker config` writes: TLS with the community's CA,
a password per agent, the ACL. Anonymous access is refused everywhere; these tests are the
ones that check the refusal.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel
from typer.testing import CliRunner

from meterchain.agents.broker import Broker, free_port, start_mosquitto
from meterchain.agents.broker_files import password_line
from meterchain.agents.bus_mqtt import BusUnavailable, MqttBus
from meterchain.agents.runtime import Agent, Bus, Envelope, Performative, content_type
from meterchain.cli import app

A, B = "prosumer-10000001", "prosumer-10000002"


@content_type("test-security-note")
class Note(BaseModel):
    text: str


class Inbox(Agent):
    def __init__(self, name: str, bus: Bus, groups: tuple[str, ...] = ()) -> None:
        super().__init__(name, bus)
        self.groups = groups
        self.notes: list[tuple[str, str]] = []

    async def setup(self) -> None:
        for group in self.groups:
            await self.bus.join(self.name, group)

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        assert isinstance(content, Note)
        self.notes.append((envelope.sender, content.text))


@pytest.fixture
def broker() -> Iterator[Broker]:
    running = start_mosquitto(agents=[A, B])
    yield running
    running.stop()


@pytest.fixture
async def agents(broker: Broker) -> AsyncIterator[dict[str, Inbox]]:
    started = {
        "market": Inbox("market", broker.bus("market")),
        A: Inbox(A, broker.bus(A), ("community",)),
        B: Inbox(B, broker.bus(B), ("community",)),
    }
    for agent in started.values():
        await agent.start()
    yield started
    for agent in started.values():
        await agent.stop()
        await agent.bus.close()  # type: ignore[attr-defined]


async def until(condition: object, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.02)


def raw_client(broker: Broker, user: str | None, *, tls: bool) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if user is not None:
        client.username_pw_set(*broker.credentials(user))
    if tls:
        client.tls_set(ca_certs=str(broker.ca_file))
    return client


def connect_result(client: mqtt.Client, broker: Broker) -> str:
    """'ok', or why the broker (or TLS) refused the connection."""
    outcome: list[str] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: outcome.append(
        "ok" if not reason.is_failure else str(reason)
    )
    try:
        client.connect(broker.host, broker.port, keepalive=5)
    except (OSError, ssl.SSLError) as exc:
        return f"refused: {exc}"
    deadline = time.monotonic() + 5
    while not outcome and time.monotonic() < deadline:
        if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
            return "refused: the broker closed the connection"
    client.disconnect()
    return outcome[0] if outcome else "refused: no CONNACK"


def test_an_anonymous_client_is_refused(broker: Broker) -> None:
    assert connect_result(raw_client(broker, None, tls=True), broker) != "ok"


def test_a_client_without_tls_is_refused_even_with_a_good_password(broker: Broker) -> None:
    assert connect_result(raw_client(broker, A, tls=False), broker) != "ok"
    assert connect_result(raw_client(broker, A, tls=True), broker) == "ok"  # the same, with TLS


async def test_an_agent_without_the_password_cannot_start(broker: Broker) -> None:
    wrong = MqttBus(
        broker.host, broker.port, credentials=(A, "guessed"), tls_ca_file=str(broker.ca_file),
        connect_timeout_s=2,
    )  # fmt: skip
    with pytest.raises(BusUnavailable):
        await Inbox(A, wrong).start()


async def test_board_a_cannot_publish_on_board_b_topics(
    broker: Broker, agents: dict[str, Inbox]
) -> None:
    market, one, two = agents["market"], agents[A], agents[B]
    # A's own agent, logged in as A, tries to write to B: the broker drops it.
    await one.send(B, Performative.INFORM, Note(text="from A to B"))
    # A's credentials on B's topic directly, under B's name, and as the market: all dropped.
    client = raw_client(broker, A, tls=True)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic, sender in [
            (f"meterchain/to/{B}/from/{A}", A),
            (f"meterchain/to/{B}/from/market", "market"),
            (f"meterchain/to/{B}", "market"),
            ("meterchain/to/community/from/market", "market"),
            (f"meterchain/to/market/from/{B}", B),  # speaking for B to the market
        ]:
            envelope = Envelope(
                performative=Performative.INFORM, sender=sender, receiver=B,
                content_type="test-security-note", content={"text": f"forged on {topic}"},
            )  # fmt: skip
            client.publish(topic, envelope.model_dump_json(), qos=1).wait_for_publish(5)
        # A may write to the market under its own name, but not claim to be B there either.
        impostor = Envelope(
            performative=Performative.INFORM, sender=B, receiver="market",
            content_type="test-security-note", content={"text": "B says (really A)"},
        )  # fmt: skip
        client.publish(
            f"meterchain/to/market/from/{A}", impostor.model_dump_json(), qos=1
        ).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()
    # What is allowed still flows, after everything above: the broker kept the order.
    await one.send("market", Performative.INFORM, Note(text="A's order"))
    await market.send(B, Performative.INFORM, Note(text="market to B"))
    await market.send("community", Performative.INFORM, Note(text="cleared"))
    await until(lambda: ("market", "cleared") in two.notes and market.notes)
    await asyncio.sleep(0.5)
    assert two.notes == [("market", "market to B"), ("market", "cleared")]
    assert one.notes == [("market", "cleared")]
    assert market.notes == [(A, "A's order")]
    assert market.bus.impostors == 1  # type: ignore[attr-defined]


async def test_board_a_cannot_read_board_b_mail(broker: Broker, agents: dict[str, Inbox]) -> None:
    heard: list[str] = []
    client = raw_client(broker, A, tls=True)
    client.on_message = lambda _c, _u, message: heard.append(message.topic)
    client.connect(broker.host, broker.port)
    client.subscribe(f"meterchain/to/{B}/#", qos=1)
    client.subscribe("meterchain/#", qos=1)
    client.loop_start()
    try:
        await asyncio.sleep(0.3)
        await agents["market"].send(B, Performative.INFORM, Note(text="private to B"))
        await until(lambda: bool(agents[B].notes))
        await asyncio.sleep(0.3)
    finally:
        client.loop_stop()
        client.disconnect()
    assert heard == []


async def test_a_revoked_board_is_cut_off_once_the_broker_reloads(
    broker: Broker, agents: dict[str, Inbox]
) -> None:
    market, two = agents["market"], agents[B]
    await two.send("market", Performative.INFORM, Note(text="before"))
    await until(lambda: bool(market.notes))
    broker.add_agents(revoke=[B])
    broker.reload()
    await asyncio.sleep(1.0)  # mosquitto applies the new password file and ACL on SIGHUP
    await two.send("market", Performative.INFORM, Note(text="after revocation"))
    await asyncio.sleep(1.5)
    assert market.notes == [(B, "before")]
    # A new connection with the old password is refused outright.
    with pytest.raises(BusUnavailable):
        await Inbox(B, MqttBus(
            broker.host, broker.port, credentials=(B, "x"), tls_ca_file=str(broker.ca_file),
            connect_timeout_s=2,
        )).start()  # fmt: skip
    assert connect_result(raw_client_with(broker, B, two), broker) != "ok"


def raw_client_with(broker: Broker, user: str, agent: Inbox) -> mqtt.Client:
    """A raw client with `user`'s revoked password (the agent's bus still holds it)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    credentials = agent.bus.credentials  # type: ignore[attr-defined]
    client.username_pw_set(*credentials)
    client.tls_set(ca_certs=str(broker.ca_file))
    return client


def test_the_password_file_lines_are_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    """Same format, so an operator may mix lines from either."""
    salt = bytes(range(12))
    line = password_line("alice", "secret", salt=salt)
    assert line.startswith("alice:$7$101$AAECAwQFBgcICQoL$")
    assert len(line.split("$")[-1]) == 88  # 64 bytes of PBKDF2-SHA512, base64


def test_broker_config_writes_a_community_broker_that_runs(tmp_path: Path) -> None:
    port = free_port()
    directory = tmp_path / "broker"
    result = CliRunner().invoke(
        app,
        ["broker", "config", "--dir", str(directory), "--board", "10000001", "--board",
         "10000002", "--host", "127.0.0.1", "--bind", "127.0.0.1", "--port", str(port)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    issued = sorted(p.name for p in (directory / "credentials").iterdir())
    assert issued == [
        "grid.password", "market.password", "monitor.password", "prepaid.password",
        "prosumer-10000001.password", "prosumer-10000002.password",
    ]  # fmt: skip
    for secret in [directory / "passwd", directory / "broker.key", directory / "ca.key"]:
        assert secret.stat().st_mode & 0o077 == 0, secret
    acl = (directory / "acl").read_text()
    assert "pattern write meterchain/to/market/from/%u" in acl
    assert "topic write meterchain/to/+/from/market" in acl
    # Run again: credentials are kept, a revoked board disappears from the password file.
    token = (directory / "credentials" / "prosumer-10000001.password").read_text()
    again = CliRunner().invoke(
        app, ["broker", "config", "--dir", str(directory), "--revoke", "prosumer-10000002"]
    )
    assert again.exit_code == 0, again.output
    assert (directory / "credentials" / "prosumer-10000001.password").read_text() == token
    users = [line.split(":")[0] for line in (directory / "passwd").read_text().splitlines()]
    assert users == ["grid", "market", "monitor", "prepaid", "prosumer-10000001"]
    # Mosquitto starts on the files as written and takes the market's login over TLS. (As
    # root, the command gave the files to the `mosquitto` user; a test's temporary directory is
    # not reachable by that user, so the broker stays root here.)
    config = directory / "mosquitto.conf"
    if os.geteuid() == 0:
        config.write_text(config.read_text() + "user root\n")
    process = subprocess.Popen(
        ["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        asyncio.run(log_in_as_market(directory, port))
    finally:
        process.terminate()
        process.wait(timeout=5)


async def log_in_as_market(directory: Path, port: int) -> None:
    password = (directory / "credentials" / "market.password").read_text().strip()
    bus = MqttBus(
        "127.0.0.1", port, credentials=("market", password),
        tls_ca_file=str(directory / "ca.crt"), connect_timeout_s=5,
    )  # fmt: skip
    await bus.register("market")
    assert bus.connected
    await bus.close()


def test_broker_config_refuses_an_agent_name_that_would_break_the_acl(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["broker", "config", "--dir", str(tmp_path), "--agent", "evil/#"]
    )
    assert result.exit_code == 1
    assert "cannot be an agent on the broker" in result.output
