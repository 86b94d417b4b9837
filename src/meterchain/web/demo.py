"""The demo community beside the web interface: live, in one process, on a virtual clock.

The same parts as `meterchain simulate` (a simulator per meter speaking its protocol on
loopback, a local anvil with the contracts, prosumer, market and grid agents on the
in-process bus), with the operator's monitor agent recording everything into the web's
database, and an interval every `interval_wall_s` seconds of real time instead of as fast as
possible. The boards' trading devices take their configuration from the web interface.

The ledger's applications run as in the simulation: the PV meters are certificate devices
and a certificate agent issues each delivered interval; a scenario's community plant has its
fund; prepaid households have their PrepaidMeter, the operator's prepaid agent and their
boards' relay side (its low-credit warnings go to the monitor). The web keeps each
household's owner account as its wallet (with some credit in it), so the demo's households
can retire certificates, top up, buy shares and pay from the pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from eth_utils.address import to_checksum_address
from sqlalchemy import delete

from meterchain.agents.board_config import BoardConfigHandler, ConfiguredPlanner
from meterchain.agents.bus_local import LocalBus
from meterchain.agents.certificates import CertificateAgent
from meterchain.agents.grid import GridAgent
from meterchain.agents.market import MarketAgent
from meterchain.agents.messages import TariffNotice
from meterchain.agents.monitor import AlarmListener, MonitorAgent, new_meter
from meterchain.agents.prosumer import ProsumerAgent
from meterchain.agents.runtime import Agent
from meterchain.chain.client import EnergyMarketClient
from meterchain.chain.units import to_units
from meterchain.clock import ManualClock
from meterchain.config import Scenario
from meterchain.devices.battery import SimulatedBattery
from meterchain.ledger.issuer import CertificateIssuer
from meterchain.market.clearing import Mechanism
from meterchain.meters.registry import open_meter
from meterchain.meters.sim.registry import client_url, start_simulator
from meterchain.meters.sim.server import RunningServer
from meterchain.prepaid.simulation import set_chain_time
from meterchain.sim.community import (
    HORIZON_STEPS,
    ChainSetup,
    Coordinator,
    SimHousehold,
    _build_households,
    _forecaster,
    _setup_chain,
    _site,
    _tick,
)
from meterchain.sim.errors import SimulationError
from meterchain.store.community import (
    AlarmRow,
    BoardConfigRow,
    MarketIntervalRow,
    MeterIntervalRow,
    MeterRow,
    TradeRow,
)
from meterchain.store.db import Store, open_store
from meterchain.store.records import RecordRow, Records
from meterchain.web.chain_actions import ChainActions, ledger_contracts
from meterchain.web.security import create_user

log = logging.getLogger(__name__)

OPERATOR = ("operador", "operador-demo")
WALLET_CREDIT = 200  # currency units in each household's wallet at the start
ROLE_GRANTED = "RoleGranted(bytes32,address,address)"


def prosumer_login(meter_id: str) -> tuple[str, str]:
    """The demo login of the household with this meter."""
    return f"casa-{meter_id}", f"demo-{meter_id}"


@dataclass
class DemoCommunity:
    """A scenario's households trading live; `run` advances one interval per `interval_wall_s`."""

    scenario: Scenario
    web_store: Store
    work_dir: Path
    interval_wall_s: float = 3.0
    webhook_url: str | None = None
    clock: ManualClock = field(init=False)
    bus: LocalBus = field(default_factory=LocalBus)
    households: list[SimHousehold] = field(default_factory=list)
    servers: dict[str, RunningServer] = field(default_factory=dict)
    agents: list[Agent] = field(default_factory=list)
    chain_setup: ChainSetup | None = None
    monitor: MonitorAgent | None = None
    market: MarketAgent | None = None
    coordinator: Coordinator | None = None
    grid: GridAgent | None = None
    alarm_log: AlarmListener | None = None
    certifier: CertificateAgent | None = None
    intervals_done: int = 0
    _agent_store: Store | None = None
    _chain: ChainActions | None = None

    def __post_init__(self) -> None:
        self.clock = ManualClock(self.scenario.start - timedelta(seconds=self.scenario.interval_s))

    @property
    def chain(self) -> ChainActions:
        assert self._chain is not None, "start the demo first"
        return self._chain

    @property
    def market_client(self) -> EnergyMarketClient:
        assert self.chain_setup is not None, "start the demo first"
        return self.chain_setup.market

    def prosumer(self, meter_id: str) -> ProsumerAgent:
        for household in self.households:
            if household.config.meter_id == meter_id and household.agent is not None:
                return household.agent
        raise KeyError(f"no household with meter {meter_id}")

    async def start(self) -> None:
        """The chain, the meters, the agents, and the web's users and meters.

        A demo starts from nothing: a new chain, new agent stores, and the web database's
        community tables emptied (its users and their sessions stay).
        """
        if self.work_dir.exists():
            shutil.rmtree(self.work_dir)
        self.work_dir.mkdir(parents=True)
        self._forget_last_run()
        scenario = self.scenario
        self.households = _build_households(scenario, self.clock)
        self.chain_setup = await asyncio.to_thread(
            _setup_chain, scenario, self.households, self.work_dir
        )
        market_client = self.chain_setup.market
        self._chain = await asyncio.to_thread(self._chain_actions)
        ids = [h.config.meter_id for h in self.households]
        owners = await asyncio.to_thread(lambda: {m: self.chain.owner_of(m) for m in ids})
        self._seed_web(owners)
        store = self._agent_store = open_store(f"sqlite:///{self.work_dir / 'agents.sqlite'}")
        decimals = market_client.credit.decimals
        tariffs = TariffNotice(
            retail_price=scenario.tariffs.retail_price, feed_in_price=scenario.tariffs.feed_in_price
        )
        bus = self.bus
        self.coordinator = Coordinator("simulator", bus)
        self.market = MarketAgent(
            "market", bus, market=market_client, domain=market_client.domain,
            records=Records(store, "market"), tariffs=tariffs,
            mechanism=Mechanism(scenario.mechanism), coordinator="simulator", decimals=decimals,
        )  # fmt: skip
        self.market.monitor = "monitor"
        prosumers = [f"prosumer-{h.config.meter_id}" for h in self.households]
        self.grid = GridAgent(
            "grid", bus, tariffs=tariffs, prosumers=prosumers, coordinator="simulator"
        )
        chain = self.chain

        def balances(meter_ids: list[str]) -> dict[str, int]:
            return chain.balances(meter_ids)

        self.monitor = MonitorAgent(
            "monitor", bus, store=self.web_store, clock=self.clock, interval_s=scenario.interval_s,
            tariffs=tariffs, balances=balances, webhook_url=self.webhook_url,
            check_every_s=max(self.interval_wall_s / 4, 0.2), decimals=decimals,
            prepaid_states=chain.prepaid_state_changes if chain.has_prepaid else None,
            prepaid_poll_s=max(self.interval_wall_s, 1.0),
        )  # fmt: skip
        self.alarm_log = AlarmListener("alarm-log", bus)
        self.agents = [self.coordinator, self.market, self.grid, self.monitor, self.alarm_log]
        ledger = self.chain_setup.ledger
        if ledger.certificates is not None:
            # The market's sender (one nonce sequence) issues, as in the simulation.
            issuer = CertificateIssuer(
                ledger.certificates.with_sender(market_client.sender), market_client
            )
            self.certifier = CertificateAgent("certificates", bus, issuer=issuer)
            self.agents.append(self.certifier)
        prepaid = self.chain_setup.prepaid
        if prepaid is not None:
            prepaid_agent = prepaid.make_agent(bus, store, self.clock, "simulator")
            prepaid_agent.alarms_to = "monitor"
            self.agents.append(prepaid_agent)
        for household in self.households:
            await self._start_household(household, store, decimals)
        for agent in self.agents:
            await agent.start()
        await self._baseline()

    def _forget_last_run(self) -> None:
        with self.web_store.session() as session:
            for table in (MeterIntervalRow, MarketIntervalRow, TradeRow, AlarmRow, BoardConfigRow):
                session.execute(delete(table))
            session.execute(delete(RecordRow).where(RecordRow.agent == "monitor"))

    def _chain_actions(self) -> ChainActions:
        """The web's chain actions on the demo's chain: the market, the ledger contracts the
        scenario has, the prepaid contract with its vending key, and each household's owner
        account as its wallet, with WALLET_CREDIT in it (blocking: run in a thread)."""
        setup = self.chain_setup
        assert setup is not None
        market = setup.market
        contracts: dict[str, str] = {}
        ledger = setup.ledger
        if ledger.certificates is not None:
            contracts["EnergyCertificates"] = ledger.certificates.address
        billing = _billing_address(market)
        if billing is not None:
            contracts["Billing"] = billing
        if ledger.fund is not None:
            contracts["CommunityFund"] = ledger.fund.address
        vending = None
        if setup.prepaid is not None and setup.prepaid.client is not None:
            contracts["PrepaidMeter"] = setup.prepaid.client.address
            vending = setup.prepaid.vending_key
        units = to_units(WALLET_CREDIT, market.credit.decimals)
        for account in ledger.owners.values():
            market.credit.mint(account.address, units)
        return ChainActions(
            market, ledger_contracts(contracts, market.sender, vending_key=vending), ledger.owners
        )

    def _seed_web(self, owners: dict[str, str]) -> None:
        with self.web_store.session() as session:
            from sqlalchemy import select

            from meterchain.store.accounts import UserRow

            existing = set(session.scalars(select(UserRow.username)))
            if OPERATOR[0] not in existing:
                create_user(session, OPERATOR[0], OPERATOR[1], role="operator")
            for household in self.households:
                config = household.config
                username, password = prosumer_login(config.meter_id)
                if username not in existing:
                    create_user(
                        session, username, password, role="prosumer", meter_id=config.meter_id
                    )
                row = session.get(MeterRow, config.meter_id)
                if row is None:
                    row = new_meter(config.meter_id)
                    session.add(row)
                row.protocol = config.protocol
                row.kind = "prosumer" if config.pv_kwp > 0 else "consumer"
                row.pv_kwp, row.battery_kwh = config.pv_kwp, config.battery_kwh
                row.signer = to_checksum_address(household.signer.address)
                row.owner = owners[config.meter_id]
                row.revoked = False

    async def _start_household(self, household: SimHousehold, store: Store, decimals: int) -> None:
        config = household.config
        scenario = self.scenario
        server = await start_simulator(config.protocol, household.model)
        self.servers[config.meter_id] = server
        household.server = server
        url = client_url(config.protocol, server.port)
        if self.chain_setup is not None and self.chain_setup.prepaid is not None:
            url = self.chain_setup.prepaid.meter_url(config, url)  # a DLMS relay: management
        household.meter = open_meter(url)
        site = _site(config)
        records = Records(store, f"prosumer-{config.meter_id}")
        planner = ConfiguredPlanner(
            site,
            _forecaster(household, scenario.interval_s, scenario.seed),
            meter_id=config.meter_id,
            step_s=scenario.interval_s,
            horizon_steps=HORIZON_STEPS,
            flexible_orders=config.battery_kwh > 0,
        )
        planner.handler = BoardConfigHandler(
            records, site, step_s=scenario.interval_s, timezone=scenario.location.timezone
        )
        assert self.chain_setup is not None
        prepaid = self.chain_setup.prepaid
        board = None if prepaid is None else prepaid.board(config, household.meter, self.clock)
        agent = ProsumerAgent(
            f"prosumer-{config.meter_id}", self.bus, meter_id=config.meter_id,
            meter=household.meter, signer=household.signer, domain=self.chain_setup.market.domain,
            planner=planner, records=records, clock=self.clock, coordinator="simulator",
            battery=SimulatedBattery(household.model) if config.battery_kwh else None,
            decimals=decimals, retry_delay_s=0.05, prepaid=board, alarms_to="monitor",
        )  # fmt: skip
        agent.monitor = "monitor"
        household.agent = agent
        self.agents.append(agent)

    async def stop_meter(self, meter_id: str) -> None:
        """Take a simulated meter off the line (its board's reads fail until it is back)."""
        server = self.servers[meter_id]
        await server.close()

    async def restart_meter(self, meter_id: str) -> None:
        """Serve a stopped meter again on its old port."""
        household = next(h for h in self.households if h.config.meter_id == meter_id)
        port = self.servers[meter_id].port
        self.servers[meter_id] = await start_simulator(
            household.config.protocol, household.model, port=port
        )

    async def _baseline(self) -> None:
        """The registers at the start, settled as the end of the interval before it."""
        assert self.coordinator is not None
        before = self.clock.now()
        baseline = int(before.timestamp())
        self.clock.set(self.scenario.start)
        n = len(self.households)
        await _tick(self.coordinator, "community", before, "delivery")
        await self.coordinator.wait_for(("delivery", "delivery-failed"), baseline, n)
        await _tick(self.coordinator, "market", before, "settle")
        await self.coordinator.wait_for(("settled",), baseline, 1)

    async def step(self) -> None:
        """One interval: tariffs, orders, gate closure, delivery, settlement."""
        coordinator = self.coordinator
        assert coordinator is not None
        n = len(self.households)
        step = timedelta(seconds=self.scenario.interval_s)
        start = self.clock.now()
        interval = int(start.timestamp())
        await _tick(coordinator, "grid", start, "order")
        await coordinator.wait_for(("tariffs",), interval, 1)
        await _tick(coordinator, "community", start, "order")
        await coordinator.wait_for(("orders",), interval, n)
        await _tick(coordinator, "market", start, "clear")
        await coordinator.wait_for(("cleared",), interval, n)
        self.clock.set(start + step)
        if self.chain_setup is not None and self.chain_setup.prepaid is not None:
            # The cut-off rules read block time: it follows the demo's clock.
            await asyncio.to_thread(set_chain_time, self.chain_setup.market.sender, start + step)
        await _tick(coordinator, "community", start, "delivery")
        await coordinator.wait_for(("delivery", "delivery-failed"), interval, n)
        await _tick(coordinator, "market", start, "settle")
        await coordinator.wait_for(("settled",), interval, 1)
        self.intervals_done += 1

    async def run(self) -> None:
        """Advance one interval every `interval_wall_s` until the scenario's days are over."""
        loop = asyncio.get_running_loop()
        while self.intervals_done < self.scenario.intervals:
            began = loop.time()
            try:
                await self.step()
            except SimulationError as exc:
                log.error("demo interval failed: %s", exc)
                self.clock.set(self.clock.now() + timedelta(seconds=self.scenario.interval_s))
            await asyncio.sleep(max(0.0, self.interval_wall_s - (loop.time() - began)))
        log.info("the demo scenario's %d intervals are over", self.scenario.intervals)

    async def stop(self) -> None:
        for agent in self.agents:
            with contextlib.suppress(Exception):
                await agent.stop()
        for household in self.households:
            if household.meter is not None:
                with contextlib.suppress(Exception):
                    await household.meter.close()
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                await server.close()
        if self._agent_store is not None:
            self._agent_store.close()
        if self.chain_setup is not None:
            self.chain_setup.close()

    def logins(self) -> list[tuple[str, str, str]]:
        """(role, user name, password) of every demo login."""
        rows = [("operator", *OPERATOR)]
        rows += [("prosumer", *prosumer_login(h.config.meter_id)) for h in self.households]
        return rows


def _billing_address(market: EnergyMarketClient) -> str | None:
    """The Billing contract the suite deployed beside `market` (the contract that granted
    BILLER_ROLE and bills in the market's credit), or None."""
    from eth_utils.crypto import keccak

    from meterchain.chain.ledger_clients import BillingClient

    w3 = market.w3
    logs = w3.eth.get_logs(
        {
            "fromBlock": 0,
            "toBlock": "latest",
            "topics": [
                "0x" + keccak(text=ROLE_GRANTED).hex(),
                "0x" + keccak(text="BILLER_ROLE").hex(),
            ],
        }
    )
    for log_entry in logs:
        address = str(log_entry["address"])
        try:
            if BillingClient(market.sender, address).credit.address == market.credit.address:
                return address
        except Exception:  # another contract with a BILLER_ROLE: not ours
            continue
    return None
