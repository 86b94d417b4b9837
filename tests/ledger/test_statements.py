"""Monthly statements: their totals equal what the chain moved, to the smallest unit; their
hash is recorded on chain once; what is owed is paid with a permit; they print in pt-BR and
English."""

from __future__ import annotations

import pytest
from contract_suite import (
    ADMIN,
    GRID,
    INTERVAL,
    MAX_POWER_W,
    OUTSIDER,
    TREASURY,
    Meter,
    Suite,
    board_key,
    deploy_test_suite,
    enrol,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_suite import (
    Sale,
    billing,
    certificates,
    later,
    now,
    register_pv,
    settle,
    snapshot,
)
from web3 import Web3

from meterchain.chain.client import MeterKind
from meterchain.chain.node import dev_account
from meterchain.ledger.period import Month
from meterchain.ledger.statement_html import render_statement_html
from meterchain.ledger.statements import (
    build_statement,
    pay_from_meter_balance,
    read_statement_inputs,
    record_statement,
    statement_hash,
)

ALICE, BOB, CAROL, DAVE, ERIN = 0, 1, 2, 3, 4
MONTH = Month.parse("2026-11", "America/Fortaleza")
SMALL_DEPOSIT = 100  # erin's balance: 1.25 kWh at retail, then shortfalls


@pytest.fixture(scope="module")
def deployed(w3: Web3) -> Suite:
    suite = deploy_test_suite(
        w3,
        kinds=[MeterKind.PROSUMER, MeterKind.PROSUMER, MeterKind.CONSUMER, MeterKind.PROSUMER],
    )
    erin = Meter("erin", board_key(ERIN), dev_account(8))
    enrol(suite, erin.name, erin.key.address, erin.owner.address, MeterKind.CONSUMER)
    suite.meters.append(erin)
    suite.credit(TREASURY).mint(erin.owner.address, SMALL_DEPOSIT)
    suite.market(erin.owner).deposit(erin.name, SMALL_DEPOSIT)
    register_pv(suite, suite.meters[ALICE])
    return suite


def statement(suite: Suite, meter: int) -> dict:  # type: ignore[type-arg]
    inputs = read_statement_inputs(
        suite.market(OUTSIDER),
        suite.meters[meter].name,
        MONTH,
        certificates=certificates(suite, OUTSIDER),
        billing=billing(suite, OUTSIDER),
    )
    return build_statement(inputs)


@st.composite
def months(draw: st.DrawFn) -> list[tuple[list[Sale], dict[int, tuple[int, int]], int]]:
    """A few intervals: sales between prosumers and consumers, every meter's flows (or no
    reading), and a deposit made to erin before the interval."""
    intervals = []
    for _ in range(draw(st.integers(1, 3))):
        sales = draw(
            st.lists(
                st.builds(
                    Sale,
                    buyer=st.sampled_from([CAROL, DAVE]),
                    seller=st.sampled_from([ALICE, BOB]),
                    wh=st.integers(1, 1_500),
                    price=st.integers(30, 80),
                ),
                max_size=3,
            )
        )
        flows = {}
        for meter in range(5):
            if draw(st.booleans()) or meter == ERIN:
                exported = 0 if meter in (CAROL, ERIN) else draw(st.integers(0, 2_000))
                flows[meter] = (draw(st.integers(0, 2_400)), exported)
        intervals.append((sales, flows, draw(st.sampled_from([0, 0, 300]))))
    return intervals


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=months())
def test_statement_totals_equal_the_chains_movements(
    deployed: Suite, plan: list[tuple[list[Sale], dict[int, tuple[int, int]], int]]
) -> None:
    suite = deployed
    with snapshot(suite.w3):
        suite.nonces.clear()
        market = suite.market(OUTSIDER)
        before = {m.name: market.balance_of(m.name) for m in suite.meters}
        deposits = {m.name: 0 for m in suite.meters}
        registers = {i: (0, 0) for i in range(5)}
        for step, (sales, flows, deposit) in enumerate(plan):
            if deposit:
                erin = suite.meters[ERIN]
                suite.credit(TREASURY).mint(erin.owner.address, deposit)
                suite.market(erin.owner).deposit(erin.name, deposit)
                deposits[erin.name] += deposit
            interval = INTERVAL + 900 * step
            settle(suite, sales, flows, interval=interval, starts=registers)
            for meter, (imported, exported) in flows.items():
                registers[meter] = (registers[meter][0] + imported, registers[meter][1] + exported)
        for index, meter in enumerate(suite.meters):
            document = statement(suite, index)
            moved = market.balance_of(meter.name) - before[meter.name] - deposits[meter.name]
            totals = document["totals"]
            assert totals["paid_from_balance_units"] == -moved
            assert (
                sum(line["amount_units"] for line in document["lines"]) == -totals["charges_units"]
            )
            assert (
                totals["charges_units"] == totals["paid_from_balance_units"] + totals["owed_units"]
            )
            shortfalls = sum(
                int(e["args"]["amount"]) for e in market.events("Shortfall", meterId=meter.id)
            )
            assert totals["owed_units"] == shortfalls
            delivered = sum(flows.get(index, (0, 0))[0] for _, flows, _ in plan)
            assert document["energy"]["imported_wh"] == delivered


def test_a_shortfall_is_owed_recorded_on_chain_and_paid_with_a_permit(
    deployed: Suite, chain_snapshot: str
) -> None:
    """Erin imports more than her balance pays: the statement says she owes the rest; the
    utility records the statement's hash; her friend pays it with a permit."""
    suite = deployed
    settle(suite, [], {ERIN: (5_000, 0)})  # 400 cents at retail; she has 100
    document = statement(suite, ERIN)
    assert document["totals"]["charges_units"] == 400
    assert document["totals"]["paid_from_balance_units"] == SMALL_DEPOSIT
    assert document["totals"]["owed_units"] == 300
    record_statement(billing(suite, ADMIN), document, MONTH)
    digest, owed, paid = billing(suite).statement("erin", MONTH.number)
    assert (digest, owed, paid) == (statement_hash(document), 300, 0)
    friend = dev_account(9)
    suite.credit(TREASURY).mint(friend.address, 300)
    grid_before = suite.market().grid_balance()
    billing(suite, friend).pay_with_permit("erin", MONTH.number, 300, friend, now(suite) + 600)
    assert suite.market(GRID).grid_balance() - grid_before == 300
    again = statement(suite, ERIN)
    assert again["statement_hash"] == document["statement_hash"]  # payments are not hashed
    assert again["payment"]["outstanding_units"] == 0


def test_a_statement_names_local_trades_certificates_and_prints_in_both_languages(
    deployed: Suite, chain_snapshot: str
) -> None:
    suite = deployed
    certificates(suite, suite.meters[CAROL].owner).set_auto_retirement("carol", "Casa da Carol")
    settle(
        suite,
        [Sale(buyer=CAROL, seller=ALICE, wh=1_000, price=50)],
        {ALICE: (0, 1_500), CAROL: (1_200, 0)},
    )
    certificates(suite, OUTSIDER).issue_interval(suite.market(), INTERVAL)
    alice, carol = statement(suite, ALICE), statement(suite, CAROL)
    assert alice["local_sales"] == {"wh": 1_000, "amount": 0.5, "average_price_per_kwh": 0.5}
    assert carol["local_purchases"]["wh"] == 1_000
    assert alice["certificates"]["issued_wh"] == 1_500
    assert alice["certificates"]["received_wh"] == 500  # 1 kWh went with the sale
    assert carol["certificates"]["retired_for_meter_wh"] == 1_000
    lines = {line["key"]: line for line in carol["lines"]}
    assert lines["grid_import"]["wh"] == 200
    assert lines["local_purchases"]["amount_units"] == -50
    english = render_statement_html(carol, "en")
    portuguese = render_statement_html(carol, "pt-BR")
    assert "Energy statement" in english and "Local purchases" in english
    assert "Extrato de energia" in portuguese and "Compras locais" in portuguese
    assert "1,200" in portuguese  # 1.2 kWh, written the Brazilian way
    assert carol["statement_hash"] in english and carol["statement_hash"] in portuguese
    with pytest.raises(ValueError, match="language 'fr'"):
        render_statement_html(carol, "fr")  # type: ignore[arg-type]


def test_the_hash_covers_every_figure(deployed: Suite, chain_snapshot: str) -> None:
    settle(deployed, [], {CAROL: (700, 0)})
    document = statement(deployed, CAROL)
    changed = {**document, "energy": {**document["energy"], "imported_wh": 1}}
    assert statement_hash(changed) != statement_hash(document)
    assert MAX_POWER_W  # the suite's meters carry 5 kWh per interval at most


def test_the_owner_pays_what_is_owed_from_the_meters_balance_in_two_steps(
    deployed: Suite, chain_snapshot: str
) -> None:
    """Erin tops her meter up after a shortfall, then pays the statement from its balance:
    the market's withdrawal delay separates asking from paying."""
    suite = deployed
    erin = suite.meters[ERIN]
    settle(suite, [], {ERIN: (5_000, 0)})
    record_statement(billing(suite, ADMIN), statement(suite, ERIN), MONTH)
    suite.credit(TREASURY).mint(erin.owner.address, 1_000)
    suite.market(erin.owner).deposit(erin.name, 1_000)
    market, bill = suite.market(erin.owner), billing(suite, erin.owner)
    first = pay_from_meter_balance(market, bill, erin.name, MONTH, erin.owner)
    assert (first.paid_units, first.requested_units) == (0, 300)
    again = pay_from_meter_balance(market, bill, erin.name, MONTH, erin.owner)
    assert again.paid_units == 0  # still waiting for the delay
    later(suite, market.withdrawal_delay)
    done = pay_from_meter_balance(market, bill, erin.name, MONTH, erin.owner)
    assert done.paid_units == 300
    assert market.balance_of(erin.name) == 700
    assert statement(suite, ERIN)["payment"]["outstanding_units"] == 0
