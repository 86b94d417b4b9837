"""MeterRegistry on a real anvil node: adding, rotating and revoking meters."""

from __future__ import annotations

import pytest
from contract_suite import ADMIN, Suite, board_key, deploy_test_suite
from web3 import Web3

from meterchain.chain.client import MeterKind
from meterchain.chain.errors import TransactionReverted
from meterchain.chain.node import dev_account


@pytest.fixture(scope="module")
def deployed(w3: Web3) -> Suite:
    return deploy_test_suite(w3, fund=False)


@pytest.fixture
def suite(deployed: Suite, chain_snapshot: str) -> Suite:
    return deployed


def test_registered_meter_has_its_signer_owner_and_kind(suite: Suite) -> None:
    registry = suite.registry(ADMIN)
    key, owner = board_key(100), dev_account(8)
    receipt = registry.register_meter(
        "ev-17", key.address, owner.address, MeterKind.EV_CHARGER, 7400
    )
    record = registry.meter("ev-17")
    assert (record.signer, record.owner, record.kind, record.revoked, record.max_power_w) == (
        key.address, owner.address, MeterKind.EV_CHARGER, False, 7400,
    )  # fmt: skip
    assert record.market == "0x" + "00" * 20
    assert registry.signer_of("ev-17") == (key.address, False)
    event = registry.events_in(receipt, "MeterRegistered")[0]["args"]
    assert (event["signer"], event["owner"], event["kind"]) == (key.address, owner.address, 3)


def test_a_meter_id_cannot_be_registered_twice(suite: Suite) -> None:
    alice = suite.meters[0]
    with pytest.raises(TransactionReverted) as caught:
        suite.registry().register_meter(
            alice.name, board_key(101).address, alice.owner.address, 0, 1000
        )
    assert caught.value.error_name == "MeterAlreadyRegistered"
    assert caught.value.args == (alice.id, alice.key.address)


def test_zero_signer_or_owner_is_refused(suite: Suite) -> None:
    zero = "0x" + "00" * 20
    registry = suite.registry()
    with pytest.raises(TransactionReverted) as caught:
        registry.register_meter("m-1", zero, dev_account(8).address, MeterKind.CONSUMER, 1)
    assert caught.value.error_name == "ZeroSigner"
    with pytest.raises(TransactionReverted) as caught:
        registry.register_meter("m-1", board_key(7).address, zero, MeterKind.CONSUMER, 1)
    assert caught.value.error_name == "ZeroOwner"
    with pytest.raises(TransactionReverted) as caught:
        registry.register_meter("m-1", board_key(7).address, board_key(7).address, 0, 0)
    assert caught.value.error_name == "ZeroMaxPower"


def test_rotating_the_signer_replaces_the_board_key(suite: Suite) -> None:
    alice = suite.meters[0]
    registry = suite.registry()
    new_key = board_key(102)
    receipt = registry.rotate_signer(alice.name, new_key.address)
    assert registry.signer_of(alice.name) == (new_key.address, False)
    event = registry.events_in(receipt, "SignerRotated")[0]["args"]
    assert (event["previousSigner"], event["newSigner"]) == (alice.key.address, new_key.address)


def test_revoked_meter_stays_revoked_and_cannot_be_rotated(suite: Suite) -> None:
    bob = suite.meters[1]
    registry = suite.registry()
    registry.revoke_meter(bob.name)
    assert registry.meter(bob.name).revoked is True
    for action in (
        lambda: registry.revoke_meter(bob.name),
        lambda: registry.rotate_signer(bob.name, board_key(103).address),
    ):
        with pytest.raises(TransactionReverted) as caught:
            action()
        assert caught.value.error_name == "MeterIsRevoked"


def test_unknown_meter_lookup_names_the_meter(suite: Suite) -> None:
    registry = suite.registry()
    with pytest.raises(TransactionReverted) as caught:
        registry.meter("ghost")
    assert caught.value.error_name == "UnknownMeter"
    assert registry.signer_of("ghost") == ("0x" + "00" * 20, False)
    with pytest.raises(TransactionReverted) as caught:
        registry.rotate_signer("ghost", board_key(1).address)
    assert caught.value.error_name == "UnknownMeter"


def test_admin_can_grant_the_registrar_role(suite: Suite) -> None:
    registry = suite.registry(ADMIN)
    newcomer = dev_account(8)
    registry.grant_role("REGISTRAR_ROLE", newcomer.address)
    assert registry.has_role("REGISTRAR_ROLE", newcomer.address)
    suite.registry(newcomer).register_meter("m-2", board_key(9).address, newcomer.address, 1, 5000)
    assert suite.registry().meter("m-2").kind is MeterKind.PROSUMER
