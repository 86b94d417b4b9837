"""EnergyCertificates: issued only from exported energy a delivery measured from signed
readings, once per meter and interval, to the meter's owner, with its origin; retired once, by
its holder only; and, for energy sold locally, retired in the buyers' names at issuance.

Each attack of issue 11 is a test with its custom error: forged or replayed deliveries and
readings, issuing twice, issuing for imported energy, a fake market, retiring twice, after a
transfer, or by a stranger.
"""

from __future__ import annotations

import pytest
from contract_suite import (
    ADMIN,
    BASELINE,
    GRID,
    INTERVAL,
    NEXT_INTERVAL,
    OUTSIDER,
    TREASURY,
    Suite,
    board_key,
)
from ledger_suite import (
    ALICE,
    BOB,
    CAROL,
    COMMISSIONED,
    DAVE,
    FORTALEZA,
    Sale,
    certificates,
    deploy_street,
    owner_address,
    register_pv,
    reverts,
    settle,
)
from web3 import Web3

from meterchain.chain.batch import RejectReason, pack_positions
from meterchain.chain.client import MeterKind
from meterchain.chain.deploy import deploy_market
from meterchain.chain.ledger_clients import (
    certificate_id,
    decode_auto_retirements,
    decode_certificates,
    delivery_settlements_blob,
)
from meterchain.chain.node import dev_account
from meterchain.chain.signing import MarketDomain, ReadingMessage, SignedReading, sign_reading


@pytest.fixture(scope="module")
def deployed(w3: Web3) -> Suite:
    return deploy_street(w3)


@pytest.fixture
def suite(deployed: Suite, chain_snapshot: str) -> Suite:
    deployed.nonces.clear()
    return deployed


def issue(suite: Suite, interval: int = INTERVAL, account: int = OUTSIDER):
    """Anyone issues the interval's certificates from the market's events."""
    return certificates(suite, account).issue_interval(suite.market(), interval)


def cert_id(suite: Suite, meter: int, interval: int = INTERVAL) -> int:
    return certificates(suite).certificate_id(suite.meters[meter].name, interval)


# ---- issuance


def test_exported_energy_is_certified_to_the_owner_with_its_origin(suite: Suite) -> None:
    settle(suite, [], {ALICE: (100, 2_000), CAROL: (700, 0)})
    issue(suite)
    client = certificates(suite)
    certificate = cert_id(suite, ALICE)
    assert certificate == certificate_id(1, INTERVAL)
    assert client.balance_of(owner_address(suite, ALICE), certificate) == 2_000
    assert client.certificate(certificate) == (suite.meters[ALICE].id, INTERVAL, True)
    origin = client.device_at(certificate >> 64)
    assert origin.meter_id == suite.meters[ALICE].id
    assert (origin.capacity_w, origin.commissioned_at) == (20_000, COMMISSIONED)
    assert origin.technology == "Solar;Photovoltaic;Roof mounted"
    assert origin.location == FORTALEZA


def test_imported_energy_is_never_certified(suite: Suite) -> None:
    """Bob, a device, only imports: no certificate; carol, a consumer, imports: none."""
    settle(suite, [], {BOB: (1_500, 0), CAROL: (700, 0), ALICE: (0, 300)})
    receipt = issue(suite)
    client = certificates(suite)
    assert client.certificate(cert_id(suite, BOB)) == (suite.meters[BOB].id, INTERVAL, False)
    assert client.balance_of(owner_address(suite, BOB), cert_id(suite, BOB)) == 0
    (event,) = client.events_in(receipt, "IntervalCertified")
    issued = decode_certificates(bytes(event["args"]["certificates"]))
    assert [c.id for c in issued] == [cert_id(suite, ALICE)]


def test_a_meter_that_is_no_registered_device_gets_no_certificate(suite: Suite) -> None:
    settle(suite, [], {DAVE: (0, 2_000)})
    receipt = issue(suite)
    assert certificates(suite).certificate_id(suite.meters[DAVE].name, INTERVAL) == 0
    (event,) = certificates(suite).events_in(receipt, "IntervalCertified")
    assert event["args"]["certifiedWh"] == 0


def test_export_beyond_what_the_device_can_generate_is_not_certified(suite: Suite) -> None:
    """Bob's panels are rated 8 kW: at most 2,000 Wh in 15 minutes. His meter exports 3,000 Wh
    (a battery behind it, or a glitch): only 2,000 Wh are certified."""
    settle(suite, [], {BOB: (0, 3_000)})
    receipt = issue(suite)
    client = certificates(suite)
    (event,) = client.events_in(receipt, "IntervalCertified")
    (issued,) = decode_certificates(bytes(event["args"]["certificates"]))
    assert (issued.id, issued.certified_wh) == (cert_id(suite, BOB), 2_000)
    assert client.balance_of(owner_address(suite, BOB), cert_id(suite, BOB)) == 2_000


def test_issuing_an_interval_twice_reverts(suite: Suite) -> None:
    settle(suite, [], {ALICE: (0, 2_000)})
    issue(suite)
    error = reverts(lambda: issue(suite, account=ADMIN), "IntervalAlreadyIssued")
    assert error.args == (suite.addresses["EnergyMarket"], INTERVAL)
    assert certificates(suite).balance_of(owner_address(suite, ALICE), cert_id(suite, ALICE)) == (
        2_000
    )


def test_an_undelivered_interval_cannot_be_certified(suite: Suite) -> None:
    market = suite.addresses["EnergyMarket"]
    error = reverts(lambda: certificates(suite).issue(market, INTERVAL, b"", b""), "NotDelivered")
    assert error.args == (market, INTERVAL)


def test_forged_settlements_claiming_more_export_revert(suite: Suite) -> None:
    settle(suite, [], {ALICE: (0, 2_000)})
    blob = bytearray(delivery_settlements_blob(suite.market(), INTERVAL))
    blob[40:48] = (20_000).to_bytes(8, "big")  # alice's exportedWh
    market = suite.addresses["EnergyMarket"]
    error = reverts(
        lambda: certificates(suite).issue(market, INTERVAL, bytes(blob), b""), "DeliveryMismatch"
    )
    assert error.args[:2] == (market, INTERVAL)


def test_imported_energy_relabelled_as_exported_reverts(suite: Suite) -> None:
    settle(suite, [], {BOB: (3_000, 0)})
    blob = bytearray(delivery_settlements_blob(suite.market(), INTERVAL))
    blob[32:40], blob[40:48] = blob[40:48], blob[32:40]  # swap imported and exported
    reverts(
        lambda: certificates(suite).issue(
            suite.addresses["EnergyMarket"], INTERVAL, bytes(blob), b""
        ),
        "DeliveryMismatch",
    )


def test_a_delivery_replayed_for_another_interval_reverts(suite: Suite) -> None:
    settle(suite, [], {ALICE: (0, 2_000)})
    settle(suite, [], {ALICE: (0, 100)}, interval=NEXT_INTERVAL, starts={ALICE: (0, 2_000)})
    first = delivery_settlements_blob(suite.market(), INTERVAL)
    reverts(
        lambda: certificates(suite).issue(
            suite.addresses["EnergyMarket"], NEXT_INTERVAL, first, b""
        ),
        "DeliveryMismatch",
    )


def test_positions_left_out_of_the_resubmitted_delivery_revert(suite: Suite) -> None:
    """Leaving out the batch's positions (so no buyer gets its share) changes the hash."""
    settle(
        suite, [Sale(buyer=CAROL, seller=ALICE, wh=1_000)], {ALICE: (0, 2_000), CAROL: (1_000, 0)}
    )
    settlements = delivery_settlements_blob(suite.market(), INTERVAL)
    reverts(
        lambda: certificates(suite).issue(
            suite.addresses["EnergyMarket"], INTERVAL, settlements, b""
        ),
        "DeliveryMismatch",
    )


def test_a_market_the_registry_does_not_know_cannot_vouch_for_energy(
    suite: Suite, w3: Web3
) -> None:
    """A market deployed by someone without the registrar role is not in the registry: its
    deliveries (which its own operator could fake) certify nothing."""
    from meterchain.chain.deploy import MarketSettings

    outsider = suite.sender(OUTSIDER)
    rogue = deploy_market(
        outsider,
        suite.addresses["MeterRegistry"],
        suite.addresses["EnergyCredit"],
        MarketSettings(),
    )
    error = reverts(
        lambda: certificates(suite, OUTSIDER).issue(rogue, INTERVAL, b"", b""), "UnknownMarket"
    )
    assert error.args == (rogue,)


def test_a_forged_reading_certifies_nothing(suite: Suite) -> None:
    """A reading signed by a key that is not the meter's is refused by the market: the meter
    counts as having exported nothing, so nothing is certified."""
    alice = suite.meters[ALICE]
    forged = suite.reading(alice, 0, 4_000, signer=board_key(99))
    receipt = suite.market().settle_delivery(INTERVAL, [forged])
    (rejected,) = suite.market().events_in(receipt, "ReadingRejected")
    assert rejected["args"]["reason"] == RejectReason.BAD_SIGNATURE
    issue(suite)
    assert certificates(suite).certificate(cert_id(suite, ALICE))[2] is False


def test_a_replayed_reading_certifies_nothing_twice(suite: Suite) -> None:
    """Alice's reading of one interval re-sent for the next is signed for the first: refused."""
    alice = suite.meters[ALICE]
    first = suite.reading(alice, 0, 2_000)
    suite.market().settle_delivery(INTERVAL, [first])
    replay = SignedReading(
        ReadingMessage(alice.id, NEXT_INTERVAL, *first.reading.registers), first.signature
    )
    receipt = suite.market().settle_delivery(NEXT_INTERVAL, [replay])
    (rejected,) = suite.market().events_in(receipt, "ReadingRejected")
    assert rejected["args"]["reason"] == RejectReason.BAD_SIGNATURE
    issue(suite)
    issue(suite, NEXT_INTERVAL)
    client = certificates(suite)
    assert client.balance_of(owner_address(suite, ALICE), cert_id(suite, ALICE)) == 2_000
    assert client.certificate(cert_id(suite, ALICE, NEXT_INTERVAL))[2] is False


def test_energy_settled_by_two_markets_is_certified_once(suite: Suite) -> None:
    """Alice moves to a second market whose grid sets her baseline before an interval the
    first market settled: both settle it, only the first issuance certifies it."""
    from meterchain.chain.client import EnergyMarketClient
    from meterchain.chain.deploy import MarketSettings

    first_market = suite.addresses["EnergyMarket"]
    settle(suite, [], {ALICE: (0, 2_000)})
    issue(suite)
    admin = suite.sender(ADMIN)
    second = deploy_market(
        admin,
        suite.addresses["MeterRegistry"],
        suite.addresses["EnergyCredit"],
        MarketSettings(retail_price="0.80", feed_in_price="0.30"),
        operator=dev_account(1).address,
        grid=dev_account(GRID).address,
    )
    suite.registry(ADMIN).assign_market(suite.meters[ALICE].name, second)
    suite.credit(TREASURY).mint(dev_account(GRID).address, 10_000)
    EnergyMarketClient(suite.sender(GRID), second).deposit_grid(10_000)
    EnergyMarketClient(suite.sender(GRID), second).set_baseline(
        suite.meters[ALICE].name, BASELINE, 0, 0, "moved"
    )
    alice = suite.meters[ALICE]
    domain = MarketDomain(chain_id=suite.w3.eth.chain_id, market_address=second)
    reading = sign_reading(domain, ReadingMessage(alice.id, INTERVAL, 0, 0, 0, 2_000), alice.key)
    EnergyMarketClient(suite.sender(1), second).settle_delivery(INTERVAL, [reading])
    receipt = certificates(suite, OUTSIDER).issue_interval(
        EnergyMarketClient(suite.sender(OUTSIDER), second), INTERVAL
    )
    (skipped,) = certificates(suite).events_in(receipt, "AlreadyCertified")
    assert skipped["args"]["meterId"] == suite.meters[ALICE].id
    client = certificates(suite)
    assert client.balance_of(owner_address(suite, ALICE), cert_id(suite, ALICE)) == 2_000
    assert not client.events_in(receipt, "TransferSingle")  # nothing minted the second time
    assert client.interval_issued(first_market, INTERVAL)


# ---- devices


def test_only_the_issuer_registers_devices(suite: Suite) -> None:
    client = certificates(suite, OUTSIDER)
    reverts(
        lambda: client.register_device(
            suite.meters[DAVE].name,
            capacity_w=1,
            commissioned_at=0,
            site="",
            technology="PV",
            location="",
        ),
        "AccessControlUnauthorizedAccount",
    )


def test_a_consumer_meter_cannot_be_a_generating_device(suite: Suite) -> None:
    error = reverts(lambda: register_pv(suite, suite.meters[CAROL]), "DeviceCannotGenerate")
    assert error.args == (suite.meters[CAROL].id, int(MeterKind.CONSUMER))


def test_a_device_is_registered_once(suite: Suite) -> None:
    error = reverts(lambda: register_pv(suite, suite.meters[ALICE]), "DeviceAlreadyRegistered")
    assert error.args == (suite.meters[ALICE].id, 1)


# ---- transfer and retirement


def retire(suite: Suite, account: object, certificate: int, wh: int, **kwargs: object):
    values = {
        "beneficiary": "Escola Municipal",
        "period_start": INTERVAL,
        "period_end": NEXT_INTERVAL,
        "purpose": "24/7 renewable supply",
        **kwargs,
    }
    return certificates(suite, account).retire(certificate, wh, **values)  # type: ignore[arg-type]


def test_the_holder_retires_a_certificate_for_a_beneficiary(suite: Suite) -> None:
    settle(suite, [], {ALICE: (0, 2_000)})
    issue(suite)
    alice_owner = suite.meters[ALICE].owner
    certificate = cert_id(suite, ALICE)
    receipt = retire(suite, alice_owner, certificate, 1_500)
    (event,) = certificates(suite).events_in(receipt, "Retired")
    assert event["args"]["beneficiary"] == "Escola Municipal"
    assert event["args"]["wh"] == 1_500
    assert (event["args"]["periodStart"], event["args"]["periodEnd"]) == (INTERVAL, NEXT_INTERVAL)
    client = certificates(suite)
    assert client.balance_of(alice_owner.address, certificate) == 500


def test_a_certificate_cannot_be_retired_twice(suite: Suite) -> None:
    settle(suite, [], {ALICE: (0, 2_000)})
    issue(suite)
    alice_owner = suite.meters[ALICE].owner
    certificate = cert_id(suite, ALICE)
    retire(suite, alice_owner, certificate, 2_000)
    error = reverts(
        lambda: retire(suite, alice_owner, certificate, 2_000), "ERC1155InsufficientBalance"
    )
    assert error.args == (alice_owner.address, 0, 2_000, certificate)


def test_a_certificate_cannot_be_retired_after_it_moved_on(suite: Suite) -> None:
    settle(suite, [], {ALICE: (0, 2_000)})
    issue(suite)
    alice_owner = suite.meters[ALICE].owner
    certificate = cert_id(suite, ALICE)
    buyer = dev_account(8)
    certificates(suite, alice_owner).transfer(buyer.address, certificate, 2_000)
    reverts(lambda: retire(suite, alice_owner, certificate, 1), "ERC1155InsufficientBalance")
    retire(suite, buyer, certificate, 2_000, beneficiary="Padaria do Bairro")
    assert certificates(suite).balance_of(buyer.address, certificate) == 0


def test_a_stranger_cannot_retire_someone_elses_certificate(suite: Suite) -> None:
    settle(suite, [], {ALICE: (0, 2_000)})
    issue(suite)
    alice_owner = suite.meters[ALICE].owner
    certificate = cert_id(suite, ALICE)
    stranger = dev_account(OUTSIDER)
    error = reverts(lambda: retire(suite, stranger, certificate, 100), "ERC1155InsufficientBalance")
    assert error.args[0] == stranger.address
    error = reverts(
        lambda: retire(suite, stranger, certificate, 100, holder=alice_owner.address),
        "ERC1155MissingApprovalForAll",
    )
    assert error.args == (stranger.address, alice_owner.address)
    assert certificates(suite).balance_of(alice_owner.address, certificate) == 2_000


def test_retiring_needs_a_beneficiary_and_a_period(suite: Suite) -> None:
    settle(suite, [], {ALICE: (0, 2_000)})
    issue(suite)
    alice_owner = suite.meters[ALICE].owner
    certificate = cert_id(suite, ALICE)
    with pytest.raises(ValueError, match="beneficiary is empty"):
        retire(suite, alice_owner, certificate, 1, beneficiary="")
    error = reverts(
        lambda: retire(suite, alice_owner, certificate, 1, period_end=INTERVAL), "InvalidPeriod"
    )
    assert error.args == (INTERVAL, INTERVAL)
    reverts(
        lambda: retire(suite, alice_owner, certificate_id(9, INTERVAL), 1),
        "ERC1155InsufficientBalance",
    )


# ---- local buyers


def test_a_local_buyer_gets_the_certificates_of_what_it_bought_retired_in_its_name(
    suite: Suite,
) -> None:
    """Carol buys 1 kWh from Alice and imports it; Alice exports 1.5 kWh. Carol asked for
    auto-retirement: 1 kWh of Alice's certificate is retired for her, Alice keeps 0.5 kWh."""
    certificates(suite, suite.meters[CAROL].owner).set_auto_retirement(
        suite.meters[CAROL].name, "Carol's house"
    )
    settle(
        suite, [Sale(buyer=CAROL, seller=ALICE, wh=1_000)], {ALICE: (0, 1_500), CAROL: (1_200, 0)}
    )
    receipt = issue(suite)
    client = certificates(suite)
    certificate = cert_id(suite, ALICE)
    (issued,) = decode_certificates(
        bytes(client.events_in(receipt, "IntervalCertified")[0]["args"]["certificates"])
    )
    assert (issued.certified_wh, issued.retired_wh) == (1_500, 1_000)
    assert client.balance_of(owner_address(suite, ALICE), certificate) == 500
    assert client.balance_of(owner_address(suite, CAROL), certificate) == 0
    (event,) = client.events_in(receipt, "IntervalCertified")
    (piece,) = decode_auto_retirements(bytes(event["args"]["autoRetirements"]))
    assert (piece.id, piece.buyer_meter_id, piece.wh) == (
        certificate,
        suite.meters[CAROL].id,
        1_000,
    )


def test_buyers_share_the_local_certificates_pro_rata_of_what_they_bought_and_used(
    suite: Suite,
) -> None:
    """Alice sells 1,000 Wh to Carol and 1,000 Wh to Dave but exports only 1,200 Wh: 1,200 Wh
    travel with the sales. Carol imported all she bought (share 600 Wh); Dave imported half
    (share 300 Wh, the rest of his purchase he did not use). Only Carol asked for retirement:
    Dave's share stays with Alice."""
    certificates(suite, suite.meters[CAROL].owner).set_auto_retirement(
        suite.meters[CAROL].name, "Carol's house"
    )
    settle(
        suite,
        [Sale(CAROL, ALICE, 1_000), Sale(DAVE, ALICE, 1_000)],
        {ALICE: (0, 1_200), CAROL: (1_000, 0), DAVE: (500, 0)},
    )
    receipt = issue(suite)
    client = certificates(suite)
    certificate = cert_id(suite, ALICE)
    (issued,) = decode_certificates(
        bytes(client.events_in(receipt, "IntervalCertified")[0]["args"]["certificates"])
    )
    assert (issued.certified_wh, issued.retired_wh) == (1_200, 600)
    assert client.balance_of(owner_address(suite, ALICE), certificate) == 600


def test_only_a_meters_owner_sets_auto_retirement(suite: Suite) -> None:
    error = reverts(
        lambda: certificates(suite, OUTSIDER).set_auto_retirement(suite.meters[CAROL].name, "x"),
        "NotMeterOwner",
    )
    assert error.args == (suite.meters[CAROL].id, dev_account(OUTSIDER).address)


def test_the_positions_of_the_resubmitted_delivery_are_the_batchs(suite: Suite) -> None:
    """issue_interval re-submits the batch's positions exactly as BatchSettled carried them."""
    settle(suite, [Sale(CAROL, ALICE, 1_000)], {ALICE: (0, 1_000), CAROL: (1_000, 0)})
    market = suite.market()
    assert pack_positions(market.positions(INTERVAL))
    issue(suite)
    assert certificates(suite).interval_issued(suite.addresses["EnergyMarket"], INTERVAL)
