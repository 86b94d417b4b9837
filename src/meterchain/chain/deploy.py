"""Deploy and wire the whole contract suite: registry, credit token, market and their roles."""

from __future__ import annotations

from decimal import Decimal

from eth_utils.address import to_checksum_address

from meterchain.chain.artifacts import load_artifact
from meterchain.chain.sender import TransactionSender
from meterchain.chain.units import DEFAULT_DECIMALS, price_to_units

DEFAULT_RETAIL_PRICE = Decimal("0.80")  # currency units per kWh
DEFAULT_FEED_IN_PRICE = Decimal("0.30")  # currency units per kWh


def deploy_suite(
    sender: TransactionSender,
    *,
    retail_price: float | Decimal | str = DEFAULT_RETAIL_PRICE,
    feed_in_price: float | Decimal | str = DEFAULT_FEED_IN_PRICE,
    decimals: int = DEFAULT_DECIMALS,
    token_name: str = "meterchain credit",
    token_symbol: str = "MCC",
    admin: str | None = None,
    operator: str | None = None,
    registrar: str | None = None,
    treasury: str | None = None,
    grid: str | None = None,
) -> dict[str, str]:
    """Deploy MeterRegistry, EnergyCredit and EnergyMarket; return contract name → address.

    Prices are in currency units per kWh (converted to smallest units per kWh, half up).
    Every role defaults to the sender's account: in production pass the market agent as
    `operator`, the utility as `grid`, and so on.
    """
    me = sender.address
    admin_ = to_checksum_address(admin or me)
    registry_art = load_artifact("MeterRegistry")
    credit_art = load_artifact("EnergyCredit")
    market_art = load_artifact("EnergyMarket")
    registry, _ = sender.deploy(
        registry_art.abi, registry_art.bytecode, admin_, to_checksum_address(registrar or me)
    )
    credit, _ = sender.deploy(
        credit_art.abi, credit_art.bytecode, token_name, token_symbol, decimals, admin_,
        to_checksum_address(treasury or me),
    )  # fmt: skip
    market, _ = sender.deploy(
        market_art.abi, market_art.bytecode, registry, credit, admin_,
        to_checksum_address(operator or me), to_checksum_address(grid or me),
        price_to_units(retail_price, decimals), price_to_units(feed_in_price, decimals),
    )  # fmt: skip
    return {"MeterRegistry": registry, "EnergyCredit": credit, "EnergyMarket": market}
