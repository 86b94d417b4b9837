"""One board as deployed, for the power-loss, full-disk and offline tests: a simulated meter
(`meterchain meter serve`), the community's secured broker, and the board's own process
(`meterchain agent run`), on a virtual clock `speed` times faster than real time. A listener
logged in as the market hears everything the board sends to it (the board needs no market to
run: it signs and sends whatever the market does with it)."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from meterchain.agents.broker import Broker
from meterchain.chain.keystore import TEST_SCRYPT_N, create_keystore
from meterchain.meters.sim.registry import client_url

EXECUTABLE = str(Path(sys.executable).with_name("meterchain"))
METER_ID = "10000001"
AGENT = f"prosumer-{METER_ID}"
PASSWORD = "board-test-password"
INTERVAL_S = 900
SCHEDULE = {
    "interval_s": INTERVAL_S,
    "order_lead_s": 450,
    "gate_closure_s": 150,
    "reading_delay_s": 30,
    "settle_delay_s": 300,
    "tariff_lead_s": 30,
}
MARKET_ADDRESS = "0x" + "ab" * 20


def morning() -> datetime:
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, 13, 0, tzinfo=UTC)  # 10:00 in Fortaleza


@dataclass
class MarketListener:
    """Everything the board sends to the market: orders and readings, in arrival order."""

    broker: Broker
    received: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="test-market", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(*self.broker.credentials("market"))
        self.client.tls_set(ca_certs=str(self.broker.ca_file))
        self.client.on_connect = lambda c, *_: c.subscribe("meterchain/to/market/#", qos=1)
        self.client.on_message = self._heard
        self.client.reconnect_delay_set(0.1, 1)
        # A persistent session: what the board sends while the listener reconnects (after a
        # broker restart) waits for it at the broker.
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600
        self.client.connect(
            self.broker.host, self.broker.port, clean_start=False, properties=properties
        )
        self.client.loop_start()

    def _heard(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        envelope = json.loads(message.payload)
        with self._lock:
            self.received.append(envelope)

    def of_type(self, content_type: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e["content"] for e in self.received if e["content_type"] == content_type]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Board:
    root: Path
    broker: Broker
    speed: float
    clock_start: datetime
    virtual_start: datetime
    meter_url: str = ""
    meter: subprocess.Popen[bytes] | None = None
    process: subprocess.Popen[bytes] | None = None
    store: Path = field(init=False)
    log: Path = field(init=False)
    extra_config: str = ""

    def __post_init__(self) -> None:
        self.store = self.root / "state" / "board.db"
        self.log = self.root / "board.log"

    def virtual_now(self) -> datetime:
        return self.virtual_start + (datetime.now(UTC) - self.clock_start) * self.speed

    def start_meter(self) -> None:
        out = (self.root / "meter.log").open("wb")
        self.meter = subprocess.Popen(
            [EXECUTABLE, "meter", "serve", "--protocol", "modbus", "--meter-id", METER_ID,
             "--profile", "pv-house", "--speed", f"{self.speed:g}",
             "--clock-start", self.clock_start.isoformat(),
             "--virtual-start", self.virtual_start.isoformat()],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            match = re.search(r"on 127\.0\.0\.1:(\d+)", (self.root / "meter.log").read_text())
            if match:
                self.meter_url = client_url("modbus", int(match.group(1)))
                return
            time.sleep(0.05)
        raise AssertionError("the meter server did not start")

    def config(self) -> Path:
        path = self.root / "board.toml"
        schedule = "".join(f"{k} = {v}\n" for k, v in SCHEDULE.items())
        path.write_text(
            f'meter_id = "{METER_ID}"\nmeter_url = "{self.meter_url}"\n'
            "meter_timeout_s = 0.5\nmeter_retries = 2\n"
            f'store = "sqlite:///{self.store}"\n'
            f"{self.extra_config}"
            f'[key]\nkeystore = "{self.root / "board.json"}"\n'
            f'[market]\nchain_id = 31337\naddress = "{MARKET_ADDRESS}"\n'
            "[site]\npv_kwp = 4.0\nhorizon_steps = 16\n"
            + self.broker.toml_section(AGENT)
            + f'[clock]\nspeed = {self.speed:g}\nstart = "{self.clock_start.isoformat()}"\n'
            f'virtual_start = "{self.virtual_start.isoformat()}"\n'
            f"[schedule]\n{schedule}"
            "[tariffs]\nretail_price = 0.80\nfeed_in_price = 0.30\n"
        )
        return path

    def start(self) -> None:
        config = self.config()
        with self.log.open("ab") as out:
            out.write(f"\n=== start at {datetime.now(UTC).isoformat()}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                [EXECUTABLE, "agent", "run", "--config", str(config), "--log-level", "info"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "MCHAIN_KEY_PASSWORD": PASSWORD, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, pattern: str, timeout_s: float = 30.0, after: int = 0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output()[after:])
            if match:
                return match.group(0)
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the board's log:\n{self.output()[-3000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        for process in (self.process, self.meter):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    # ---- the store, read as a plain SQLite file ----------------------------------------------

    def integrity(self) -> str:
        with sqlite3.connect(self.store) as connection:
            return str(connection.execute("PRAGMA integrity_check").fetchone()[0])

    def records(self, kind: str) -> dict[str, dict[str, Any]]:
        with sqlite3.connect(self.store) as connection:
            rows = connection.execute(
                "SELECT key, payload FROM agent_records WHERE agent = ? AND kind = ?",
                (AGENT, kind),
            ).fetchall()
        return {key: json.loads(payload) for key, payload in rows}


def make_board(root: Path, broker: Broker, speed: float) -> Board:
    root.mkdir(parents=True, exist_ok=True)
    create_keystore(root / "board.json", PASSWORD, scrypt_n=TEST_SCRYPT_N)
    start = datetime.now(UTC).replace(microsecond=0)
    board = Board(root, broker, speed, start, morning())
    board.start_meter()
    return board
