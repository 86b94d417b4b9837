"""The hand-made broker configuration in examples/ works as docs/deployment.md says.

examples/mosquitto-secure.conf with examples/mosquitto.acl: only clients with a password get
in, over TLS; a board reads its own topic and the community's, never another board's. It runs
the real mosquitto on a copy of the example with only the port and the file paths changed.
(`meterchain broker config` writes the same ACL: tests/board/test_broker_security.py.)
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from meterchain.agents.broker import free_port
from meterchain.agents.bus_mqtt import BusUnavailable, MqttBus
from meterchain.agents.runtime import Agent, Bus, Envelope, Performative, content_type

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@content_type("test-example-note")
class Note(BaseModel):
    text: str


class Inbox(Agent):
    def __init__(self, name: str, bus: Bus, groups: tuple[str, ...] = ()) -> None:
        super().__init__(name, bus)
        self.groups = groups
        self.notes: list[str] = []

    async def setup(self) -> None:
        for group in self.groups:
            await self.bus.join(self.name, group)

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        assert isinstance(content, Note)
        self.notes.append(content.text)


def run_mosquitto(config: Path, port: int, cwd: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        ["mosquitto", "-c", str(config)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("mosquitto did not listen")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=5)


def as_root_too(text: str) -> str:
    """Started as root, mosquitto switches to its own user, who cannot read a test's files."""
    return text + ("\nuser root\n" if os.geteuid() == 0 else "")


def make_certificates(directory: Path) -> None:
    """A CA and a broker certificate for 127.0.0.1, with the openssl command line."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=meterchain test CA",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
        "-subj", "/CN=127.0.0.1",
    )  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509", "-req", "-in", "broker.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "broker.crt", "-days", "2", "-extfile", "san.ext",
    )  # fmt: skip


PASSWORDS = {"market": "market-secret", "prosumer-1": "board-one", "prosumer-2": "board-two"}


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    make_certificates(tmp_path)
    passwd = tmp_path / "meterchain.passwd"
    passwd.touch()
    for user, password in PASSWORDS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
    shutil.copy(EXAMPLES / "mosquitto.acl", tmp_path / "meterchain.acl")
    port = free_port()
    text = (EXAMPLES / "mosquitto-secure.conf").read_text()
    text = re.sub(r"^listener 8883$", f"listener {port} 127.0.0.1", text, flags=re.M)
    text = text.replace("/etc/mosquitto/certs/", f"{tmp_path}/").replace(
        "/etc/mosquitto/", f"{tmp_path}/"
    )
    text = text.replace("/var/lib/mosquitto/", f"{tmp_path}/data/")
    (tmp_path / "data").mkdir()
    config = tmp_path / "secure.conf"
    config.write_text(as_root_too(text))
    process = run_mosquitto(config, port, tmp_path)
    yield port, tmp_path / "ca.crt"
    stop(process)


async def test_the_secure_example_lets_in_only_known_users_and_keeps_boards_apart(
    secure_broker: tuple[int, Path],
) -> None:
    port, ca = secure_broker

    def bus(user: str, password: str) -> MqttBus:
        return MqttBus(
            "127.0.0.1", port, credentials=(user, password), tls_ca_file=str(ca),
            connect_timeout_s=3,
        )  # fmt: skip

    market_bus = bus("market", PASSWORDS["market"])
    one_bus, two_bus = bus("prosumer-1", PASSWORDS["prosumer-1"]), bus("prosumer-2", "board-two")
    market = Inbox("market", market_bus)
    one = Inbox("prosumer-1", one_bus, ("community",))
    two = Inbox("prosumer-2", two_bus, ("community",))
    for agent in (market, one, two):
        await agent.start()
    try:
        await one.send("market", Performative.INFORM, Note(text="order from one"))
        await market.send("community", Performative.INFORM, Note(text="cleared"))
        await market.send("prosumer-2", Performative.INFORM, Note(text="for two"))
        # A board may not write to another board (the broker drops it), nor read its topic.
        await one.send("prosumer-2", Performative.INFORM, Note(text="spoofed"))
        async with asyncio.timeout(5):
            while not (market.notes and len(one.notes) == 1 and len(two.notes) == 2):
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        assert market.notes == ["order from one"]
        assert one.notes == ["cleared"]
        assert sorted(two.notes) == ["cleared", "for two"]

        with pytest.raises(BusUnavailable):
            await Inbox("prosumer-3", bus("prosumer-2", "wrong password")).start()
        plain = MqttBus("127.0.0.1", port, connect_timeout_s=2)  # no TLS, no password
        with pytest.raises(BusUnavailable):
            await Inbox("intruder", plain).start()
    finally:
        for agent in (market, one, two):
            await agent.stop()
        for each in (market_bus, one_bus, two_bus):
            await each.close()
