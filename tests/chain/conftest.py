"""Chain fixtures: one anvil node per test session, dev accounts, snapshots, a probe contract.

Tests that change chain state and must not leak it into others use `chain_snapshot`
(evm_snapshot before, evm_revert after). A TransactionSender caches its nonce, so build it
per test (the `sender` fixture does) when snapshots are reverted under it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from meterchain.chain.node import AnvilNode, connect, dev_account, start_anvil, stop_anvil
from meterchain.chain.sender import TransactionSender

REPO_ROOT = Path(__file__).resolve().parents[2]

# A tiny contract with every kind of revert the sender must decode, and a settle-once
# operation for the outbox's exactly-once tests.
PROBE_SOURCE = """
// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

contract Probe {
    error TooLarge(bytes32 id, uint256 value, uint256 limit);
    error AlreadySettled(uint64 interval, address by);

    event Bumped(address indexed by, uint256 total);
    event Settled(uint64 indexed interval, address by);

    uint256 public total;
    uint256 public settlements;
    mapping(uint64 => bool) public settled;

    function bump(uint256 by) external {
        if (by > 1000) revert TooLarge(keccak256("bump"), by, 1000);
        total += by;
        emit Bumped(msg.sender, total);
    }

    function settle(uint64 interval) external {
        if (settled[interval]) revert AlreadySettled(interval, msg.sender);
        settled[interval] = true;
        settlements += 1;
        emit Settled(interval, msg.sender);
    }

    function refuse(string calldata why) external {
        total += 1;
        require(false, why);
    }

    function divide(uint256 by) external {
        total = total / by;
    }
}
"""


@dataclass(frozen=True)
class Artifact:
    abi: list[dict[str, Any]]
    bytecode: str


def compile_solidity(source: str, name: str, *, imports: tuple[str, ...] = ()) -> Artifact:
    """Compile one contract with the npm solc (paris, optimizer on), as the build does; it may
    import the project's contracts named in `imports` (e.g. "Settlement.sol")."""
    sources = {f"{name}.sol": {"content": source}}
    for file in imports:
        sources[file] = {"content": (REPO_ROOT / "contracts" / file).read_text()}
    standard_input = {
        "language": "Solidity",
        "sources": sources,
        "settings": {
            "evmVersion": "paris",
            "optimizer": {"enabled": True, "runs": 200},
            "outputSelection": {f"{name}.sol": {name: ["abi", "evm.bytecode.object"]}},
        },
    }
    script = (
        "const solc=require('solc');const fs=require('fs');"
        "const input=fs.readFileSync(0,'utf8');"
        "const find=(p)=>{try{return {contents:fs.readFileSync('node_modules/'+p,'utf8')}}"
        "catch(e){return {error:'not found: '+p}}};"
        "process.stdout.write(solc.compile(input,{import:find}));"
    )
    result = subprocess.run(
        ["node", "-e", script],
        input=json.dumps(standard_input),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
        timeout=60,
    )
    output = json.loads(result.stdout)
    errors = [e for e in output.get("errors", []) if e["severity"] == "error"]
    assert not errors, errors
    contract = output["contracts"][f"{name}.sol"][name]
    return Artifact(abi=contract["abi"], bytecode="0x" + contract["evm"]["bytecode"]["object"])


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilNode]:
    """One anvil node (paris, no state on disk) shared by the whole test session."""
    node = start_anvil()
    yield node
    stop_anvil(node)


@pytest.fixture(scope="session")
def w3(anvil: AnvilNode) -> Web3:
    return connect(anvil.rpc_url)


@pytest.fixture(scope="session")
def deployer() -> LocalAccount:
    """Anvil's first dev account (holds 10,000 test ether)."""
    return dev_account(0)


@pytest.fixture(scope="session")
def dev_accounts() -> list[LocalAccount]:
    """All ten anvil dev accounts, index 0 being `deployer`."""
    return [dev_account(i) for i in range(10)]


@pytest.fixture
def chain_snapshot(w3: Web3) -> Iterator[str]:
    """Revert every chain change the test makes (evm_snapshot / evm_revert)."""
    snapshot_id = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    yield snapshot_id
    reverted = w3.provider.make_request("evm_revert", [snapshot_id])  # type: ignore[arg-type]
    assert reverted.get("result") is True, reverted


@pytest.fixture
def sender(w3: Web3, deployer: LocalAccount, chain_snapshot: str) -> TransactionSender:
    """A fresh sender for the deployer, inside a snapshot that is reverted afterwards."""
    return TransactionSender(w3, deployer)


@pytest.fixture(scope="session")
def probe_artifact() -> Artifact:
    return compile_solidity(PROBE_SOURCE, "Probe")


@pytest.fixture
def probe(w3: Web3, sender: TransactionSender, probe_artifact: Artifact) -> Contract:
    """A freshly deployed Probe contract (inside the test's snapshot)."""
    address, _ = sender.deploy(probe_artifact.abi, probe_artifact.bytecode)
    return w3.eth.contract(address=address, abi=probe_artifact.abi)
