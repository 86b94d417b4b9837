"""Setting a community up on the ledger contracts, and the community plant's revenue: what the
simulation and a deployment's set-up share.

- every PV meter becomes a registered device with its origin (the issuer vouches for it);
- households may ask for their local purchases to be retired in their name;
- a community plant is funded by backers buying shares, and its market revenue is collected
  into the fund and claimed by each backer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from meterchain.chain.errors import TransactionReverted
from meterchain.chain.ledger_clients import CommunityFundClient, EnergyCertificatesClient


@dataclass(frozen=True)
class DeviceSpec:
    """A generating meter's origin data."""

    meter_id: str
    capacity_w: int
    commissioned_at: int  # Unix seconds
    site: str
    technology: str
    location: str


def register_devices(certificates: EnergyCertificatesClient, devices: Sequence[DeviceSpec]) -> None:
    """Register each device (the client's account needs ISSUER_ROLE)."""
    for device in devices:
        certificates.register_device(
            device.meter_id,
            capacity_w=device.capacity_w,
            commissioned_at=device.commissioned_at,
            site=device.site,
            technology=device.technology,
            location=device.location,
        )


def location_text(latitude: float, longitude: float, place: str = "") -> str:
    """A device location: coordinates (four decimals, about 10 m), then the place's name."""
    return f"{latitude:.4f},{longitude:.4f} {place}".strip()


def collect(fund: CommunityFundClient) -> bool:
    """One collection step (anyone may): pay the plant's due withdrawal into the fund and
    distribute it, and ask for what accrued since. False when there was nothing to do."""
    try:
        fund.collect()
    except TransactionReverted as exc:
        if exc.error_name == "NothingToCollect":
            return False
        raise
    return True


def claim_all(backers: Mapping[str, CommunityFundClient]) -> dict[str, int]:
    """Each backer (account → its own client) claims what its shares earned; returns what
    each received, in smallest units."""
    received = {}
    for account, client in backers.items():
        due = client.claimable(account)
        if due:
            client.claim()
        received[account] = due
    return received
