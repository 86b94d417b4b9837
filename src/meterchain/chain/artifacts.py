"""The compiled contracts shipped inside the package, so running meterchain needs no compiler.

`make contracts` (node contracts/build.mjs) rebuilds them; manifest.json records the sha256 of
every Solidity source and the compiler settings, which tests compare with contracts/*.sol.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meterchain.chain.errors import ChainError

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
CONTRACT_NAMES = (
    "MeterRegistry",
    "EnergyCredit",
    "EnergyMarket",
    "PrepaidMeter",
    "EnergyCertificates",
    "CommunityFund",
    "Billing",
)


class ArtifactError(ChainError):
    """A compiled contract is missing or unreadable."""


@dataclass(frozen=True)
class ContractArtifact:
    """ABI and bytecode of one compiled contract."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str


@functools.cache
def load_artifact(name: str) -> ContractArtifact:
    """The artifact of contract `name` (e.g. "EnergyMarket")."""
    path = ARTIFACTS_DIR / f"{name}.json"
    try:
        data = json.loads(path.read_text())
        return ContractArtifact(
            name=name,
            abi=list(data["abi"]),
            bytecode=str(data["bytecode"]),
            deployed_bytecode=str(data["deployedBytecode"]),
        )
    except FileNotFoundError:
        raise ArtifactError(
            f"no compiled contract {name!r} at {path}; run `make contracts` in the checkout"
        ) from None
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(
            f"cannot read the compiled contract {path}: {exc}; run `make contracts`"
        ) from None


def load_manifest() -> dict[str, Any]:
    """manifest.json: source hashes, compiler version and settings of the shipped artifacts."""
    path = ARTIFACTS_DIR / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}; run `make contracts`") from None
    return manifest


def all_abis() -> list[list[dict[str, Any]]]:
    """The ABI of every shipped contract: lets the sender decode any of their custom errors."""
    return [load_artifact(name).abi for name in CONTRACT_NAMES]
