"""The community simulation: real meter protocols, a real chain, all agents, virtual time.

One process. Each household's meter is a simulator speaking its configured protocol on
loopback, fed by a physical model whose load and PV come from the scenario's profiles; each
household's ProsumerAgent reads it through the same driver a board uses. A household's
battery and PV inverter are SunSpec simulators on loopback (Modbus TCP) acting on the same
physical model, driven through the board's device drivers (`device_link = "in-process"` sets
the battery straight in the physical model instead, to compare). The market agent
settles on a local anvil node. A coordinator moves the virtual clock one interval at a time
and sends the phase ticks a wall clock would: order, clear (gate closure), delivery, settle.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import BaseModel
from web3 import Web3

from meterchain.agents.bus_local import LocalBus
from meterchain.agents.certificates import CertificateAgent
from meterchain.agents.grid import GridAgent
from meterchain.agents.market import MarketAgent
from meterchain.agents.messages import Ack, PhaseName, TariffNotice, Tick
from meterchain.agents.planning import AirConditionerControl, DerPlanner
from meterchain.agents.prosumer import ProsumerAgent
from meterchain.agents.runtime import Agent, Bus, Envelope, Performative
from meterchain.chain.batch import (
    MeterAccountState,
    Metered,
    Position,
    advance,
    measure_reading,
    settle_meter,
)
from meterchain.chain.client import (
    EnergyCreditClient,
    EnergyMarketClient,
    MeterKind,
    MeterRegistryClient,
)
from meterchain.chain.deploy import FundCampaign, deploy_fund, deploy_suite
from meterchain.chain.ledger_clients import CommunityFundClient, EnergyCertificatesClient
from meterchain.chain.node import AnvilNode, connect, dev_account, start_anvil, stop_anvil
from meterchain.chain.sender import TransactionSender
from meterchain.chain.signing import meter_id_to_bytes32
from meterchain.chain.units import to_units
from meterchain.clock import ManualClock
from meterchain.config import DevicesConfig, Household, Scenario
from meterchain.der.site import Battery, Site
from meterchain.devices.battery import SimulatedBattery
from meterchain.devices.board import BoardDevices, open_board_devices
from meterchain.devices.sim.site import serve_site_tcp, site_units
from meterchain.ledger.certificates import read_book
from meterchain.ledger.community import DeviceSpec, claim_all, collect, register_devices
from meterchain.ledger.issuer import CertificateIssuer
from meterchain.market.clearing import Mechanism
from meterchain.meters.base import Meter
from meterchain.meters.registry import open_meter
from meterchain.meters.sim.physical import BatterySpec, PhysicalMeter
from meterchain.meters.sim.registry import client_url, start_simulator
from meterchain.meters.sim.server import RunningServer
from meterchain.prepaid.simulation import SimPrepaid, set_chain_time
from meterchain.sim.aircon import (
    BoardLink,
    LoadWithAirConditioner,
    SimulatedAirConditioner,
    outdoor_truth_c,
)
from meterchain.sim.errors import SimulationError
from meterchain.sim.profiles import StepProfile, household_load_w, pv_power_w
from meterchain.sim.results import (
    FundOutcome,
    HouseholdInterval,
    HouseholdResult,
    IntervalMarket,
    SimulationResult,
)
from meterchain.store.db import open_store
from meterchain.store.outbox import Outbox
from meterchain.store.records import Records

STARTING_CREDIT = 500  # currency units deposited for each household
GRID_CREDIT = 100_000  # currency units the grid account starts with (it pays feed-in)
FORECAST_ERROR = 0.10  # relative noise on the households' own forecasts
HORIZON_STEPS = 96
PHASE_TIMEOUT_S = 60.0
PLANNER_PROCESSES = 2  # this machine's cores

ProgressCallback = Callable[[int, int], None]


class Coordinator(Agent):
    """Counts the acknowledgements agents send after each phase."""

    def __init__(self, name: str, bus: Bus) -> None:
        super().__init__(name, bus)
        self.acks: Counter[tuple[str, int]] = Counter()
        self._changed = asyncio.Event()

    async def handle(self, envelope: Envelope, content: BaseModel) -> None:
        if isinstance(content, Ack):
            self.acks[(content.what, content.interval)] += 1
            self._changed.set()

    async def wait_for(self, whats: tuple[str, ...], interval: int, count: int) -> None:
        try:
            async with asyncio.timeout(PHASE_TIMEOUT_S):
                while self.count(whats, interval) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            moment = datetime.fromtimestamp(interval, UTC).isoformat()
            raise SimulationError(
                f"only {self.count(whats, interval)} of {count} agents finished "
                f"'{whats[0]}' for the interval starting {moment} within {PHASE_TIMEOUT_S:g} s; "
                "the log above says which agent failed and why"
            ) from None

    def count(self, whats: tuple[str, ...], interval: int) -> int:
        return sum(self.acks[(what, interval)] for what in whats)


@dataclass
class SimHousehold:
    config: Household
    model: PhysicalMeter
    load: StepProfile
    pv: StepProfile
    signer: LocalAccount
    server: RunningServer | None = None
    meter: Meter | None = None
    agent: ProsumerAgent | None = None
    devices: BoardDevices | None = None
    aircon: SimulatedAirConditioner | None = None


def _household_key(scenario: Scenario, meter_id: str) -> LocalAccount:
    """A reproducible board key for a simulated household (never for a real board)."""
    seed = hashlib.sha256(f"meterchain-sim:{scenario.seed}:{meter_id}".encode()).digest()
    account: LocalAccount = Account.from_key(seed)
    return account


def _build_households(scenario: Scenario, clock: ManualClock) -> list[SimHousehold]:
    steps = scenario.intervals + HORIZON_STEPS
    households = []
    # One outdoor temperature for the street, which the boards' forecasts do not know.
    outdoor = outdoor_truth_c(
        scenario.start,
        steps,
        scenario.interval_s,
        np.random.default_rng([scenario.seed, 2026]),
        scenario.location.timezone,
    )
    for index, config in enumerate(scenario.all_households()):
        rng = np.random.default_rng([scenario.seed, index])
        load = StepProfile(
            scenario.start,
            scenario.interval_s,
            tuple(
                float(v)
                for v in household_load_w(
                    scenario.start,
                    steps,
                    scenario.interval_s,
                    config.daily_kwh,
                    rng,
                    kind=config.load_profile,
                    timezone=scenario.location.timezone,
                )
            ),
        )
        location = (
            scenario.location.latitude,
            scenario.location.longitude,
            scenario.location.altitude_m,
            scenario.location.timezone,
        )
        pv = StepProfile(
            scenario.start,
            scenario.interval_s,
            tuple(
                float(v)
                for v in pv_power_w(
                    scenario.start,
                    steps,
                    scenario.interval_s,
                    config.pv_kwp,
                    rng,
                    location=location,
                    cloudiness=scenario.cloudiness,
                )
            ),
        )
        battery = (
            BatterySpec(
                capacity_wh=config.battery_kwh * 1000,
                max_power_w=config.battery_kw * 1000,
                soc_fraction=0.5,
            )
            if config.battery_kwh > 0
            else None
        )
        start_import = 1_000_000.0 + 1000 * index  # meters are not new
        aircon = None
        meter_load: StepProfile | LoadWithAirConditioner = load
        if config.air_conditioner is not None:
            aircon = SimulatedAirConditioner(
                f"ac-{config.meter_id}",
                config.air_conditioner,
                clock,
                outdoor,
                scenario.location.timezone,
            )
            meter_load = LoadWithAirConditioner(load, aircon)
        model = PhysicalMeter(
            config.meter_id,
            clock,
            load_w=meter_load,
            pv_w=pv,
            battery=battery,
            import_wh=start_import,
        )
        households.append(
            SimHousehold(
                config, model, load, pv, _household_key(scenario, config.meter_id), aircon=aircon
            )
        )
    return households


def _forecaster(
    household: SimHousehold, interval_s: int, seed: int
) -> Callable[[datetime, int], tuple[list[float], list[float]]]:
    """The household's forecast: the coming profiles with a reproducible relative error."""

    def forecast(start: datetime, steps: int) -> tuple[list[float], list[float]]:
        first = int((start - household.load.start).total_seconds() // interval_s)
        rng = np.random.default_rng([seed, first, int(household.config.meter_id)])
        load = np.array(household.load.values_w[first : first + steps])
        pv = np.array(household.pv.values_w[first : first + steps])
        # The next interval is known best (the board measured the last one); later ones less.
        noise = FORECAST_ERROR * np.minimum(1, np.arange(len(load)) / 8)
        load = load * (1 + noise * rng.standard_normal(len(load)))
        pv = pv * (1 + noise * rng.standard_normal(len(pv)))
        return [float(v) for v in np.clip(pv, 0, None)], [float(v) for v in np.clip(load, 0, None)]

    return forecast


async def _serve_devices(
    household: SimHousehold, interval_s: int, servers: list[RunningServer]
) -> BoardDevices | None:
    """The household's battery and PV inverter as SunSpec simulators on loopback, and the
    board's drivers for them (None when it has neither)."""
    config = household.config
    has_battery = config.battery_kwh > 0 and config.battery_kw > 0
    kinds = [k for k, has in (("battery", has_battery), ("pv", config.pv_kwp > 0)) if has]
    if not kinds:
        return None
    units = site_units(household.model, kinds, pv_rated_w=config.pv_kwp * 1000 or None)
    server, urls = await serve_site_tcp(units)
    servers.append(server)
    return open_board_devices(
        DevicesConfig(
            battery=urls.get("battery"),
            pv=urls.get("pv"),
            battery_capacity_wh=config.battery_kwh * 1000 if has_battery else None,
            battery_max_w=config.battery_kw * 1000 if has_battery else None,
            setpoint_revert_s=2 * interval_s,  # a board that stops talking hands control back
        )
    )


def _air_conditioners(household: SimHousehold, scenario: Scenario) -> list[AirConditionerControl]:
    """The board's control of the household's air conditioner, if it has one."""
    from meterchain.der.weather import OutdoorForecaster

    if household.aircon is None or household.config.air_conditioner is None:
        return []
    location = scenario.location
    return [
        AirConditionerControl(
            name=household.aircon.name,
            config=household.config.air_conditioner,
            device=BoardLink(household.aircon),
            timezone=location.timezone,
            forecaster=OutdoorForecaster(longitude=location.longitude, timezone=location.timezone),
        )
    ]


def _site(config: Household) -> Site:
    battery = None
    if config.battery_kwh > 0:
        battery = Battery(
            capacity_wh=config.battery_kwh * 1000,
            max_charge_power_w=config.battery_kw * 1000,
            max_discharge_power_w=config.battery_kw * 1000,
        )
    return Site(name=config.meter_id, battery=battery)


@dataclass
class SimLedger:
    """The ledger contracts of a simulation: certificates, the community plant's fund, and
    the households' owner accounts (they ask for auto-retirement and back the fund)."""

    certificates: EnergyCertificatesClient | None
    fund: CommunityFundClient | None
    owners: dict[str, LocalAccount]
    plant_meter_id: str | None = None
    certifier: CertificateAgent | None = None  # issues each interval after its delivery


class ChainSetup:
    """A local anvil with the suite deployed, the meters registered and funded."""

    def __init__(
        self,
        node: AnvilNode | None,
        market: EnergyMarketClient,
        prepaid: SimPrepaid | None = None,
        ledger: SimLedger | None = None,
    ) -> None:
        self.node = node
        self.market = market
        self.prepaid = prepaid
        self.ledger = ledger or SimLedger(None, None, {})

    def close(self) -> None:
        if self.node is not None:
            stop_anvil(self.node)


def _setup_chain(scenario: Scenario, households: list[SimHousehold], store_dir: Path) -> ChainSetup:
    node = start_anvil()
    try:
        w3 = connect(node.rpc_url)
        operator = dev_account(0)
        sender = TransactionSender(
            w3, operator, outbox=Outbox(open_store(_sqlite(store_dir, "chain")))
        )
        prepaid = SimPrepaid(scenario) if SimPrepaid.wanted(scenario) else None
        if prepaid is not None:  # the cut-off rules read block time: keep it virtual
            set_chain_time(sender, scenario.start - timedelta(seconds=scenario.interval_s))
        addresses = deploy_suite(
            sender,
            retail_price=scenario.tariffs.retail_price,
            feed_in_price=scenario.tariffs.feed_in_price,
        )
        registry = MeterRegistryClient(sender, addresses["MeterRegistry"])
        credit = EnergyCreditClient(sender, addresses["EnergyCredit"])
        market = EnergyMarketClient(sender, addresses["EnergyMarket"])
        if prepaid is not None:
            prepaid.deploy(sender, market)
        decimals = credit.decimals
        per_household = to_units(STARTING_CREDIT, decimals)
        grid = to_units(GRID_CREDIT, decimals)
        credit.mint(operator.address, per_household * len(households) + grid)
        credit.approve(market.address, per_household * len(households) + grid)
        ledger = _ledger_accounts(scenario, households, w3, sender, addresses)
        # The registers when the meters join the market, as the end of the interval before
        # the first one: what the utility reads at installation.
        baseline = int((scenario.start - timedelta(seconds=scenario.interval_s)).timestamp())
        for household in households:
            config = household.config
            can_export = config.pv_kwp > 0 or config.battery_kwh > 0
            kind = MeterKind.PROSUMER if can_export else MeterKind.CONSUMER
            meter_id = config.meter_id
            owner: str = ledger.owners[meter_id].address
            if meter_id == ledger.plant_meter_id and ledger.fund is not None:
                kind, owner = MeterKind.GENERATOR, ledger.fund.address  # its revenue: the fund's
            if prepaid is not None:  # a prepaid meter's balance is the PrepaidMeter's to manage
                owner = prepaid.owner(config, owner)
            registry.register_meter(
                meter_id, household.signer.address, owner, kind,
                round(config.connection_kw * 1000),
            )  # fmt: skip
            registry.assign_market(meter_id, market.address)
            state = household.model.state()
            market.set_baseline(
                meter_id, baseline, round(state.import_wh), round(state.export_wh), "enrolled"
            )
            if prepaid is not None and config.prepaid:
                prepaid.enrol(config)
            else:
                market.deposit(meter_id, per_household, approve=False)
        market.deposit_grid(grid, approve=False)
        _enrol_ledger(scenario, households, ledger, w3, credit, per_household)
    except BaseException:
        stop_anvil(node)
        raise
    return ChainSetup(node, market, prepaid, ledger)


def _ledger_accounts(
    scenario: Scenario,
    households: list[SimHousehold],
    w3: Web3,
    sender: TransactionSender,
    addresses: dict[str, str],
) -> SimLedger:
    """Each household's owner account (with gas money), the certificates' client and, for a
    scenario with a community plant, its fund (deployed before the plant's meter, which the
    fund owns)."""
    owners = {
        h.config.meter_id: _household_key(scenario, f"owner:{h.config.meter_id}")
        for h in households
    }
    for owner in owners.values():
        w3.provider.make_request("anvil_setBalance", [owner.address, hex(10**21)])  # type: ignore[arg-type]
    certificates = None
    if scenario.certificates.enabled:
        certificates = EnergyCertificatesClient(sender, addresses["EnergyCertificates"])
    config = scenario.fund
    if config is None:
        return SimLedger(certificates, None, owners)
    decimals = EnergyCreditClient(sender, addresses["EnergyCredit"]).decimals
    price = to_units(config.price_per_share, decimals)
    total = sum(config.backers.values())
    cap = config.cap_shares or total
    campaign = FundCampaign(
        plant_meter_id=meter_id_to_bytes32(config.plant_meter_id),
        price_per_share=price,
        goal=(config.goal_shares or min(total, cap)) * price,
        cap=cap * price,
        deadline=int(scenario.start.timestamp()) + 30 * 86400,
        name=config.name,
        symbol=config.symbol,
    )
    fund = deploy_fund(sender, addresses["EnergyCredit"], addresses["EnergyMarket"], campaign)
    return SimLedger(certificates, CommunityFundClient(sender, fund), owners, config.plant_meter_id)


def _enrol_ledger(
    scenario: Scenario,
    households: list[SimHousehold],
    ledger: SimLedger,
    w3: Web3,
    credit: EnergyCreditClient,
    reserve_units: int,
) -> None:
    """PV meters become certificate devices, households ask for auto-retirement, backers buy
    the plant's shares and the plant keeps its starting credit as the reserve for its sales."""
    if ledger.certificates is not None:
        commissioned = int((scenario.start - timedelta(days=365)).timestamp())
        location = scenario.location
        register_devices(
            ledger.certificates,
            [
                DeviceSpec(
                    meter_id=h.config.meter_id,
                    capacity_w=round(h.config.pv_kwp * 1000),
                    commissioned_at=commissioned,
                    site=(
                        "community plant"
                        if h.config.meter_id == ledger.plant_meter_id
                        else f"household {h.config.meter_id}"
                    ),
                    technology=scenario.certificates.technology,
                    location=f"{location.latitude:.4f},{location.longitude:.4f}",
                )
                for h in households
                if h.config.pv_kwp > 0
            ],
        )
        if scenario.certificates.auto_retire:
            for household in households:
                meter_id = household.config.meter_id
                # A prepaid meter's registry owner is the PrepaidMeter contract, not the
                # household: it cannot ask for auto-retirement (its purchases stay unretired).
                if meter_id != ledger.plant_meter_id and not household.config.prepaid:
                    ledger.certificates.with_sender(
                        _owner_sender(w3, ledger, meter_id)
                    ).set_auto_retirement(
                        meter_id, f"household {meter_id}", "local renewable supply"
                    )
    if ledger.fund is not None and scenario.fund is not None:
        price = ledger.fund.price_per_share
        for meter_id, shares in scenario.fund.backers.items():
            credit.mint(ledger.owners[meter_id].address, shares * price)
            ledger.fund.with_sender(_owner_sender(w3, ledger, meter_id)).buy(shares)
        ledger.fund.set_reserve(reserve_units)


def _owner_sender(w3: Web3, ledger: SimLedger, meter_id: str) -> TransactionSender:
    return TransactionSender(w3, ledger.owners[meter_id])


def _sqlite(directory: Path, name: str) -> str:
    return f"sqlite:///{directory / f'{name}.sqlite'}"


async def run_community(
    scenario: Scenario,
    work_dir: Path | None = None,
    *,
    on_progress: ProgressCallback | None = None,
) -> SimulationResult:
    """Run the scenario end to end and return what happened, checked against the chain."""
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mc-sim-")))
        elif work_dir.exists():
            shutil.rmtree(work_dir)  # a simulation starts from nothing: a new chain, new stores
        work_dir.mkdir(parents=True, exist_ok=True)
        clock = ManualClock(scenario.start)
        households = _build_households(scenario, clock)
        chain = await asyncio.to_thread(_setup_chain, scenario, households, work_dir)
        stack.callback(chain.close)
        result = await _run_agents(
            scenario,
            households,
            chain.market,
            chain.ledger,
            clock,
            work_dir,
            on_progress,
            chain.prepaid,
        )
    result.wall_time_s = time.perf_counter() - started
    return result


async def _run_agents(
    scenario: Scenario,
    households: list[SimHousehold],
    market_client: EnergyMarketClient,
    ledger: SimLedger,
    clock: ManualClock,
    work_dir: Path,
    on_progress: ProgressCallback | None,
    prepaid: SimPrepaid | None = None,
) -> SimulationResult:
    bus = LocalBus()
    store = open_store(_sqlite(work_dir, "agents"))
    domain = market_client.domain
    decimals = market_client.credit.decimals
    tariffs = TariffNotice(
        retail_price=scenario.tariffs.retail_price, feed_in_price=scenario.tariffs.feed_in_price
    )
    coordinator = Coordinator("simulator", bus)
    market = MarketAgent(
        "market",
        bus,
        market=market_client,
        domain=domain,
        records=Records(store, "market"),
        tariffs=tariffs,
        mechanism=Mechanism(scenario.mechanism),
        coordinator="simulator",
        decimals=decimals,
    )
    # The households' MILPs run in worker processes: the event loop keeps serving the meters.
    planners = ProcessPoolExecutor(max_workers=PLANNER_PROCESSES, mp_context=get_context("spawn"))
    grid = GridAgent("grid", bus, tariffs=tariffs, prosumers=[], coordinator="simulator")
    agents: list[Agent] = [coordinator, market, grid]
    if prepaid is not None:
        agents.append(prepaid.make_agent(bus, store, clock, "simulator"))
    if ledger.certificates is not None:
        # Same account as the market (its sender keeps one nonce sequence): the operator issues.
        issuer = CertificateIssuer(
            ledger.certificates.with_sender(market_client.sender), market_client
        )
        ledger.certifier = CertificateAgent(
            "certificates", bus, issuer=issuer, coordinator="simulator"
        )
        agents.append(ledger.certifier)
    servers: list[RunningServer] = []
    try:
        for household in households:
            server = await start_simulator(household.config.protocol, household.model)
            servers.append(server)
            url = client_url(household.config.protocol, server.port)
            if prepaid is not None:
                url = prepaid.meter_url(household.config, url)
            household.meter = open_meter(url)
            in_process = scenario.device_link == "in-process"
            if not in_process:
                household.devices = await _serve_devices(household, scenario.interval_s, servers)
            household.agent = ProsumerAgent(
                f"prosumer-{household.config.meter_id}",
                bus,
                meter_id=household.config.meter_id,
                meter=household.meter,
                signer=household.signer,
                domain=domain,
                planner=DerPlanner(
                    _site(household.config),
                    _forecaster(household, scenario.interval_s, scenario.seed),
                    meter_id=household.config.meter_id,
                    step_s=scenario.interval_s,
                    horizon_steps=HORIZON_STEPS,
                    # A battery can offer its spare headroom to neighbours, priced by re-solving.
                    flexible_orders=household.config.battery_kwh > 0,
                    executor=planners,
                    air_conditioners=_air_conditioners(household, scenario),
                ),
                records=Records(store, f"prosumer-{household.config.meter_id}"),
                clock=clock,
                coordinator="simulator",
                battery=(
                    SimulatedBattery(household.model)
                    if in_process and household.config.battery_kwh
                    else None
                ),
                devices=household.devices,
                decimals=decimals,
                prepaid=None
                if prepaid is None
                else prepaid.board(household.config, household.meter, clock),
            )
            agents.append(household.agent)
        for agent in agents:
            await agent.start()
        return await _drive(
            scenario, households, market, coordinator, market_client, ledger, clock, decimals,
            on_progress, prepaid,
        )  # fmt: skip
    finally:
        for agent in agents:
            await agent.stop()
        for household in households:
            if household.meter is not None:
                await household.meter.close()
            if household.devices is not None:
                await household.devices.close()
        for server in servers:
            await server.close()
        store.close()
        planners.shutdown(cancel_futures=True)


async def _tick(agent: Agent, receiver: str, start: datetime, phase: PhaseName) -> None:
    await agent.send(receiver, Performative.INFORM, Tick(interval_start=start, phase=phase))


async def _drive(
    scenario: Scenario,
    households: list[SimHousehold],
    market: MarketAgent,
    coordinator: Coordinator,
    market_client: EnergyMarketClient,
    ledger: SimLedger,
    clock: ManualClock,
    decimals: int,
    on_progress: ProgressCallback | None,
    prepaid: SimPrepaid | None = None,
) -> SimulationResult:
    n = len(households)
    models = {h.config.meter_id: h.model for h in households}
    first_block = await asyncio.to_thread(lambda: int(market_client.w3.eth.block_number))
    step = timedelta(seconds=scenario.interval_s)

    # The boards read the registers at the start (the end of the interval before): each
    # interval's reading then carries both its ends.
    before = scenario.start - step
    baseline = int(before.timestamp())
    await _tick(coordinator, "community", before, "delivery")
    await coordinator.wait_for(("delivery", "delivery-failed"), baseline, n)

    ids = [h.config.meter_id for h in households]
    balances_before = await asyncio.to_thread(market_client.balances, ids)
    grid_before = await asyncio.to_thread(market_client.grid_balance)
    results = {
        h.config.meter_id: HouseholdResult(
            h.config.meter_id, h.config.protocol, h.config.pv_kwp, h.config.battery_kwh
        )
        for h in households
    }
    accounts = {
        m: MeterAccountState(a.last_interval, a.import_wh, a.export_wh)
        for m, a in zip(
            ids,
            await asyncio.to_thread(lambda: [market_client.meter_account(m) for m in ids]),
            strict=True,
        )
    }
    max_power_w = {h.config.meter_id: round(h.config.connection_kw * 1000) for h in households}
    intervals: list[IntervalMarket] = []
    aircon_before: dict[str, float] = {}

    for index in range(scenario.intervals):
        start = scenario.start + step * index
        interval = int(start.timestamp())
        if prepaid is not None:
            prepaid.interval_started(models)
        await _tick(coordinator, "grid", start, "order")
        await coordinator.wait_for(("tariffs",), interval, 1)
        await _tick(coordinator, "community", start, "order")
        await coordinator.wait_for(("orders",), interval, n)
        await _tick(coordinator, "market", start, "clear")
        await coordinator.wait_for(("cleared",), interval, n)
        clock.set(start + step)
        if prepaid is not None:
            prepaid.interval_ended(models, start)
            await asyncio.to_thread(set_chain_time, market_client.sender, start + step)
        await _tick(coordinator, "community", start, "delivery")
        await coordinator.wait_for(("delivery", "delivery-failed"), interval, n)
        await _tick(coordinator, "market", start, "settle")
        await coordinator.wait_for(("settled",), interval, 1)
        if prepaid is not None:
            await prepaid.after_delivery(
                coordinator, market_client.sender, interval, start + step, models
            )
        if ledger.certifier is not None:
            await coordinator.wait_for(("certified",), interval, 1)

        cleared = market.cleared[interval]
        delivered = market.delivered.get(interval)
        readings = market.book(interval).readings
        terms = cleared.terms
        if terms is None:
            terms = await asyncio.to_thread(market_client.batch_terms, interval)
        positions = {p.meter_id: p for p in terms.positions}
        for household in households:
            meter_id = household.config.meter_id
            aircon_wh = 0.0
            if household.aircon is not None:  # its electricity is part of the load
                household.aircon.temperature_c()  # advance to the interval's end
                aircon_wh = household.aircon.energy_wh - aircon_before.get(meter_id, 0.0)
                aircon_before[meter_id] = household.aircon.energy_wh
            reading = readings.get(meter_id)
            metered = Metered()
            if reading is not None:
                found = measure_reading(
                    reading.to_signed().reading,
                    accounts[meter_id],
                    max_power_w=max_power_w[meter_id],
                    interval_s=scenario.interval_s,
                )
                if isinstance(found, Metered):
                    metered = found
                    accounts[meter_id] = advance(accounts[meter_id], reading.to_signed().reading)
            imported, exported = metered.import_wh, metered.export_wh
            position = positions.get(meter_id_to_bytes32(meter_id))
            settled = settle_meter(position, metered, terms.retail_price, terms.feed_in_price)
            alone = settle_meter(None, metered, terms.retail_price, terms.feed_in_price)
            p = position or Position(meter_id=b"")
            received = min(p.bought_wh, imported)
            delivered_wh = min(p.sold_wh, exported)
            # The lock left the balance at the batch and comes back inside `credits`.
            change_units = settled.credits - settled.locked - settled.debit
            state = household.model.state()
            results[meter_id].intervals.append(
                HouseholdInterval(
                    interval_start=start,
                    imported_wh=imported,
                    exported_wh=exported,
                    bought_wh=p.bought_wh,
                    sold_wh=p.sold_wh,
                    received_wh=received,
                    delivered_wh=delivered_wh,
                    balance_change_units=change_units,
                    cost_without_market_units=alone.debit - alone.credits,
                    load_wh=household.load.energy_wh(index, 1) + aircon_wh,
                    pv_wh=household.pv.energy_wh(index, 1),
                    battery_soc_fraction=state.battery_soc_fraction,
                )
            )
        intervals.append(
            IntervalMarket(
                interval_start=start,
                price=cleared.notice.price,
                traded_wh=sum(t.quantity_wh for t in cleared.notice.trades),
                trades=len(cleared.notice.trades),
                orders=cleared.orders,
                gas_batch=cleared.notice.gas_used,
                gas_delivery=delivered.gas_used if delivered else 0,
                gas_certificates=_certificates_gas(ledger, interval),
            )
        )
        if on_progress is not None:
            on_progress(index + 1, scenario.intervals)

    balances_after = await asyncio.to_thread(market_client.balances, ids)
    grid_after = await asyncio.to_thread(market_client.grid_balance)
    for meter_id, household_result in results.items():
        household_result.chain_balance_before_units = balances_before[meter_id_to_bytes32(meter_id)]
        household_result.chain_balance_after_units = balances_after[meter_id_to_bytes32(meter_id)]
    prepaid_summary = None
    if prepaid is not None:
        prepaid_summary = await asyncio.to_thread(
            prepaid.finish, results, market_client, first_block + 1
        )
    # After the balances are read: collecting the plant's revenue moves its market balance.
    fund = await asyncio.to_thread(
        _ledger_outcome, ledger, market_client, results, scenario.interval_s
    )
    return SimulationResult(
        scenario=scenario.name,
        retail_price=scenario.tariffs.retail_price,
        feed_in_price=scenario.tariffs.feed_in_price,
        mechanism=scenario.mechanism,
        decimals=decimals,
        interval_s=scenario.interval_s,
        households=list(results.values()),
        market=intervals,
        chain_id=market_client.domain.chain_id,
        contracts=_contracts(market_client, ledger),
        grid_balance_change_units=grid_after - grid_before,
        void_intervals={i: v.reason for i, v in sorted(market.void.items())},
        air_conditioners={
            h.config.meter_id: {
                "control": h.config.air_conditioner.control,
                **h.aircon.summary(),
            }
            for h in households
            if h.aircon is not None and h.config.air_conditioner is not None
        },
        prepaid=prepaid_summary,
        fund=fund,
    )


def _contracts(market: EnergyMarketClient, ledger: SimLedger) -> dict[str, str]:
    contracts = {"EnergyMarket": market.address}
    if ledger.certificates is not None:
        contracts["EnergyCertificates"] = ledger.certificates.address
    if ledger.fund is not None:
        contracts["CommunityFund"] = ledger.fund.address
    return contracts


def _certificates_gas(ledger: SimLedger, interval: int) -> int:
    if ledger.certifier is None or interval not in ledger.certifier.issued:
        return 0
    return ledger.certifier.issued[interval].gas_used


def _ledger_outcome(
    ledger: SimLedger,
    market: EnergyMarketClient,
    results: dict[str, HouseholdResult],
    interval_s: int,
) -> FundOutcome | None:
    """Certificates per household and interval from the chain's events; then the plant's
    revenue collected into the fund (a withdrawal request, the market's delay passed on the
    simulation's chain, the withdrawal) and claimed by every backer."""
    if ledger.certificates is not None:
        book = read_book(ledger.certificates, interval_s=interval_s)
        for meter_id, household in results.items():
            issued = book.issued_for_meter(meter_id)
            retired = book.retired_for_meter(meter_id)
            household.intervals = [
                replace(
                    row,
                    certified_wh=issued.get(int(row.interval_start.timestamp()), 0),
                    retired_for_wh=retired.get(int(row.interval_start.timestamp()), 0),
                )
                for row in household.intervals
            ]
    fund = ledger.fund
    if fund is None:
        return None
    w3 = market.w3
    collect(fund)  # asks for the plant's balance beyond its reserve
    w3.provider.make_request("evm_increaseTime", [market.withdrawal_delay + 1])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    collect(fund)  # pays it into the fund and distributes it
    backers = {
        str(ledger.owners[m].address): fund.with_sender(_owner_sender(w3, ledger, m))
        for m in results
        if fund.shares_of(ledger.owners[m].address)
    }
    claimed = claim_all(backers)
    for meter_id, household in results.items():
        account = ledger.owners[meter_id].address
        household.fund_shares = fund.shares_of(account)
        household.fund_revenue_units = claimed.get(account, 0)
    return FundOutcome(
        plant_meter_id=ledger.plant_meter_id or "",
        address=fund.address,
        shares=fund.total_shares(),
        raised_units=fund.raised(),
        distributed_units=fund.total_distributed(),
        claimed_units=fund.total_claimed(),
    )
