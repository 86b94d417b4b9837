"""The deployed processes: a board's agent, the market and the grid, each on its own host.

Each process builds its agent from its role's config, connects to the MQTT broker, opens its
own store (so a restart carries on where it stopped) and runs a Ticker on the community's
clock until it is told to stop. A board needs its meter, its key and the market's EIP-712
domain, never the chain; the market needs the chain, its operator key and the deployment file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from meterchain.agents.bus_mqtt import MqttBus
from meterchain.agents.messages import TariffNotice, Tick
from meterchain.agents.runtime import Agent
from meterchain.agents.ticker import (
    PhaseSpec,
    Ticker,
    board_phases,
    build_clock,
    grid_phases,
    market_phases,
)
from meterchain.chain.errors import ChainError, DeploymentError, KeystoreError
from meterchain.chain.keystore import credential_file, load_keystore, read_password
from meterchain.clock import Clock
from meterchain.config import ConfigError, Tariffs
from meterchain.roles import (
    BoardConfig,
    BrokerConfig,
    ClockConfig,
    GridConfig,
    KeyConfig,
    MarketConfig,
    MarketRef,
    ScheduleConfig,
)
from meterchain.store.bus_spool import MemorySpool, MessageSpool, Spool
from meterchain.store.db import Store, open_store
from meterchain.store.records import Records

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from meterchain.agents.board_config import ConfiguredPlanner
    from meterchain.agents.planning import Forecast
    from meterchain.chain.signing import MarketDomain

# Each role imports only what it runs: a board never loads web3, the grid neither web3 nor
# the optimiser. Start-up time matters on a board, and after a restart.

log = logging.getLogger(__name__)

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"

Announce = Callable[[str], None]


def _tariff_notice(tariffs: Tariffs) -> TariffNotice:
    return TariffNotice(retail_price=tariffs.retail_price, feed_in_price=tariffs.feed_in_price)


def market_domain(ref: MarketRef) -> MarketDomain:
    """The EIP-712 domain a board signs under, from its config or the deployment file."""
    from meterchain.chain.signing import MarketDomain

    if ref.chain_id is not None and ref.address is not None:
        return MarketDomain(chain_id=ref.chain_id, market_address=ref.address)
    if ref.deployment is None:
        raise DeploymentError(
            "the board does not know its market: set [market] deployment = FILE, or "
            "[market] chain_id and address"
        )
    from meterchain.chain.deployment import load_deployment

    deployment = load_deployment(ref.deployment)
    return MarketDomain(
        chain_id=deployment.chain_id, market_address=deployment.address("EnergyMarket")
    )


def _unlock(key: KeyConfig) -> LocalAccount:
    password = read_password(
        env=key.password_env, file=key.password_file, credential=key.password_credential
    )
    return load_keystore(key.keystore, password)


@dataclass
class Running:
    """One process's parts, for `serve` to start and stop."""

    agent: Agent
    bus: MqttBus
    ticker: Ticker
    store: Store | None
    description: str
    companions: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)

    def close_store(self) -> None:
        if self.store is not None:
            self.store.close()


async def serve(running: Running, stop: asyncio.Event, announce: Announce | None = None) -> None:
    """Run the agent and its ticker until `stop` is set (or either fails); then shut down."""
    try:
        await running.agent.start()
    except BaseException:
        await running.bus.close()
        running.close_store()
        raise
    await drain_mailbox(running.agent)
    if announce is not None:
        announce(f"{running.description}: ready")
    tasks: list[asyncio.Task[None]] = [
        asyncio.create_task(running.ticker.run(), name="ticker"),
        *running.agent._tasks,
        *(asyncio.create_task(run(), name="companion") for run in running.companions),
    ]
    stopper = asyncio.create_task(stop.wait(), name="stop")
    try:
        pending: set[asyncio.Task[Any]] = {*tasks, stopper}
        while stopper in pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:  # an agent's `act` may finish early; a failure ends the process
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error
    finally:
        stopper.cancel()
        extra = [tasks[0], *tasks[len(tasks) - len(running.companions) :]]
        for task in extra:
            task.cancel()
        for task in extra:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await running.agent.stop()
        await running.bus.close()
        running.close_store()


async def drain_mailbox(agent: Agent, *, quiet_s: float = 0.3, max_s: float = 3.0) -> None:
    """Let what the broker kept for a restarting agent arrive before its ticker catches up.

    Orders queued for a market that was down must be in its book before the late gate
    closure its ticker is about to post; so wait until the mailbox has been quiet a moment.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_s
    seen = -1
    while loop.time() < deadline:
        if agent.envelopes_taken == seen and agent.mailbox_empty:
            return
        seen = agent.envelopes_taken
        await asyncio.sleep(quiet_s)


class BusRole(Protocol):
    """What a role's config says about its bus: the broker, and the clock and schedule that
    set how often a lost broker is tried again."""

    @property
    def broker(self) -> BrokerConfig: ...
    @property
    def clock(self) -> ClockConfig: ...
    @property
    def schedule(self) -> ScheduleConfig: ...


def role_bus(
    config: BusRole,
    spool: Spool | None,
    name: str,
    *,
    clock: Clock | None = None,
    wait_for_broker: bool = True,
) -> MqttBus:
    """The process's bus; what it sends and takes waits in `spool` (its store) for the broker."""
    broker = config.broker
    credentials = None
    if broker.username is not None:
        if broker.username != name:
            raise ConfigError(
                f"[broker] username is {broker.username!r} but the agent is {name!r}: the "
                "community broker lets each agent write only under its own name, so log in as "
                f"{name!r} (with that agent's credential from `meterchain broker config`)"
            )
        credentials = (broker.username, _broker_password(broker))
    # Try again at least ten times an interval, however fast the clock runs (5 s at most).
    interval_real_s = config.schedule.interval_s / config.clock.speed
    return MqttBus(
        broker.host,
        broker.port,
        spool=spool,
        credentials=credentials,
        tls_ca_file=None if broker.tls_ca_file is None else str(broker.tls_ca_file),
        connect_timeout_s=broker.connect_timeout_s,
        backoff_max_s=min(5.0, max(0.2, interval_real_s / 10)),
        wait_for_broker=wait_for_broker,
        clock=clock,
    )


def _broker_password(broker: BrokerConfig) -> str:
    """The broker password from [broker] password_credential (systemd), password_file, else
    the variable password_env."""
    path = broker.password_file
    if broker.password_credential is not None:
        try:
            path = credential_file(broker.password_credential)
        except KeystoreError as exc:
            raise ConfigError(str(exc)) from None
    if path is not None:
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the broker password file {path}: {exc.strerror}"
            ) from None
        if lines and lines[0]:
            return lines[0]
        raise ConfigError(f"the broker password file {path} is empty")
    password = os.environ.get(broker.password_env)
    if not password:
        raise ConfigError(
            f"[broker] username is {broker.username!r} but no password: set the environment "
            f"variable {broker.password_env} or [broker] password_file"
        )
    return password


def _ticker(
    clock: Clock, config: BoardConfig | MarketConfig | GridConfig, phases: list[PhaseSpec],
    agent: Agent,
) -> Ticker:  # fmt: skip
    async def post(tick: Tick) -> None:
        agent.post_local(tick)

    return Ticker(
        clock,
        interval_s=config.schedule.interval_s,
        phases=phases,
        post=post,
        speed=config.clock.speed,
        catch_up_intervals=config.schedule.catch_up_intervals,
    )


def board_planner(config: BoardConfig, forecast: Forecast) -> ConfiguredPlanner:
    """A board's planner: its `[site.der]` (batteries, daily loads, thermal loads, tariffs,
    limits) with the battery and relay loads of its `[devices]`, bounded by the trading
    settings the web interface sends."""
    from meterchain.agents.board_config import ConfiguredPlanner
    from meterchain.der.equipment import with_devices
    from meterchain.der.site import Battery, Site

    devices, interval_s = config.devices, config.schedule.interval_s
    battery = None
    if devices.battery is not None:
        assert devices.battery_capacity_wh is not None and devices.battery_max_w is not None
        battery = Battery(
            capacity_wh=devices.battery_capacity_wh,
            max_charge_power_w=devices.battery_max_w,
            max_discharge_power_w=devices.battery_max_w,
        )
    return ConfiguredPlanner(
        Site(name=config.meter_id, battery=battery),
        forecast,
        meter_id=config.meter_id,
        horizon_steps=config.site.horizon_steps,
        step_s=interval_s,
        equipment=with_devices(config.site.der, devices, interval_s),
    )


def build_board(config: BoardConfig) -> Running:
    """A board's ProsumerAgent: its meter, its key, its store, the market's domain.

    The key is unlocked first, before the agent's modules are imported: the key derivation's
    memory is given back before the process grows, so it does not add to the peak.
    """
    signer = _unlock(config.key)

    from meterchain.agents.board_config import BoardConfigHandler
    from meterchain.agents.forecasting import BoardForecast
    from meterchain.agents.prosumer import ProsumerAgent
    from meterchain.board.disk import DiskGuard
    from meterchain.board.skew import CorrectedClock, SkewEstimator
    from meterchain.board.supervisor import BoardSupervisor
    from meterchain.der.equipment import with_thermal_relays
    from meterchain.devices.board import open_board_devices
    from meterchain.meters.registry import open_meter
    from meterchain.store.retention import Retention

    domain = market_domain(config.market)
    store = open_store(config.store, durable=True)
    # The board's clock, corrected by how far its host's clock is from the market's.
    skew = SkewEstimator({config.market_agent, "grid"})
    clock = CorrectedClock(build_clock(config.clock), skew, config.clock.speed)
    name = config.agent_name
    # A board starts without the broker (after a power cut in an outage, say) and works on.
    bus = role_bus(config, MessageSpool(store, name), name, clock=clock, wait_for_broker=False)
    bus.on_receive = lambda envelope: skew.observe(envelope.sender, envelope.sent_at)
    records = Records(store, name)
    interval_s = config.schedule.interval_s
    planner = board_planner(config, BoardForecast(config.site, records, step_s=interval_s))
    planner.handler = BoardConfigHandler(
        records, planner.site, step_s=interval_s, timezone=config.site.timezone
    )
    devices = config.devices
    meter = open_meter(config.meter_url, timeout_s=config.meter_timeout_s, retries=1)
    prepaid = None
    if config.prepaid.enabled:  # the relay follows the chain's prepaid credit
        from meterchain.agents.prepaid import PrepaidBoard

        prepaid = PrepaidBoard(config.meter_id, meter, clock, never_cut=config.prepaid.never_cut,
                               offline_after_s=config.prepaid.offline_after_s)  # fmt: skip
    agent = ProsumerAgent(
        name,
        bus,
        meter_id=config.meter_id,
        meter=meter,
        signer=signer,
        domain=domain,
        planner=planner,
        records=records,
        clock=clock,
        market=config.market_agent,
        community=config.community,
        meter_retries=config.meter_retries,
        decimals=config.decimals,
        # [devices] and the relays of [[site.der.thermal]]
        devices=open_board_devices(with_thermal_relays(devices, config.site.der)),
        alarms_to=devices.alarms_to,
        prepaid=prepaid,
    )
    agent.tariffs = _tariff_notice(config.tariffs)
    agent.monitor = config.monitor_agent
    # A market that was down still clears an interval until it ends, and settles a delivery
    # late for up to its catch-up window: past those, the board's messages are of no use.
    schedule = config.schedule
    agent.order_expiry_s = schedule.interval_s
    agent.reading_expiry_s = (
        schedule.interval_s + schedule.settle_delay_s + schedule.catch_up_intervals * interval_s
    )
    ticker = _ticker(clock, config, board_phases(config.schedule), agent)
    database = store.engine.url.database
    supervisor = BoardSupervisor(
        agent,
        bus,
        clock=clock,
        interval_s=interval_s,
        speed=config.clock.speed,
        guard=DiskGuard(Path(database).resolve().parent)
        if store.engine.url.get_backend_name() == "sqlite" and database
        else None,
        retention=Retention(store, name, days=config.retention_days),
        period_s=min(5.0, max(0.2, interval_s / config.clock.speed / 4)),
        alive=lambda: all(not task.done() for task in agent._tasks),
    )
    return Running(
        agent,
        bus,
        ticker,
        store,
        f"board agent {name} for meter {config.meter_id} ({config.meter_url}) on broker "
        f"{bus.where}, signing as {signer.address} for market {domain.market_address} on "
        f"chain {domain.chain_id}",
        companions=[supervisor.run],
    )


def build_market(config: MarketConfig) -> Running:
    """The market agent: the chain through the operator's key, the deployment, its outbox."""
    from meterchain.agents.market import MarketAgent
    from meterchain.chain.client import EnergyMarketClient
    from meterchain.chain.deployment import load_deployment
    from meterchain.chain.node import connect
    from meterchain.chain.sender import TransactionSender
    from meterchain.market.clearing import Mechanism
    from meterchain.store.outbox import Outbox

    deployment = load_deployment(config.deployment)
    rpc_url = config.rpc_url or deployment.rpc_url
    w3 = connect(rpc_url)
    chain_id = int(w3.eth.chain_id)
    if chain_id != deployment.chain_id:
        raise DeploymentError(
            f"{rpc_url} is chain {chain_id}, but the deployment file {config.deployment} is for "
            f"chain {deployment.chain_id}: point rpc_url at the right node or redeploy"
        )
    operator = _unlock(config.key)
    store = open_store(config.store)
    try:
        sender = TransactionSender(w3, operator, outbox=Outbox(store))
        finished = sender.resume_outbox()
        if finished:
            log.info("finished %d transactions left over from the last run", len(finished))
        client = EnergyMarketClient(sender, deployment.address("EnergyMarket"))
        if not client.has_role("OPERATOR_ROLE", operator.address):
            raise ChainError(
                f"{operator.address} (from {config.key.keystore}) lacks OPERATOR_ROLE on the "
                f"market {client.address}: use the operator's keystore, or grant it the role"
            )
        decimals = client.credit.decimals
    except BaseException:
        store.close()
        raise

    clock = build_clock(config.clock)
    bus = role_bus(config, MessageSpool(store, config.name), config.name, clock=clock)
    agent = MarketAgent(
        config.name,
        bus,
        market=client,
        domain=client.domain,
        records=Records(store, config.name),
        tariffs=_tariff_notice(config.tariffs),
        mechanism=Mechanism(config.mechanism),
        community=config.community,
        decimals=decimals,
        chain_retry_max_s=config.chain_retry_max_s,
    )
    agent.monitor = config.monitor_agent
    if "EnergyCertificates" in deployment.contracts:  # issue 11: certify each delivery
        from meterchain.agents.certificates import issue_after_delivery
        from meterchain.chain.ledger_clients import EnergyCertificatesClient
        from meterchain.ledger.issuer import CertificateIssuer

        certificates = EnergyCertificatesClient(sender, deployment.address("EnergyCertificates"))
        issuer = CertificateIssuer(certificates, client)
        agent.after_delivery.append(issue_after_delivery(issuer, config.name))
    return Running(
        agent,
        bus,
        _ticker(clock, config, market_phases(config.schedule), agent),
        store,
        f"market agent {config.name} for {client.address} on chain {chain_id} ({rpc_url}), "
        f"operator {operator.address}, broker {bus.where}",
    )


def build_grid(config: GridConfig) -> Running:
    """The grid agent: tariffs and feeder limits, from its config; it keeps no state."""
    from meterchain.agents.grid import GridAgent

    clock = build_clock(config.clock)
    # Tariffs are announced again every interval: nothing to keep across a restart.
    bus = role_bus(config, MemorySpool(config.name), config.name, clock=clock)
    agent = GridAgent(
        config.name,
        bus,
        tariffs=_tariff_notice(config.tariffs),
        prosumers=list(config.prosumers),
        feeder_export_limit_w=config.feeder_export_limit_w,
        community=config.community,
    )
    return Running(
        agent,
        bus,
        _ticker(clock, config, grid_phases(config.schedule), agent),
        None,
        f"grid agent {config.name}: retail {config.tariffs.retail_price:g}, feed-in "
        f"{config.tariffs.feed_in_price:g} per kWh, broker {bus.where}",
    )
