"""The committed artifacts are what contracts/*.sol compile to, with the agreed settings."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from meterchain.chain.artifacts import CONTRACT_NAMES, load_artifact, load_manifest

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = REPO_ROOT / "contracts"


def test_manifest_matches_every_solidity_source() -> None:
    sources = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(CONTRACTS_DIR.glob("*.sol"))
    }
    assert sources, "no Solidity sources found"
    assert load_manifest()["sources"] == sources, "artifacts are stale: run `make contracts`"


def test_manifest_records_the_pinned_compiler_and_paris_target() -> None:
    manifest = load_manifest()
    solc_version = json.loads((REPO_ROOT / "node_modules/solc/package.json").read_text())["version"]
    assert manifest["compiler"]["version"].startswith(solc_version + "+")
    assert manifest["openzeppelin"] == "5.0.2"
    assert manifest["settings"]["evmVersion"] == "paris"
    assert manifest["settings"]["optimizer"]["enabled"] is True


def test_every_contract_has_an_abi_and_bytecode() -> None:
    for name in CONTRACT_NAMES:
        artifact = load_artifact(name)
        assert artifact.abi and artifact.bytecode.startswith("0x") and len(artifact.bytecode) > 100
        # EIP-170: deployable on any EVM chain
        assert (len(artifact.deployed_bytecode) - 2) // 2 <= 24_576


@pytest.mark.timeout(90)
def test_rebuilding_reproduces_the_committed_bytecode(tmp_path: Path) -> None:
    subprocess.run(
        ["node", str(CONTRACTS_DIR / "build.mjs"), "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=80,
    )
    for name in CONTRACT_NAMES:
        rebuilt = json.loads((tmp_path / f"{name}.json").read_text())
        committed = load_artifact(name)
        assert rebuilt["bytecode"] == committed.bytecode, f"{name} is stale: run `make contracts`"
        assert rebuilt["abi"] == committed.abi
