"""Chaos: a community of separate processes taking random blows, then an independent verifier.

Three meters speaking Modbus, DLMS/COSEM and ABNT NBR 14522 (served by `meter serve`), their
three boards, the market and the grid, over Mosquitto and anvil, 300 times faster than real
time (a 15-minute interval every 3 s). For about two minutes, in a seeded random order:
kill -9s of every board, the market and the grid (restarted after a random pause), a broker
outage longer than an interval, a chain outage, the market down for over two intervals, and
malformed and hostile messages on the bus. Then the community runs calm for a few intervals
and stops, and `verifier.verify` checks the chain against the meters' own registers: every
interval settled exactly once or announced void, nothing doubled, every balance following
from registers and trades, money conserved.

MCHAIN_CHAOS_SEED picks another sequence of blows (the default is fixed, so a failure
reproduces).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from community_harness import (
    HOUSE,
    INTERVAL_S,
    NBR_PV_HOUSE,
    PV_HOUSE,
    Broker,
    Community,
    Process,
    start_community,
)
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from verifier import Registers, RegisterSpan, Report, verify

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

SEED = int(os.environ.get("MCHAIN_CHAOS_SEED", "14"))
KILLS_EACH = 3  # kill -9s of each board, the market and the grid
BROKER_DOWN_S = 4.5  # 1.5 intervals
CHAIN_DOWN_S = 3.0  # an interval
MARKET_DOWN_S = 7.0  # over two intervals
COMMUNITY_TOPIC = "meterchain/to/community/#"


class BusObserver:
    """An independent listener on the community's topic: it hears what is announced (void
    intervals) without trusting any agent's store. A persistent session, so it hears what was
    said while the broker was restarting."""

    def __init__(self, broker: Broker) -> None:
        self.void: dict[int, str] = {}
        self.cleared: set[int] = set()
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="chaos-observer", protocol=mqtt.MQTTv5
        )
        self.client.on_connect = self._subscribe
        self.client.on_message = self._heard
        self.client.reconnect_delay_set(0.1, 1)
        self.client.username_pw_set(*broker.credentials("chaos-observer"))
        self.client.tls_set(ca_certs=str(broker.ca_file))
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, clean_start=False, properties=properties)
        self.client.loop_start()

    def _subscribe(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(COMMUNITY_TOPIC, qos=1)

    def _heard(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        envelope = json.loads(message.payload)
        content = envelope["content"]
        with self._lock:
            if envelope["content_type"] == "void":
                self.void[int(content["interval"])] = str(content["reason"])
            elif envelope["content_type"] == "cleared":
                self.cleared.add(int(content["interval"]))

    def voids(self) -> dict[int, str]:
        with self._lock:
            return dict(self.void)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def inject_hostile_messages(community: Community) -> int:
    """Malformed and forged messages onto the market's topic; how many were sent.

    From a compromised board: the broker takes only clients with a credential, and lets a
    board write to the market only under its own name, so that is all an intruder can do."""
    intruder = PV_HOUSE.agent
    interval = community.current_interval() + 2 * INTERVAL_S
    order = {
        "meter_id": PV_HOUSE.meter_id,
        "interval": interval,
        "side": "sell",
        "quantity_wh": 500,
        "limit_price_units": 10,
        "nonce": 7,
        "signature": "0x" + "11" * 64 + "1b",  # well-formed, signed by nobody's key
    }
    reading = {
        "meter_id": HOUSE.meter_id,
        "interval": interval - INTERVAL_S,
        "import_wh": 10**12,
        "export_wh": 0,
        "signature": "0x" + "22" * 64 + "1c",
    }

    def envelope(content_type: str, content: dict[str, Any]) -> bytes:
        return json.dumps(
            {
                "performative": "propose",
                "sender": intruder,
                "receiver": "market",
                "content_type": content_type,
                "content": content,
            }
        ).encode()

    payloads = [
        envelope("order", {**order, "interval": 2**70}),
        envelope("order", {**order, "signature": "0x" + "00" * 65}),
        envelope("order", order),
        envelope("order", {**order, "quantity_wh": -5}),
        envelope("reading", reading),
        envelope("reading", {**reading, "import_wh": 2**64}),
        envelope("no-such-thing", {}),
        b"\xff\x00 not json",
        b'{"performative": "inform"}',
    ]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(*community.broker.credentials(intruder))
    client.tls_set(ca_certs=str(community.broker.ca_file))
    client.connect(community.broker.host, community.broker.port)
    client.loop_start()
    for payload in payloads:
        topic = f"meterchain/to/market/from/{intruder}"
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()
    return len(payloads)


@dataclass
class Chaos:
    """What was done to the community, for the report."""

    kills: list[str] = field(default_factory=list)
    outages: list[str] = field(default_factory=list)
    injected: int = 0


def restart(community: Community, name: str) -> None:
    if name == "market":
        community.start_market(log_format="json")
    elif name == "grid":
        community.start_grid(0.80, 0.30)
    else:
        spec = next(s for s in community.meters if f"board-{s.meter_id}" == name)
        community.start_board(spec)


def victims(community: Community) -> dict[str, Process]:
    found = {f"board-{m}": p for m, p in community.boards.items()}
    assert community.market_process is not None and community.grid_process is not None
    found["market"] = community.market_process
    found["grid"] = community.grid_process
    return found


def run_chaos(community: Community, rng: random.Random) -> Chaos:
    chaos = Chaos()
    # Every process is killed KILLS_EACH times, in a random order among the outages.
    names = sorted(victims(community)) * KILLS_EACH
    actions = [f"kill:{name}" for name in names] + ["broker", "chain", "market", "inject"]
    rng.shuffle(actions)
    for action in actions:
        time.sleep(rng.uniform(0.5, 2.5))
        if action.startswith("kill:"):
            name = action.removeprefix("kill:")
            victims(community)[name].kill()
            chaos.kills.append(name)
            time.sleep(rng.uniform(0.3, 4.0))  # down for up to ~1.3 intervals, plus its start
            restart(community, name)
        elif action == "broker":
            community.broker.stop()
            time.sleep(BROKER_DOWN_S)
            community.broker = community.broker.restart()
            chaos.outages.append(f"broker {BROKER_DOWN_S:g} s")
        elif action == "market":  # killed for longer than two intervals: some become void
            assert community.market_process is not None
            community.market_process.kill()
            time.sleep(MARKET_DOWN_S)
            community.start_market(log_format="json")
            chaos.kills.append("market")
            chaos.outages.append(f"market {MARKET_DOWN_S:g} s")
        elif action == "chain":
            community.restart_node(down_s=CHAIN_DOWN_S)
            chaos.outages.append(f"chain {CHAIN_DOWN_S:g} s")
        else:
            chaos.injected = inject_hostile_messages(community)
    return chaos


@pytest.fixture(scope="module")
def community(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Community]:
    running = start_community(tmp_path_factory.mktemp("chaos"), [PV_HOUSE, HOUSE, NBR_PV_HOUSE])
    try:
        yield running
    finally:
        running.close()


def test_a_community_under_chaos_settles_every_interval_once_and_conserves_money(
    community: Community, tmp_path: Path
) -> None:
    observer = BusObserver(community.broker)
    try:
        before = community.read_registers()
        community.start_market(log_format="json")
        community.start_grid(0.80, 0.30)
        community.start_boards(community.meters)
        first = community.first_interval_read_after(community.virtual_now())
        community.wait_until_delivered(
            lambda d: bool(d) and d[-1] >= first, timeout_s=40, what="a first full interval"
        )
        chaos = run_chaos(community, random.Random(SEED))

        # Calm: everyone up, a few intervals go by; the last one checked is fully settled.
        last = community.current_interval() + 2 * INTERVAL_S
        community.wait_until_delivered(
            lambda d: bool(d) and d[-1] >= last, timeout_s=60, what=f"calm up to {last}"
        )
        community.stop_agents()
        after = community.read_registers()
        voids = observer.voids()
    finally:
        observer.close()

    report = verify(
        community.market.w3,
        community.market.address,
        registers={m: RegisterSpan(Registers(*before[m]), Registers(*after[m])) for m in before},
        first_interval=first,
        last_interval=last,
        interval_s=INTERVAL_S,
        void_announced=voids,
    )
    summary = summarise(report, chaos, voids)
    (tmp_path / "chaos-report.txt").write_text(summary)
    print(summary)
    assert report.problems == [], "\n".join(report.problems) + "\n" + summary

    assert len(chaos.kills) == 5 * KILLS_EACH + 1 and len(chaos.outages) == 3
    assert report.void, "the long market outage voided no interval"
    # Every board sent readings that were settled, and trades happened, chaos or not.
    assert all(m.readings >= 3 for m in report.meters.values()), summary
    assert report.trades > 0, summary
    # Nothing crashed into a traceback, hostile input included; the refusals were one line.
    for process in community.all_processes():
        assert "Traceback" not in process.output(), f"{process.name}:\n{process.output()[-3000:]}"
    market_log = community.market_process.output() if community.market_process else ""
    assert "did not understand" in market_log and "refused" in market_log
    check_market_json_log(market_log, community)


def check_market_json_log(text: str, community: Community) -> None:
    """The market's JSON log names every settled delivery with the transaction on chain."""
    delivered: dict[int, str] = {}
    for line in text.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)  # every JSON line parses
            if entry.get("event") == "delivered":
                delivered[int(entry["interval"])] = entry["tx_hash"]
    events = community.market.events("DeliverySettled")
    on_chain = {
        int(e["args"]["interval"]): "0x" + bytes(e["transactionHash"]).hex() for e in events
    }
    assert delivered, "no delivery in the market's JSON log"
    for interval, tx_hash in delivered.items():
        assert on_chain.get(interval) == tx_hash, (interval, tx_hash, on_chain.get(interval))


def summarise(report: Report, chaos: Chaos, voids: dict[int, str]) -> str:
    lines = [
        f"seed {SEED}: {len(chaos.kills)} kill -9s ({', '.join(chaos.kills)}); "
        f"outages: {', '.join(chaos.outages)}; {chaos.injected} hostile messages",
        f"intervals: {len(report.settled)} settled on chain, {len(report.void)} void "
        f"({', '.join(str(i) for i in report.void) or 'none'}); {report.batches} batches, "
        f"{report.trades} trades",
        *(f"void {interval}: {reason}" for interval, reason in sorted(voids.items())),
    ]
    for meter in report.meters.values():
        lines.append(
            f"meter {meter.meter_id}: {meter.readings} settled readings, billed "
            f"{meter.billed_import_wh}/{meter.billed_export_wh} Wh import/export, traded "
            f"{meter.traded_wh} Wh, not yet billed {meter.unbilled_import_wh:.0f}/"
            f"{meter.unbilled_export_wh:.0f} Wh, balance {meter.balance} = chain "
            f"{meter.chain_balance}"
        )
    return "\n".join(lines)


def test_the_verifier_catches_a_settlement_the_registers_cannot_explain(
    community: Community,
) -> None:
    """The verifier can fail: told the meters counted less than the chain settled, it says so."""
    settled = community.delivered_intervals()
    assert settled, "the chaos test ran first and left a settled chain"
    tiny = RegisterSpan(Registers(0, 0), Registers(1, 1))
    report = verify(
        community.market.w3,
        community.market.address,
        registers={spec.meter_id: tiny for spec in community.meters},
        first_interval=settled[0],
        last_interval=settled[-1] + INTERVAL_S,
        interval_s=INTERVAL_S,
        void_announced={},
    )
    assert any("beyond its registers" in p for p in report.problems), report.problems
    assert any("not announced void" in p for p in report.problems), report.problems
