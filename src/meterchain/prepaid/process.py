"""The deployed prepaid process: `meterchain prepaid run --config prepaid.toml`, at the operator,
beside the market agent; and the `[prepaid]` section of a board's config.

The PrepaidAgent reacts to the market's DeliveryNotice and polls the chain between deliveries;
its own ticker adds one round a little after each interval's settlement, so a lost notice
only delays an assessment, never skips it (the outbox key per interval makes a second
assessment of the same interval the same transaction).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field

from meterchain.agents.messages import Tick
from meterchain.agents.prepaid import PrepaidCheck
from meterchain.agents.services import Running, role_bus
from meterchain.agents.ticker import PhaseSpec, Ticker, build_clock
from meterchain.chain.errors import DeploymentError
from meterchain.chain.keystore import load_keystore, read_password
from meterchain.roles import (
    DEFAULT_DEPLOYMENT,
    BrokerConfig,
    ClockConfig,
    KeyConfig,
    RoleModel,
    ScheduleConfig,
)
from meterchain.store.bus_spool import MessageSpool
from meterchain.store.db import open_store
from meterchain.store.records import Records

log = logging.getLogger(__name__)
SAFETY_ROUND_AFTER_SETTLE_S = 60.0


class PrepaidAgentConfig(RoleModel):
    """`meterchain prepaid run --config prepaid.toml`: the operator's prepaid agent."""

    name: str = "prepaid"
    community: str = "community"
    rpc_url: str | None = Field(default=None, description="default: the deployment file's")
    deployment: Path = DEFAULT_DEPLOYMENT
    store: str = "sqlite:///var/prepaid.db"
    key: KeyConfig
    meters: list[str] = Field(min_length=1, description="the prepaid meters' ids")
    boards: dict[str, str] = Field(
        default_factory=dict, description="meter id -> board agent name (default prosumer-ID)"
    )
    alarms_to: str | None = None
    poll_s: float = Field(default=15.0, gt=0, description="chain reads between deliveries")
    chain_retry_max_s: float = Field(default=5.0, gt=0)
    broker: BrokerConfig = BrokerConfig()
    clock: ClockConfig = ClockConfig()
    schedule: ScheduleConfig = ScheduleConfig()


def build_prepaid(config: PrepaidAgentConfig) -> Running:
    """The prepaid agent: the PrepaidMeter of the deployment, its own key and outbox."""
    from meterchain.chain.deployment import load_deployment
    from meterchain.chain.node import connect
    from meterchain.chain.sender import TransactionSender
    from meterchain.prepaid.agent import PrepaidAgent
    from meterchain.prepaid.client import PrepaidMeterClient
    from meterchain.store.outbox import Outbox

    deployment = load_deployment(config.deployment)
    rpc_url = config.rpc_url or deployment.rpc_url
    w3 = connect(rpc_url)
    if int(w3.eth.chain_id) != deployment.chain_id:
        raise DeploymentError(
            f"{rpc_url} is chain {w3.eth.chain_id}, but {config.deployment} is for chain "
            f"{deployment.chain_id}: point rpc_url at the right node"
        )
    key = config.key
    account = load_keystore(
        key.keystore, read_password(env=key.password_env, file=key.password_file)
    )
    store = open_store(config.store)
    try:
        sender = TransactionSender(w3, account, outbox=Outbox(store))
        sender.resume_outbox()
        client = PrepaidMeterClient(sender, deployment.address("PrepaidMeter"))
    except BaseException:
        store.close()
        raise
    clock = build_clock(config.clock)
    bus = role_bus(config, MessageSpool(store, config.name), config.name, clock=clock)
    agent = PrepaidAgent(
        config.name,
        bus,
        prepaid=client,
        records=Records(store, config.name),
        clock=clock,
        boards={m: config.boards.get(m, f"prosumer-{m}") for m in config.meters},
        community=config.community,
        alarms_to=config.alarms_to,
        poll_s=config.poll_s,
        chain_retry_max_s=config.chain_retry_max_s,
        from_block=deployment.deployed_at_block,
    )
    schedule = config.schedule
    after_settle = schedule.interval_s + schedule.settle_delay_s + SAFETY_ROUND_AFTER_SETTLE_S

    async def post(tick: Tick) -> None:
        agent.post_local(PrepaidCheck(interval=int(tick.interval_start.timestamp()), assess=True))

    ticker = Ticker(
        clock,
        interval_s=schedule.interval_s,
        phases=[PhaseSpec("settle", after_settle, None)],
        post=post,
        speed=config.clock.speed,
        catch_up_intervals=schedule.catch_up_intervals,
    )
    return Running(
        agent,
        bus,
        ticker,
        store,
        f"prepaid agent {config.name} for PrepaidMeter {client.address} on chain "
        f"{deployment.chain_id} ({rpc_url}), {len(config.meters)} meters, broker {bus.where}",
    )
