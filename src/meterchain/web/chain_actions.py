"""Every chain call the web interface makes, in one place, through the typed chain clients.

Registering (with the meter's connection limit and baseline registers), rotating and
revoking meters (the registrar role), setting the market's tariffs (the grid role), reading
balances. The calls block (web3), so the app runs them in a
thread. When the contracts' API changes, this is the one module of the web to adapt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from web3.types import TxReceipt

from meterchain.chain.client import EnergyMarketClient, MeterKind
from meterchain.chain.signing import meter_id_to_bytes32
from meterchain.chain.units import from_units, price_to_units

KINDS = {kind.name.lower().replace("_", "-"): kind for kind in MeterKind}


@dataclass(frozen=True)
class ChainResult:
    """What a transaction did: its hash and block, for the audit log and the page."""

    tx_hash: str
    block: int


def _result(receipt: TxReceipt) -> ChainResult:
    return ChainResult("0x" + bytes(receipt["transactionHash"]).hex(), int(receipt["blockNumber"]))


class ChainActions:
    """The operator's chain powers, through the market's client (and its registry and token)."""

    def __init__(self, market: EnergyMarketClient) -> None:
        self.market = market

    @property
    def decimals(self) -> int:
        return self.market.credit.decimals

    def register_meter(
        self,
        meter_id: str,
        signer: str,
        owner: str,
        kind: str,
        *,
        max_power_w: int = 15_000,
        import_wh: int = 0,
        export_wh: int = 0,
    ) -> ChainResult:
        """Register the meter, put it in this market and record its registers at
        installation as its baseline (the end of the interval before now)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        registry = self.market.registry
        receipt = registry.register_meter(meter_id, signer, owner, KINDS[kind], max_power_w)
        registry.assign_market(meter_id, self.market.address)
        step = self.market.interval_seconds
        baseline = int(time.time()) // step * step - step
        self.market.set_baseline(meter_id, baseline, import_wh, export_wh, "enrolled")
        return _result(receipt)

    def rotate_signer(self, meter_id: str, new_signer: str) -> ChainResult:
        return _result(self.market.registry.rotate_signer(meter_id, new_signer))

    def revoke_meter(self, meter_id: str) -> ChainResult:
        return _result(self.market.registry.revoke_meter(meter_id))

    def signer_of(self, meter_id: str) -> tuple[str, bool]:
        return self.market.registry.signer_of(meter_id)

    def set_tariffs(self, retail_price: float, feed_in_price: float) -> ChainResult:
        """Tariffs in currency units per kWh, converted to the token's smallest units."""
        retail = price_to_units(retail_price, self.decimals)
        feed_in = price_to_units(feed_in_price, self.decimals)
        return _result(self.market.set_tariffs(retail, feed_in))

    def tariffs(self) -> tuple[Decimal, Decimal]:
        retail, feed_in = self.market.tariffs()
        return from_units(retail, self.decimals), from_units(feed_in, self.decimals)

    def balances(self, meter_ids: list[str]) -> dict[str, int]:
        """Internal balances in the market, in smallest units, by meter id."""
        raw = self.market.balances(meter_ids)
        return {m: raw[meter_id_to_bytes32(m)] for m in meter_ids}

    def to_currency(self, units: int) -> Decimal:
        return from_units(units, self.decimals)
