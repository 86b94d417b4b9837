"""Prepaid fixtures: one anvil node per session, the suite with a PrepaidMeter beside it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prepaid_suite import PrepaidSuite, deploy_prepaid_suite
from web3 import Web3

from meterchain.chain.node import AnvilNode, connect, start_anvil, stop_anvil


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilNode]:
    node = start_anvil()
    yield node
    stop_anvil(node)


@pytest.fixture(scope="session")
def w3(anvil: AnvilNode) -> Web3:
    return connect(anvil.rpc_url)


@pytest.fixture(scope="module")
def deployed(w3: Web3) -> PrepaidSuite:
    return deploy_prepaid_suite(w3)


@pytest.fixture
def suite(deployed: PrepaidSuite, w3: Web3) -> Iterator[PrepaidSuite]:
    """The deployed suite; every chain change the test makes is reverted afterwards."""
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    deployed.reset()
    yield deployed
    reverted = w3.provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]
    assert reverted.get("result") is True, reverted
