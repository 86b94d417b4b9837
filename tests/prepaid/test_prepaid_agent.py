"""The operator's PrepaidAgent between a real chain and a real board: after a delivery it
assesses, the board's meter is cut off and warned; a top-up made between deliveries
reconnects the meter within seconds (the agent polls the chain)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from eth_account import Account
from prepaid_suite import OPERATOR, TUESDAY_10H, PrepaidSuite

from listener import Listener
from meterchain.agents.bus_local import LocalBus
from meterchain.agents.messages import DeliveryNotice
from meterchain.agents.planning import DerPlanner
from meterchain.agents.prepaid import CreditWarning, PrepaidBoard, RelayAck
from meterchain.agents.prosumer import ProsumerAgent
from meterchain.agents.runtime import Performative
from meterchain.chain.signing import MarketDomain
from meterchain.clock import ManualClock
from meterchain.der.site import Site
from meterchain.meters.registry import open_meter
from meterchain.meters.sim.physical import PhysicalMeter, flat_load_w
from meterchain.meters.sim.registry import client_url, start_simulator
from meterchain.model import RelayState
from meterchain.prepaid.agent import PrepaidAgent
from meterchain.prepaid.client import SupplyState
from meterchain.store.db import open_store
from meterchain.store.records import Records

METER = "home-1"
BOARD = f"prosumer-{METER}"


async def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.02)


async def test_a_delivery_cuts_the_meter_off_and_a_top_up_reconnects_it_between_deliveries(
    suite: PrepaidSuite, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    suite.set_time(TUESDAY_10H)
    clock = ManualClock(datetime.fromtimestamp(TUESDAY_10H, UTC))
    model = PhysicalMeter(METER, clock, load_w=flat_load_w(1500.0))
    server = await start_simulator("modbus", model)
    meter = open_meter(client_url("modbus", server.port))
    bus = LocalBus()
    store = open_store(f"sqlite:///{tmp_path / 'agents.sqlite'}")
    board = ProsumerAgent(
        BOARD, bus, meter_id=METER, meter=meter, signer=Account.create(),
        domain=MarketDomain(31337, "0x" + "11" * 20),
        planner=DerPlanner(Site(name=METER), lambda _s, n: ([0.0] * n, [1500.0] * n),
                           meter_id=METER),
        records=Records(store, BOARD), clock=clock, alarms_to="monitor",
        prepaid=PrepaidBoard(METER, meter, clock),
    )  # fmt: skip
    agent = PrepaidAgent(
        "prepaid",
        bus,
        prepaid=suite.prepaid(OPERATOR),
        records=Records(store, "prepaid"),
        clock=clock,
        boards={METER: BOARD},
        alarms_to="monitor",
        poll_s=0.1,
    )
    market, monitor = Listener("market", bus), Listener("monitor", bus)
    agents = [board, agent, market, monitor]
    for a in agents:
        await a.start()
    try:
        # The house imported 2.5 kWh: 200 cents, past its 200 of emergency credit.
        suite.consume(METER, 2_500)
        await market.send(
            "community",
            Performative.INFORM,
            DeliveryNotice(interval=suite.interval - 900, tx_hash=None, gas_used=0),
        )
        await eventually(lambda: model.relay is RelayState.OFF)
        assert suite.prepaid().status(METER).state is SupplyState.CUT_OFF
        await eventually(
            lambda: any(
                isinstance(m, CreditWarning) and m.meter_id == METER and m.threshold_units == 0
                for m in monitor.received
            )
        )
        acks = [m for m in agent.relays.values()]
        assert acks[0].relay == "off"
        # The holder tops up from its wallet: no delivery needed to reconnect.
        suite.top_up(METER, 1_000)
        await eventually(lambda: model.relay is RelayState.ON)
        assert agent.relays[METER].relay == "on"
    finally:
        for a in agents:
            await a.stop()
        await meter.close()
        await server.close()
        store.close()


def test_relay_acks_name_the_command_they_answer() -> None:
    ack = RelayAck(meter_id=METER, command_id="abc", relay="off", switched=True)
    assert ack.model_dump()["command_id"] == "abc"
