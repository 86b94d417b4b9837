"""Deploy and wire the whole contract suite: registry, credit token, market and their roles."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class MarketSettings:
    """What an EnergyMarket is deployed with (prices in currency units per kWh)."""

    retail_price: float | Decimal | str = DEFAULT_RETAIL_PRICE
    feed_in_price: float | Decimal | str = DEFAULT_FEED_IN_PRICE
    max_retail_price: float | Decimal | str = DEFAULT_MAX_RETAIL_PRICE
    interval_s: int = DEFAULT_INTERVAL_S
    withdrawal_delay_s: int = DEFAULT_WITHDRAWAL_DELAY_S
    refund_delay_s: int = DEFAULT_REFUND_DELAY_S


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
    ledger: bool = True,
    issuer: str | None = None,
    biller: str | None = None,
) -> dict[str, str]:
    """Deploy MeterRegistry, EnergyCredit and EnergyMarket (and, with `ledger`, the
    EnergyCertificates and Billing built on them); return contract name → address.

    Prices are in currency units per kWh (converted to smallest units per kWh, half up).
    Every role defaults to the sender's account: in production pass the market agent as
    `operator`, the utility as `grid` (and `issuer`, `biller`), and so on.
    """
    me = sender.address
    admin_ = to_checksum_address(admin or me)
    registry_art = load_artifact("MeterRegistry")
    credit_art = load_artifact("EnergyCredit")
    registry, _ = sender.deploy(
        registry_art.abi, registry_art.bytecode, admin_, to_checksum_address(registrar or me)
    )
    credit, _ = sender.deploy(
        credit_art.abi, credit_art.bytecode, token_name, token_symbol, decimals, admin_,
        to_checksum_address(treasury or me),
    )  # fmt: skip
    settings = MarketSettings(
        retail_price, feed_in_price, max_retail_price, interval_s, withdrawal_delay_s,
        refund_delay_s,
    )  # fmt: skip
    market = deploy_market(
        sender, registry, credit, settings, decimals=decimals, admin=admin_, operator=operator,
        grid=grid,
    )  # fmt: skip
    addresses = {"MeterRegistry": registry, "EnergyCredit": credit, "EnergyMarket": market}
    if ledger:
        addresses |= deploy_ledger(
            sender, registry, credit, market, interval_s=interval_s, admin=admin_, issuer=issuer,
            biller=biller,
        )  # fmt: skip
    return addresses


def deploy_market(
    sender: TransactionSender,
    registry: str,
    credit: str,
    settings: MarketSettings = MarketSettings(),
    *,
    decimals: int = DEFAULT_DECIMALS,
    admin: str | None = None,
    operator: str | None = None,
    grid: str | None = None,
) -> str:
    """Deploy one EnergyMarket on an existing registry and token (several communities may
    share a registry; a meter belongs to one market at a time). When the sender holds the
    registry's registrar and admin roles, the market is added to the registry and may revoke
    a key on proof of equivocation (ENFORCER_ROLE); otherwise the registry's admin does it."""
    me = sender.address
    market_art = load_artifact("EnergyMarket")
    arguments = (
        to_checksum_address(registry), to_checksum_address(credit),
        to_checksum_address(admin or me), to_checksum_address(operator or me),
        to_checksum_address(grid or me), price_to_units(settings.retail_price, decimals),
        price_to_units(settings.feed_in_price, decimals),
        price_to_units(settings.max_retail_price, decimals), settings.interval_s,
        settings.withdrawal_delay_s, settings.refund_delay_s,
    )  # fmt: skip
    market, _ = sender.deploy(market_art.abi, market_art.bytecode, arguments)
    registry_art = load_artifact("MeterRegistry")
    contract = sender.w3.eth.contract(address=to_checksum_address(registry), abi=registry_art.abi)
    registrar_role = contract.functions.REGISTRAR_ROLE().call()
    if contract.functions.hasRole(registrar_role, me).call():
        sender.transact(contract.functions.addMarket(market))
    if contract.functions.hasRole(bytes(32), me).call():
        enforcer = contract.functions.ENFORCER_ROLE().call()
        sender.transact(contract.functions.grantRole(enforcer, market))
    return str(market)


def deploy_ledger(
    sender: TransactionSender,
    registry: str,
    credit: str,
    market: str,
    *,
    interval_s: int = DEFAULT_INTERVAL_S,
    admin: str | None = None,
    issuer: str | None = None,
    biller: str | None = None,
) -> dict[str, str]:
    """Deploy EnergyCertificates (one per registry; every market it certifies has intervals of
    `interval_s`) and Billing (one per market); roles default to the sender's account."""
    me = sender.address
    certificates_art = load_artifact("EnergyCertificates")
    billing_art = load_artifact("Billing")
    certificates, _ = sender.deploy(
        certificates_art.abi, certificates_art.bytecode, to_checksum_address(registry), interval_s,
        to_checksum_address(admin or me), to_checksum_address(issuer or me),
    )  # fmt: skip
    billing, _ = sender.deploy(
        billing_art.abi, billing_art.bytecode, to_checksum_address(credit),
        to_checksum_address(market), to_checksum_address(admin or me),
        to_checksum_address(biller or me),
    )  # fmt: skip
    return {"EnergyCertificates": str(certificates), "Billing": str(billing)}


@dataclass(frozen=True)
class FundCampaign:
    """What a CommunityFund is deployed with (money in credit smallest units)."""

    plant_meter_id: bytes
    price_per_share: int
    goal: int
    cap: int
    deadline: int  # Unix seconds
    name: str = "community solar shares"
    symbol: str = "SUN"


def deploy_fund(
    sender: TransactionSender,
    credit: str,
    market: str,
    campaign: FundCampaign,
    *,
    admin: str | None = None,
    manager: str | None = None,
) -> str:
    """Deploy a CommunityFund for one plant's campaign. The plant's meter must then be
    registered with the fund as its owner, so its market revenue can only go to the fund."""
    me = sender.address
    art = load_artifact("CommunityFund")
    arguments = (
        campaign.name, campaign.symbol, to_checksum_address(credit), to_checksum_address(market),
        campaign.plant_meter_id, campaign.price_per_share, campaign.goal, campaign.cap,
        campaign.deadline, to_checksum_address(admin or me), to_checksum_address(manager or me),
    )  # fmt: skip
    fund, _ = sender.deploy(art.abi, art.bytecode, arguments)
    return str(fund)
