"""Currency ↔ on-chain units, converted once at the edge of the chain layer.

Off chain: money in currency units (e.g. BRL) and prices in currency units per kWh, as floats
or Decimals. On chain: integer smallest units of EnergyCredit (10**-decimals currency units)
and prices in smallest units per kWh. Rounding is half-up to the nearest smallest unit, the
same monotone rule for limit prices and trade prices, so a trade that respects its orders'
limits off chain still respects them on chain.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from meterchain.chain.errors import ChainError

DEFAULT_DECIMALS = 2  # one token = one currency unit; the smallest unit is a cent


class UnitError(ChainError, ValueError):
    """An amount or price cannot be expressed in on-chain units."""


def to_units(amount: float | Decimal | str, decimals: int = DEFAULT_DECIMALS) -> int:
    """Currency units (or currency per kWh) → integer smallest units, rounded half up."""
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        raise UnitError(f"{amount!r} is not a number") from None
    if not value.is_finite():
        raise UnitError(f"{amount!r} is not a finite amount")
    if value < 0:
        raise UnitError(f"{amount!r} is negative; on-chain amounts and prices are never negative")
    return int((value * (Decimal(10) ** decimals)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def from_units(units: int, decimals: int = DEFAULT_DECIMALS) -> Decimal:
    """Integer smallest units → currency units, exactly."""
    return Decimal(units) / (Decimal(10) ** decimals)


def price_to_units(price_per_kwh: float | Decimal | str, decimals: int = DEFAULT_DECIMALS) -> int:
    """Currency per kWh → smallest units per kWh (half up)."""
    return to_units(price_per_kwh, decimals)


def trade_value_units(quantity_wh: int, price_units_per_kwh: int) -> Decimal:
    """The exact value of `quantity_wh` at a price in smallest units per kWh, in smallest units.

    It is usually fractional (thousandths): the contract keeps it exact and rounds once per
    participant, debits up and credits down.
    """
    return Decimal(quantity_wh * price_units_per_kwh) / 1000
