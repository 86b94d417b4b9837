"""The deployment file: which chain, and where each contract lives on it.

`meterchain chain deploy` writes it; every other command reads it to find the contracts.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meterchain.chain.errors import DeploymentError

DEFAULT_DEPLOYMENT_PATH = Path("var/deployment.json")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Deployment:
    """A deployed contract suite on one chain."""

    chain_id: int
    rpc_url: str
    deployed_at_block: int  # the first block that can hold the suite's events
    contracts: dict[str, str]  # contract name -> checksum address
    deployer: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def address(self, name: str) -> str:
        """The address of contract `name`, or a DeploymentError listing what is there."""
        try:
            return self.contracts[name]
        except KeyError:
            known = ", ".join(sorted(self.contracts)) or "none"
            raise DeploymentError(
                f"the deployment on chain {self.chain_id} has no contract {name!r} "
                f"(it has: {known}); redeploy with `meterchain chain deploy`"
            ) from None

    def as_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "chain_id": self.chain_id,
            "rpc_url": self.rpc_url,
            "deployed_at_block": self.deployed_at_block,
            "deployer": self.deployer,
            "created_at": self.created_at,
            "contracts": dict(sorted(self.contracts.items())),
        }


def save_deployment(deployment: Deployment, path: Path = DEFAULT_DEPLOYMENT_PATH) -> Path:
    """Write the deployment file atomically (a reader never sees half a file)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as file:
            json.dump(deployment.as_json(), file, indent=2)
            file.write("\n")
        os.replace(temp, path)
    except OSError as exc:
        raise DeploymentError(f"cannot write the deployment file {path}: {exc.strerror}") from None
    return path


def load_deployment(path: Path = DEFAULT_DEPLOYMENT_PATH) -> Deployment:
    """Read a deployment file; DeploymentError says what is wrong and how to get a good one."""
    from eth_utils.address import is_address, to_checksum_address  # slow import: only here

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DeploymentError(
            f"no deployment file at {path}: deploy the contracts first with "
            "`meterchain chain deploy --rpc URL`, or pass --deployment FILE"
        ) from None
    except OSError as exc:
        raise DeploymentError(f"cannot read the deployment file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise DeploymentError(f"the deployment file {path} is not JSON: {exc}") from None
    try:
        contracts = data["contracts"]
        if not isinstance(contracts, dict):
            raise TypeError("contracts must be an object")
        for name, address in contracts.items():
            if not is_address(address):
                raise ValueError(f"contract {name!r} has a malformed address {address!r}")
        deployer = data.get("deployer")
        return Deployment(
            chain_id=int(data["chain_id"]),
            rpc_url=str(data["rpc_url"]),
            deployed_at_block=int(data["deployed_at_block"]),
            contracts={str(k): str(to_checksum_address(v)) for k, v in contracts.items()},
            deployer=None if deployer is None else str(deployer),
            created_at=str(data.get("created_at", "")),
        )
    except KeyError as exc:
        raise DeploymentError(f"the deployment file {path} lacks the field {exc}") from None
    except (TypeError, ValueError) as exc:
        raise DeploymentError(f"the deployment file {path} is malformed: {exc}") from None
