"""Prepaid supply inside the community simulation (`sim/community.py` calls this).

It deploys a PrepaidMeter beside the market, registers the prepaid households with it as
their owner and enrols them with their starting credit, runs the operator's PrepaidAgent and
gives each prepaid household's board its PrepaidBoard, keeps the chain's clock on the
simulation's virtual time (the cut-off rules read block time), carries out the scenario's
top-ups when they fall due, and counts, from each simulated meter's physical model, the
intervals its relay was open and the energy it imported meanwhile (which must be zero).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from meterchain.agents.prepaid import PrepaidBoard, PrepaidCheck
from meterchain.agents.runtime import Agent, Bus, Performative
from meterchain.chain.client import EnergyCreditClient, EnergyMarketClient
from meterchain.chain.node import dev_account
from meterchain.chain.sender import TransactionSender
from meterchain.chain.signing import meter_id_to_bytes32
from meterchain.chain.units import from_units, to_units
from meterchain.clock import Clock
from meterchain.config import Household, PrepaidConfig, Scenario
from meterchain.meters.base import Meter
from meterchain.meters.sim.dlms_server import DEFAULT_PASSWORD as DLMS_PASSWORD
from meterchain.meters.sim.physical import PhysicalMeter
from meterchain.model import RelayState
from meterchain.prepaid.agent import PrepaidAgent
from meterchain.prepaid.client import (
    PrepaidMeterClient,
    PrepaidSettings,
    SupplyState,
    deploy_prepaid,
)
from meterchain.prepaid.rules import CutOffRules, Reason, day_number
from meterchain.prepaid.service import PrepaidService
from meterchain.store.db import Store
from meterchain.store.records import Records

if TYPE_CHECKING:
    from meterchain.sim.results import HouseholdResult

log = logging.getLogger(__name__)
AGENT_NAME = "prepaid"


def board_name(meter_id: str) -> str:
    return f"prosumer-{meter_id}"


def set_chain_time(sender: TransactionSender, moment: datetime) -> None:
    """Stamp the next blocks from `moment` on (anvil's evm_setTime): block time is what the
    contract's cut-off rules read, and the simulation's time is virtual."""
    sender.w3.provider.make_request("evm_setTime", [int(moment.timestamp())])  # type: ignore[arg-type]


def settings_of(config: PrepaidConfig, decimals: int, vending_key: str) -> PrepaidSettings:
    return PrepaidSettings(
        emergency_credit=to_units(config.emergency_credit, decimals),
        advance_buffer=to_units(config.advance_buffer, decimals),
        thresholds=tuple(
            to_units(abs(t), decimals) * (-1 if t < 0 else 1) for t in config.thresholds
        ),
        rules=CutOffRules(
            utc_offset_s=round(config.utc_offset_h * 3600),
            cut_from_hour=config.cut_from_hour,
            cut_to_hour=config.cut_to_hour,
            cut_weekdays=config.weekday_mask,
            no_cut_on_holiday_eve=config.no_cut_on_holiday_eve,
        ),
        vending_key=vending_key,
    )


@dataclass
class RelayBook:
    """One prepaid household's relay as its physical meter saw it, interval by interval."""

    relay_off_intervals: int = 0
    import_wh_while_cut: float = 0.0
    start_relay: RelayState = RelayState.ON
    start_import_wh: float = 0.0
    cut_offs: list[str] = field(default_factory=list)  # interval starts (ISO) the relay opened
    reconnects: list[str] = field(default_factory=list)


class SimPrepaid:
    """The prepaid part of one simulation run."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.config = scenario.prepaid
        self.prepaid_ids = [h.meter_id for h in scenario.all_households() if h.prepaid]
        seed = hashlib.sha256(f"meterchain-sim-vending:{scenario.seed}".encode()).digest()
        self.vending_key: LocalAccount = Account.from_key(seed)
        self.client: PrepaidMeterClient | None = None
        self.agent: PrepaidAgent | None = None
        self.books = {meter: RelayBook() for meter in self.prepaid_ids}
        self.done_top_ups: set[tuple[str, int]] = set()
        self.top_up_log: list[dict[str, Any]] = []

    @staticmethod
    def wanted(scenario: Scenario) -> bool:
        return any(h.prepaid for h in scenario.all_households())

    # ---- the chain (called from the simulation's chain set-up, in a thread)

    def deploy(self, sender: TransactionSender, market: EnergyMarketClient) -> str:
        """Deploy PrepaidMeter beside `market` (the sender is its grid) and fund its float."""
        decimals = market.credit.decimals
        address = deploy_prepaid(
            sender, market.address, settings_of(self.config, decimals, self.vending_key.address)
        )
        self.client = PrepaidMeterClient(sender, address)
        if self.config.holidays:
            self.client.set_holidays([day_number(d) for d in self.config.holidays])
        funds = to_units(self.config.float_credit, decimals)
        EnergyCreditClient(sender, market.credit.address).mint(sender.address, funds)
        self.client.fund_float(funds)
        return address

    def owner(self, household: Household, operator: str) -> str:
        """Who the registry records as the meter's owner: the prepaid contract for prepaid
        households (only it may then withdraw their market balance)."""
        assert self.client is not None
        return self.client.address if household.prepaid else operator

    def enrol(self, household: Household) -> None:
        """Enrol a prepaid household and top it up with its starting credit (the operator's
        account pays it, as a utility's counter would)."""
        assert self.client is not None
        client = self.client
        client.enrol(household.meter_id, client.sender.address, never_cut=household.never_cut)
        if household.starting_credit:
            units = to_units(household.starting_credit, client.credit.decimals)
            client.credit.mint(client.sender.address, units)
            client.top_up(household.meter_id, units)

    # ---- the agents

    def board(self, household: Household, meter: Meter, clock: Clock) -> PrepaidBoard | None:
        if not household.prepaid:
            return None
        return PrepaidBoard(
            household.meter_id,
            meter,
            clock,
            never_cut=household.never_cut,
            offline_after_s=2 * self.scenario.interval_s,
        )

    def meter_url(self, household: Household, url: str) -> str:
        """The URL the board reads its meter with: a prepaid DLMS meter is switched by the
        management client (the public one may read, not switch)."""
        if household.prepaid and household.protocol == "dlms":
            return url.replace("client=16", f"client=17&password={DLMS_PASSWORD}")
        return url

    def make_agent(self, bus: Bus, store: Store, clock: Clock, coordinator: str) -> PrepaidAgent:
        assert self.client is not None
        self.agent = PrepaidAgent(
            AGENT_NAME,
            bus,
            prepaid=self.client,
            records=Records(store, AGENT_NAME),
            clock=clock,
            boards={m: board_name(m) for m in self.prepaid_ids},
            coordinator=coordinator,
            poll_s=None,  # the simulation asks for each round
        )
        return self.agent

    # ---- each interval

    def interval_started(self, models: dict[str, PhysicalMeter]) -> None:
        """At an interval's start: the relay and import register of each prepaid meter."""
        for meter, book in self.books.items():
            state = models[meter].state()
            book.start_relay, book.start_import_wh = state.relay, state.import_wh

    def interval_ended(self, models: dict[str, PhysicalMeter], start: datetime) -> None:
        """At its end (before the relay may switch): an interval whose relay was open at its
        start stayed open throughout (relays switch only between intervals)."""
        for meter, book in self.books.items():
            state = models[meter].state()
            if book.start_relay is RelayState.OFF:
                book.relay_off_intervals += 1
                book.import_wh_while_cut += state.import_wh - book.start_import_wh

    def relays_switched(self, models: dict[str, PhysicalMeter], moment: datetime) -> None:
        for meter, book in self.books.items():
            now = models[meter].relay
            if now is not book.start_relay:
                (book.cut_offs if now is RelayState.OFF else book.reconnects).append(
                    moment.isoformat()
                )
                book.start_relay = now

    async def after_delivery(
        self,
        coordinator: Any,
        sender: TransactionSender,
        interval: int,
        end: datetime,
        models: dict[str, PhysicalMeter],
    ) -> None:
        """After the interval's delivery is settled: the agent's round (assessment, updates,
        relays switched by the boards), then the top-ups that fall due by `end`."""
        agent = self.agent
        assert agent is not None and self.client is not None
        await coordinator.wait_for(("prepaid",), interval, 1)
        await coordinator.wait_for(("relay",), interval, agent.updates_sent.get(interval, 0))
        due = [
            (h, top_up)
            for h in self.scenario.all_households()
            if h.prepaid
            for top_up in h.top_ups
            if top_up.at <= end
            and (h.meter_id, int(top_up.at.timestamp())) not in self.done_top_ups
        ]
        for household, top_up in due:
            self.done_top_ups.add((household.meter_id, int(top_up.at.timestamp())))
            result = await asyncio.to_thread(
                self._top_up, sender, household.meter_id, top_up.amount, top_up.via
            )
            self.top_up_log.append(
                {"meter_id": household.meter_id, "at": end.isoformat(), **result}
            )
        if due:
            await coordinator.send(AGENT_NAME, Performative.INFORM, PrepaidCheck(interval=interval))
            await coordinator.wait_for(("prepaid-check",), interval, 1)
            await coordinator.wait_for(("relay",), interval, agent.updates_sent.get(interval, 0))
        self.relays_switched(models, end)

    def _top_up(
        self, sender: TransactionSender, meter_id: str, amount: float, via: str
    ) -> dict[str, Any]:
        assert self.client is not None
        if via == "voucher":
            service = PrepaidService(self.client)
            issued = service.issue_voucher(meter_id, str(amount), self.vending_key)
            result = service.redeem_voucher(meter_id, issued.code)
        else:
            wallet = dev_account(5)
            client = self.client.with_sender(TransactionSender(sender.w3, wallet))
            credit = self.client.credit
            credit.mint(wallet.address, to_units(amount, credit.decimals))
            result = PrepaidService(client).top_up(meter_id, str(amount), wallet)
        log.info("prepaid top-up of %s: %s", meter_id, result.as_json())
        return {"via": via, **result.as_json()}

    # ---- the results

    def finish(
        self,
        results: dict[str, HouseholdResult],
        market: EnergyMarketClient,
        from_block: int,
    ) -> dict[str, Any]:
        """Fill the prepaid households' results; the run's prepaid summary for the report."""
        assert self.client is not None
        decimals = market.credit.decimals
        statuses = self.client.statuses(self.prepaid_ids)
        for meter, book in self.books.items():
            result = results[meter]
            result.prepaid = True
            result.relay_off_intervals = book.relay_off_intervals
            result.import_wh_while_cut = round(book.import_wh_while_cut, 3)
            raw = meter_id_to_bytes32(meter)
            deposits = market.events("Deposited", from_block=from_block, meterId=raw)
            result.deposited_units = sum(int(e["args"]["amount"]) for e in deposits)
            status = statuses[raw]
            result.prepaid_credit_after = float(from_units(status.credit, decimals))
            result.prepaid_state_after = status.state.label
            result.cut_offs = list(book.cut_offs)
            result.reconnects = list(book.reconnects)
        shortfalls = market.events("Shortfall", from_block=from_block)
        prepaid = set(self.prepaid_ids)
        written_off = sum(
            int(e["args"]["amount"])
            for e in shortfalls
            if bytes(e["args"]["meterId"]).rstrip(b"\0").decode() in prepaid
        )
        changes = [
            {
                "meter_id": bytes(e["args"]["meterId"]).rstrip(b"\0").decode(),
                "at": datetime.fromtimestamp(
                    market.w3.eth.get_block(e["blockNumber"])["timestamp"], UTC
                ).isoformat(),
                "state": SupplyState(int(e["args"]["state"])).label,
                "reason": Reason(int(e["args"]["reason"])).name.lower(),
                "credit": float(from_units(int(e["args"]["credit"]), decimals)),
            }
            for e in self.client.events("StateChanged", from_block=from_block)
        ]
        return {
            "contract": self.client.address,
            "state_changes": changes,
            "float_after": float(from_units(self.client.float_balance(), decimals)),
            "written_off": float(from_units(written_off, decimals)),
            "top_ups": self.top_up_log,
            "warnings": self.agent.warnings_sent if self.agent is not None else 0,
        }


def started_agents(prepaid: SimPrepaid | None) -> Sequence[Agent]:
    return [] if prepaid is None or prepaid.agent is None else [prepaid.agent]
