"""The deployed prepaid agent (`meterchain prepaid run`'s build) and a board with `[prepaid]`
enabled, talking over a real Mosquitto broker to a real chain."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from eth_account import Account
from prepaid_suite import OPERATOR, TUESDAY_10H, PrepaidSuite

from meterchain.agents.broker import Broker, start_mosquitto
from meterchain.agents.messages import DeliveryNotice
from meterchain.agents.planning import DerPlanner
from meterchain.agents.prepaid import PrepaidBoard
from meterchain.agents.prosumer import ProsumerAgent
from meterchain.agents.runtime import Agent, Performative
from meterchain.chain.deployment import Deployment, save_deployment
from meterchain.chain.keystore import TEST_SCRYPT_N, create_keystore
from meterchain.chain.node import AnvilNode, dev_account
from meterchain.chain.signing import MarketDomain
from meterchain.clock import ManualClock
from meterchain.config import ConfigError, PrepaidBoardConfig, load_toml
from meterchain.der.site import Site
from meterchain.meters.registry import open_meter
from meterchain.meters.sim.physical import PhysicalMeter, flat_load_w
from meterchain.meters.sim.registry import client_url, start_simulator
from meterchain.model import RelayState
from meterchain.prepaid.process import PrepaidAgentConfig, build_prepaid
from meterchain.store.db import open_store
from meterchain.store.records import Records

METER = "home-1"
PASSWORD_ENV = "MCHAIN_PREPAID_TEST_PASSWORD"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    running = start_mosquitto(agents=[f"prosumer-{METER}"])
    yield running
    running.stop()


async def eventually(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.05)


def test_the_example_prepaid_config_shares_the_community_s_clock_and_schedule(
    tmp_path: Path,
) -> None:
    from meterchain.roles import BoardConfig, MarketConfig

    examples = Path(__file__).resolve().parents[2] / "examples"
    prepaid = load_toml(examples / "prepaid.toml", PrepaidAgentConfig)
    market = load_toml(examples / "market.toml", MarketConfig)
    assert (prepaid.schedule, prepaid.clock) == (market.schedule, market.clock)
    # The same broker, logged in as itself.
    same = ("host", "port", "tls_ca_file")
    assert [getattr(prepaid.broker, f) for f in same] == [getattr(market.broker, f) for f in same]
    assert prepaid.broker.username == "prepaid"
    assert prepaid.broker.password_file is not None
    assert prepaid.broker.password_file.name == "prepaid.password"
    text = (examples / "board.toml").read_text()
    board = tmp_path / "board.toml"
    board.write_text(text.replace("# [prepaid]\n# enabled", "[prepaid]\nenabled"))
    assert load_toml(board, BoardConfig).prepaid.enabled


def test_a_prepaid_config_with_a_typo_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "prepaid.toml"
    path.write_text('meters = ["a"]\npoll = 3\n[key]\nkeystore = "k.json"\n')
    with pytest.raises(ConfigError, match="poll"):
        load_toml(path, PrepaidAgentConfig)
    assert not PrepaidBoardConfig().enabled


async def test_the_deployed_agent_cuts_a_board_off_over_mqtt(
    suite: PrepaidSuite,
    anvil: AnvilNode,
    broker: Broker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "pw")
    keystore = tmp_path / "prepaid-key.json"
    create_keystore(keystore, "pw", scrypt_n=TEST_SCRYPT_N, private_key=dev_account(OPERATOR).key)
    deployment = tmp_path / "deployment.json"
    save_deployment(Deployment(31337, anvil.rpc_url, 0, dict(suite.addresses)), deployment)
    config = tmp_path / "prepaid.toml"
    config.write_text(
        f'meters = ["{METER}"]\ndeployment = "{deployment}"\n'
        f'store = "sqlite:///{tmp_path / "prepaid.sqlite"}"\npoll_s = 0.2\n'
        f'[key]\nkeystore = "{keystore}"\npassword_env = "{PASSWORD_ENV}"\n'
        + broker.toml_section("prepaid")
    )
    running = build_prepaid(load_toml(config, PrepaidAgentConfig))
    assert "1 meters" in running.description

    suite.set_time(TUESDAY_10H)
    clock = ManualClock(datetime.fromtimestamp(TUESDAY_10H, UTC))
    model = PhysicalMeter(METER, clock, load_w=flat_load_w(1500.0))
    server = await start_simulator("modbus", model)
    meter = open_meter(client_url("modbus", server.port))
    store = open_store(f"sqlite:///{tmp_path / 'board.sqlite'}")
    board = ProsumerAgent(
        f"prosumer-{METER}", broker.bus(f"prosumer-{METER}"), meter_id=METER, meter=meter,
        signer=Account.create(), domain=MarketDomain(31337, "0x" + "11" * 20),
        planner=DerPlanner(Site(name=METER), lambda _s, n: ([0.0] * n, [1500.0] * n),
                           meter_id=METER),
        records=Records(store, "board"), clock=clock, prepaid=PrepaidBoard(METER, meter, clock),
    )  # fmt: skip
    market_bus = broker.bus("market")
    market = Agent("market", market_bus)
    agents = [running.agent, board, market]
    for agent in agents:
        await agent.start()
    try:
        suite.consume(METER, 2_500)  # past the emergency credit, in business hours
        await market.send(
            "community",
            Performative.INFORM,
            DeliveryNotice(interval=suite.interval - 900, tx_hash=None, gas_used=0),
        )
        await eventually(lambda: model.relay is RelayState.OFF)
        suite.top_up(METER, 1_000)
        await eventually(lambda: model.relay is RelayState.ON)
    finally:
        for agent in agents:
            await agent.stop()
        for bus in (running.bus, board.bus, market_bus):
            await bus.close()  # type: ignore[attr-defined]
        running.close_store()
        await meter.close()
        await server.close()
        store.close()
