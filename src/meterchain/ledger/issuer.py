"""Issuing each delivered interval's certificates: the permissionless step after delivery.

EnergyMarket cannot mint certificates inside `settleDelivery` (it is at the EIP-170 size
limit), so whoever settles deliveries (the market operator, or anyone else) calls
EnergyCertificates.issue right after, re-submitting the delivery's settlements and the batch's
positions from the market's events. An interval is issued once; asking again is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass

from meterchain.chain.client import EnergyMarketClient
from meterchain.chain.ledger_clients import EnergyCertificatesClient, decode_certificates


@dataclass(frozen=True)
class Issuance:
    """What issuing one interval did."""

    interval: int
    certificates: int = 0
    certified_wh: int = 0
    auto_retired_wh: int = 0
    gas_used: int = 0
    already_issued: bool = False
    tx_hash: str | None = None


class CertificateIssuer:
    """Issues a market's delivered intervals, through the certificates' typed client."""

    def __init__(self, certificates: EnergyCertificatesClient, market: EnergyMarketClient) -> None:
        self.certificates = certificates
        self.market = market

    def issue(self, interval: int) -> Issuance:
        """Certify a delivered interval (blocking); an interval already issued is left alone.

        With an outbox in the sender, the transaction is keyed per market and interval, so a
        crash between sending and recording never issues twice (the contract refuses it too).
        """
        if self.certificates.interval_issued(self.market.address, interval):
            return Issuance(interval, already_issued=True)
        receipt = self.certificates.issue_interval(
            self.market, interval, key=f"certificates:{self.market.address}:{interval}"
        )
        events = self.certificates.events_in(receipt, "IntervalCertified")
        if not events:  # an outbox receipt of an earlier run: the event is in that block
            return Issuance(interval, already_issued=True, gas_used=int(receipt["gasUsed"]))
        args = events[0]["args"]
        return Issuance(
            interval=interval,
            certificates=len(decode_certificates(bytes(args["certificates"]))),
            certified_wh=int(args["certifiedWh"]),
            auto_retired_wh=int(args["autoRetiredWh"]),
            gas_used=int(receipt["gasUsed"]),
            tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
        )
