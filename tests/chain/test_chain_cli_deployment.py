"""The deployment file every command reads: round trip, and errors that say what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meterchain.chain.deployment import Deployment, load_deployment, save_deployment
from meterchain.chain.errors import DeploymentError

REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def deployment() -> Deployment:
    return Deployment(
        chain_id=31337,
        rpc_url="http://127.0.0.1:8545",
        deployed_at_block=1,
        contracts={"MeterRegistry": REGISTRY},
        deployer="0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    )


def test_a_saved_deployment_loads_back_unchanged(tmp_path: Path) -> None:
    path = save_deployment(deployment(), tmp_path / "var" / "deployment.json")
    assert load_deployment(path) == deployment()


def test_addresses_are_read_back_checksummed(tmp_path: Path) -> None:
    path = save_deployment(deployment(), tmp_path / "deployment.json")
    data = json.loads(path.read_text())
    data["contracts"]["MeterRegistry"] = REGISTRY.lower()
    path.write_text(json.dumps(data))
    assert load_deployment(path).address("MeterRegistry") == REGISTRY


def test_a_missing_file_says_to_deploy_first(tmp_path: Path) -> None:
    with pytest.raises(DeploymentError, match="chain deploy --rpc"):
        load_deployment(tmp_path / "deployment.json")


def test_a_missing_contract_lists_what_is_there() -> None:
    with pytest.raises(
        DeploymentError, match=r"no contract 'EnergyMarket' \(it has: MeterRegistry\)"
    ):
        deployment().address("EnergyMarket")


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("{", "not JSON"),
        ('{"chain_id": 1}', "lacks the field 'contracts'"),
        (
            '{"chain_id": 1, "rpc_url": "x", "deployed_at_block": 0, "contracts": {"A": "0x12"}}',
            "malformed address",
        ),
    ],
)
def test_a_damaged_file_is_named_with_its_fault(
    tmp_path: Path, content: str, complaint: str
) -> None:
    path = tmp_path / "deployment.json"
    path.write_text(content)
    with pytest.raises(DeploymentError, match=complaint):
        load_deployment(path)
