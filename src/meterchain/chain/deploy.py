"""Deploy and wire the whole contract suite: registry, credit token, market and their roles."""

from __future__ import annotations

from decimal import Decimal

from eth_utils.address import to_checksum_address

from meterchain.chain.artifacts import load_artifact
from meterchain.chain.sender import TransactionSender
from meterchain.chain.units import DEFAULT_DECIMALS, price_to_units

DEFAULT_RETAIL_PRICE = Decimal("0.80")  # currency units per kWh
DEFAULT_FEED_IN_PRICE = Decimal("0.30")  # currency units per kWh
DEFAULT_MAX_RETAIL_PRICE = Decimal("5.00")  # the bound the grid's role may raise retail to
DEFAULT_INTERVAL_S = 900
# A withdrawal waits for the batches that may still need its credit: gate closure is before the
# interval and its batch settles then, so two intervals cover every accepted order.
DEFAULT_WITHDRAWAL_DELAY_S = 2 * DEFAULT_INTERVAL_S
# After a day without delivery, anyone may void a batch and take the locked credit back.
DEFAULT_REFUND_DELAY_S = 24 * 3600


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
    max_retail_price: float | Decimal | str = DEFAULT_MAX_RETAIL_PRICE,
    interval_s: int = DEFAULT_INTERVAL_S,
    withdrawal_delay_s: int = DEFAULT_WITHDRAWAL_DELAY_S,
    refund_delay_s: int = DEFAULT_REFUND_DELAY_S,
) -> dict[str, str]:
    """Deploy MeterRegistry, EnergyCredit and EnergyMarket; return contract name → address.

    Prices are in currency units per kWh (converted to smallest units per kWh, half up).
    Every role defaults to the sender's account: in production pass the market agent as
    `operator`, the utility as `grid`, and so on. The market is added to the registry and may
    revoke a meter's key on proof of equivocation (ENFORCER_ROLE); that wiring needs the
    sender to hold the registry's admin and registrar roles, as it does by default.
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
    settings = (
        registry, credit, admin_, to_checksum_address(operator or me),
        to_checksum_address(grid or me), price_to_units(retail_price, decimals),
        price_to_units(feed_in_price, decimals), price_to_units(max_retail_price, decimals),
        interval_s, withdrawal_delay_s, refund_delay_s,
    )  # fmt: skip
    market, _ = sender.deploy(market_art.abi, market_art.bytecode, settings)
    registry_contract = sender.w3.eth.contract(address=registry, abi=registry_art.abi)
    if registrar is None or to_checksum_address(registrar) == me:
        sender.transact(registry_contract.functions.addMarket(market))
    if admin is None or admin_ == me:
        enforcer = registry_contract.functions.ENFORCER_ROLE().call()
        sender.transact(registry_contract.functions.grantRole(enforcer, market))
    return {"MeterRegistry": registry, "EnergyCredit": credit, "EnergyMarket": market}
