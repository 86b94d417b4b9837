"""Fixtures of the ledger tests: one anvil node per session, snapshots per test.

The deployed suite and its signing helpers are the chain tests' (tests/chain/contract_suite.py,
put on the import path here), so the ledger contracts are tested against exactly the market
the chain tests check.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from web3 import Web3

from meterchain.chain.node import AnvilNode, connect, start_anvil, stop_anvil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chain"))


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilNode]:
    node = start_anvil()
    yield node
    stop_anvil(node)


@pytest.fixture(scope="session")
def w3(anvil: AnvilNode) -> Web3:
    return connect(anvil.rpc_url)


@pytest.fixture
def chain_snapshot(w3: Web3) -> Iterator[str]:
    """Revert every chain change the test makes (evm_snapshot / evm_revert)."""
    snapshot_id = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    yield snapshot_id
    reverted = w3.provider.make_request("evm_revert", [snapshot_id])  # type: ignore[arg-type]
    assert reverted.get("result") is True, reverted
