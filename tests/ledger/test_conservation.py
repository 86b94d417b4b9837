"""Property tests of the ledger's conservation laws, on the real contracts.

- Certificates: certified Wh ≤ exported Wh, per meter and interval; what is retired for local
  buyers at issuance is never more than the sellers sold and exported, nor more than each buyer
  bought and imported; held + retired = issued for every certificate.
- Community fund: Σ claims ≤ revenue, every holder's earnings are its exact pro-rata share to
  within one smallest unit over any mix of distributions, transfers and claims, so the dust
  left behind is at most one unit per holder.

(Statement totals against the chain's movements: tests/ledger/test_statements.py.)
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from contract_suite import INTERVAL, OUTSIDER, TREASURY, Suite
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_suite import (
    ALICE,
    BACKERS,
    BOB,
    CAROL,
    DAVE,
    DAY,
    Plant,
    Sale,
    certificates,
    deploy_plant,
    deploy_street,
    later,
    settle,
    snapshot,
)
from web3 import Web3

from meterchain.chain.ledger_clients import decode_auto_retirements, decode_certificates
from meterchain.chain.node import dev_account

SELLERS = (ALICE, BOB, DAVE)  # dave is a prosumer but no registered device
BUYERS = (CAROL, DAVE, BOB)
CAPACITY_WH = {ALICE: 5_000, BOB: 2_000}  # rated power × 15 minutes
PROPERTY = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def market_suite(w3: Web3) -> Suite:
    return deploy_street(w3)


@st.composite
def intervals(draw: st.DrawFn) -> tuple[list[Sale], dict[int, tuple[int, int]], set[int]]:
    """Sales between disjoint sellers and buyers, every meter's metered flows, and which
    buyers asked for auto-retirement."""
    seller_count = draw(st.integers(1, 2))
    sellers = draw(st.permutations(SELLERS))[:seller_count]
    buyers = [b for b in BUYERS if b not in sellers]
    sales = draw(
        st.lists(
            st.builds(
                Sale,
                buyer=st.sampled_from(buyers),
                seller=st.sampled_from(sellers),
                wh=st.integers(1, 2_000),
                price=st.integers(30, 80),
            ),
            max_size=4,
        )
    )
    energy = st.integers(0, 2_400)
    flows = {meter: (draw(energy), draw(energy)) for meter in range(4)}
    flows[CAROL] = (flows[CAROL][0], 0)  # a consumer exports nothing
    opted = set(draw(st.sets(st.sampled_from(buyers))))
    return sales, flows, opted


@PROPERTY
@given(case=intervals())
def test_certificates_never_exceed_the_energy_exported_sold_or_bought(
    market_suite: Suite, case: tuple[list[Sale], dict[int, tuple[int, int]], set[int]]
) -> None:
    sales, flows, opted = case
    suite = market_suite
    with snapshot(suite.w3):
        suite.nonces.clear()
        for buyer in opted:
            certificates(suite, suite.meters[buyer].owner).set_auto_retirement(
                suite.meters[buyer].name, f"house {buyer}"
            )
        settle(suite, sales, flows)
        client = certificates(suite, OUTSIDER)
        receipt = client.issue_interval(suite.market(), INTERVAL)
        (event,) = client.events_in(receipt, "IntervalCertified")
        issued = {c.id: c for c in decode_certificates(bytes(event["args"]["certificates"]))}
        pieces = decode_auto_retirements(bytes(event["args"]["autoRetirements"]))

        sold = {m: sum(s.wh for s in sales if s.seller == m) for m in range(4)}
        bought = {m: sum(s.wh for s in sales if s.buyer == m) for m in range(4)}
        for index, meter in enumerate(suite.meters):
            exported = flows[index][1]
            certificate = client.certificate_id(meter.name, INTERVAL)
            record = issued.get(certificate)
            issued_wh = record.certified_wh if record else 0
            retired_wh = record.retired_wh if record else 0
            assert issued_wh <= exported
            if index in (ALICE, BOB) and exported:
                assert issued_wh == min(exported, CAPACITY_WH[index])
                assert client.certificate(certificate) == (meter.id, INTERVAL, True)
            else:
                assert issued_wh == 0
            assert retired_wh <= min(sold[index], exported)
            if issued_wh:
                held = client.balance_of(meter.owner.address, certificate)
                assert held + retired_wh == issued_wh
        for index, meter in enumerate(suite.meters):
            got = sum(p.wh for p in pieces if p.buyer_meter_id == meter.id)
            assert got <= min(bought[index], flows[index][0])
            if index not in opted:
                assert got == 0
        assert sum(p.wh for p in pieces) == event["args"]["autoRetiredWh"]


@pytest.fixture(scope="module")
def plant(w3: Web3) -> Plant:
    return deploy_plant(w3)


HOLDERS = (*BACKERS, OUTSIDER)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("revenue"), st.integers(1, 10_000)),
        st.tuples(
            st.just("transfer"),
            st.sampled_from(HOLDERS),
            st.sampled_from(HOLDERS),
            st.integers(1, 10),
        ),
        st.tuples(st.just("claim"), st.sampled_from(HOLDERS)),
    ),
    min_size=1,
    max_size=10,
)


@PROPERTY
@given(split=st.tuples(st.integers(1, 3), st.integers(1, 3), st.just(3)), ops=operations)
def test_fund_claims_are_exact_pro_rata_and_never_exceed_revenue(
    plant: Plant, split: tuple[int, int, int], ops: list[tuple[object, ...]]
) -> None:
    suite = plant.suite
    with snapshot(suite.w3):
        suite.nonces.clear()
        for backer, shares in zip(BACKERS, split, strict=True):
            plant.client(backer).buy(shares)  # 5 to 9 shares: at or above the goal
        later(suite, 8 * DAY)
        address = {h: dev_account(h).address for h in HOLDERS}
        balances = {h: plant.client(h).shares_of(address[h]) for h in HOLDERS}
        supply = sum(balances.values())
        exact = {h: Fraction(0) for h in HOLDERS}
        claimed = {h: 0 for h in HOLDERS}
        revenue = 0
        for op in ops:
            if op[0] == "revenue":
                amount = int(op[1])  # type: ignore[call-overload]
                suite.credit(TREASURY).mint(plant.fund, amount)
                plant.client(OUTSIDER).distribute()
                revenue += amount
                for h in HOLDERS:
                    exact[h] += Fraction(amount * balances[h], supply)
            elif op[0] == "transfer":
                _, source, target, shares = op
                moved = min(int(shares), balances[source])  # type: ignore[call-overload]
                if moved and source != target:
                    plant.client(source).transfer_shares(address[target], moved)  # type: ignore[index]
                    balances[source] -= moved  # type: ignore[index]
                    balances[target] += moved  # type: ignore[index]
            else:
                holder = op[1]
                due = plant.client(holder).claimable(address[holder])  # type: ignore[index]
                if due:
                    plant.client(holder).claim()  # type: ignore[arg-type]
                    claimed[holder] += due  # type: ignore[index]
        reader = plant.client(OUTSIDER)
        earned = {h: reader.earned(address[h]) for h in HOLDERS}
        for h in HOLDERS:
            assert exact[h] - 1 <= earned[h] <= exact[h], (h, earned[h], exact[h])
            assert reader.claimed(address[h]) == claimed[h]
        assert sum(earned.values()) <= revenue
        assert revenue - sum(earned.values()) <= len(HOLDERS)
        assert reader.total_claimed() == sum(claimed.values()) <= revenue
