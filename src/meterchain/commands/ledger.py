"""`meterchain certificates …`, `meterchain fund …` and `meterchain statement`: the ledger's
applications from the command line (certificates with guarantee of origin, the community
plant's fund, monthly statements)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from meterchain.chain.errors import ChainError
from meterchain.chain.keystore import PASSWORD_ENV
from meterchain.commands.agents import (
    DeploymentOption,
    KeystoreOption,
    PasswordEnv,
    PasswordFile,
    RpcOption,
)
from meterchain.commands.errors import USER_ERRORS, user_errors
from meterchain.ledger.period import DEFAULT_TIMEZONE, PeriodError
from meterchain.roles import DEFAULT_DEPLOYMENT

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from meterchain.chain.client import EnergyMarketClient
    from meterchain.chain.deployment import Deployment
    from meterchain.chain.ledger_clients import (
        BillingClient,
        CommunityFundClient,
        EnergyCertificatesClient,
    )

USER_ERRORS.extend([ChainError, PeriodError])

certificates_app = typer.Typer(
    help="Renewable-energy certificates: list, retire, export, issue.", no_args_is_help=True
)
fund_app = typer.Typer(help="The community plant's fund: status, buy, collect, claim.")
console = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)

TimezoneOption = Annotated[
    str, typer.Option("--timezone", help="Time zone of periods and dates (IANA name).")
]


class ExportFormat(StrEnum):
    energytag = "energytag"
    irec_csv = "irec-csv"


class Lang(StrEnum):
    en = "en"
    pt_br = "pt-BR"


class Chain:
    """The deployment's contracts, called by one account."""

    def __init__(
        self,
        deployment: Path,
        rpc: str | None,
        keystore: Path | None,
        password_file: Path | None,
        password_env: str,
    ) -> None:
        from meterchain.chain.deployment import load_deployment
        from meterchain.chain.node import connect
        from meterchain.chain.sender import TransactionSender
        from meterchain.commands.agents import _account

        self.deployment: Deployment = load_deployment(deployment)
        self.w3 = connect(rpc or self.deployment.rpc_url)
        self.account: LocalAccount = _account(self.w3, keystore, password_file, password_env)
        self.sender = TransactionSender(self.w3, self.account)

    @property
    def from_block(self) -> int:
        return self.deployment.deployed_at_block

    def market(self) -> EnergyMarketClient:
        from meterchain.chain.client import EnergyMarketClient

        return EnergyMarketClient(self.sender, self.deployment.address("EnergyMarket"))

    def certificates(self) -> EnergyCertificatesClient:
        from meterchain.chain.ledger_clients import EnergyCertificatesClient

        return EnergyCertificatesClient(self.sender, self.deployment.address("EnergyCertificates"))

    def billing(self) -> BillingClient:
        from meterchain.chain.ledger_clients import BillingClient

        return BillingClient(self.sender, self.deployment.address("Billing"))

    def funds(self, address: str | None = None) -> list[CommunityFundClient]:
        """The fund at `address`, or every CommunityFund* contract of the deployment."""
        from meterchain.chain.ledger_clients import CommunityFundClient

        if address is not None:
            return [CommunityFundClient(self.sender, address)]
        return [
            CommunityFundClient(self.sender, a)
            for name, a in sorted(self.deployment.contracts.items())
            if name.startswith("CommunityFund")
        ]


def _chain(
    deployment: Path, rpc: str | None, keystore: Path | None, password_file: Path | None,
    password_env: str,
) -> Chain:  # fmt: skip
    return Chain(deployment, rpc, keystore, password_file, password_env)


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False))


# ---- certificates -------------------------------------------------------------------------


@certificates_app.command("list")
@user_errors
def certificates_list(
    meter: Annotated[str | None, typer.Option("--meter", help="Only this meter's.")] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="Intervals from this time (ISO 8601 or Unix).")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="Intervals before this time (ISO 8601 or Unix).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    timezone: TimezoneOption = DEFAULT_TIMEZONE,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
) -> None:
    """Every certificate held (retired_for null) and every retirement, with its meter,
    interval, Wh, owner and technology."""
    from meterchain.ledger.certificates import certificate_rows, read_book
    from meterchain.ledger.period import parse_time

    chain = _chain(deployment, rpc, keystore, password_file, password_env)
    book = read_book(
        chain.certificates(),
        from_block=chain.from_block,
        interval_s=chain.certificates().interval_seconds,
    )
    rows = certificate_rows(
        book,
        meter_id=meter,
        start=None if start is None else parse_time(start, timezone),
        end=None if end is None else parse_time(end, timezone),
    )
    if as_json:
        _print_json(rows)
        return
    table = Table(title=f"{len(rows)} certificate holdings and retirements")
    for column in ("id", "meter", "interval start (UTC)", "Wh", "owner", "retired for", "tech"):
        table.add_column(column, justify="right" if column in ("id", "Wh") else "left")
    for row in rows:
        table.add_row(
            str(row["id"]), row["meter_id"], row["interval_start"], f"{row['wh']:,}",
            row["owner"], row["retired_for"] or "", row["technology"],
        )  # fmt: skip
    console.print(table)


def _certificate_id(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise PeriodError(
            f"certificate id {text!r} is not a number; `meterchain certificates list` shows ids"
        ) from None
    if value <= 0 or value >= 2**256:
        raise PeriodError(f"certificate id {text!r} is out of range")
    return value


@certificates_app.command("retire")
@user_errors
def certificates_retire(
    certificate: Annotated[str, typer.Option("--id", help="The certificate's id.")],
    beneficiary: Annotated[str, typer.Option(help="Whose consumption it backs.")],
    purpose: Annotated[str, typer.Option(help="Why it is retired, e.g. '24/7 supply'.")],
    wh: Annotated[
        int | None, typer.Option("--wh", min=1, help="How much (default: all you hold).")
    ] = None,
    period_start: Annotated[
        str | None,
        typer.Option("--period-start", help="Consumption period start (default: its interval)."),
    ] = None,
    period_end: Annotated[
        str | None, typer.Option("--period-end", help="Consumption period end (exclusive).")
    ] = None,
    timezone: TimezoneOption = DEFAULT_TIMEZONE,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
) -> None:
    """Retire a certificate you hold for a beneficiary: it can never be retired again."""
    from meterchain.ledger.period import parse_time

    identifier = _certificate_id(certificate)
    chain = _chain(deployment, rpc, keystore, password_file, password_env)
    client = chain.certificates()
    held = client.balance_of(chain.account.address, identifier)
    amount = held if wh is None else wh
    if held == 0 or amount > held:
        raise ChainError(
            f"{chain.account.address} holds {held} Wh of certificate {identifier}, not "
            f"{amount or 'any'}: only the holder can retire it (see `certificates list`)"
        )
    interval = identifier & (2**64 - 1)
    start = interval if period_start is None else parse_time(period_start, timezone)
    end = (
        start + client.interval_seconds if period_end is None else parse_time(period_end, timezone)
    )
    receipt = client.retire(
        identifier, amount, beneficiary=beneficiary, period_start=start, period_end=end,
        purpose=purpose,
    )  # fmt: skip
    console.print(
        f"retired {amount:,} Wh of certificate {identifier} for {beneficiary} ({purpose}) in "
        f"block {receipt['blockNumber']}",
        soft_wrap=True,
    )


@certificates_app.command("export")
@user_errors
def certificates_export(
    period: Annotated[str, typer.Option(help="The month, YYYY-MM.")],
    export_format: Annotated[
        ExportFormat, typer.Option("--format", help="energytag (JSON) or irec-csv.")
    ],
    out: Annotated[Path | None, typer.Option(help="Write here instead of standard output.")] = None,
    timezone: TimezoneOption = DEFAULT_TIMEZONE,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
) -> None:
    """The month's certificates as EnergyTag hourly GC bundles (JSON) or I-REC style CSV."""
    from meterchain.ledger.certificates import read_book
    from meterchain.ledger.exports import ExportContext, energytag_bundles, irec_csv
    from meterchain.ledger.period import Month

    month = Month.parse(period, timezone)
    chain = _chain(deployment, rpc, keystore, password_file, password_env)
    client = chain.certificates()
    book = read_book(client, from_block=chain.from_block, interval_s=client.interval_seconds)
    context = ExportContext(
        chain.deployment.chain_id, client.address, month.start, month.end, timezone
    )
    if export_format is ExportFormat.energytag:
        text = json.dumps(energytag_bundles(book, context), indent=2, ensure_ascii=False) + "\n"
    else:
        text = irec_csv(book, context)
    if out is None:
        print(text, end="")
        return
    try:
        out.write_text(text)
    except OSError as exc:
        raise PeriodError(f"cannot write {out}: {exc.strerror}; choose a writable path") from None
    stderr.print(f"wrote {out}")


@certificates_app.command("issue")
@user_errors
def certificates_issue(
    interval: Annotated[str, typer.Option(help="The interval's start (ISO 8601 or Unix).")],
    timezone: TimezoneOption = DEFAULT_TIMEZONE,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Issue a delivered interval's certificates (anyone may; once per interval)."""
    from dataclasses import asdict

    from meterchain.ledger.issuer import CertificateIssuer
    from meterchain.ledger.period import parse_time

    chain = _chain(deployment, rpc, keystore, password_file, password_env)
    issuance = CertificateIssuer(chain.certificates(), chain.market()).issue(
        parse_time(interval, timezone)
    )
    if as_json:
        _print_json(asdict(issuance))
    elif issuance.already_issued:
        console.print(f"interval {issuance.interval} was already certified")
    else:
        console.print(
            f"interval {issuance.interval}: {issuance.certificates} certificates, "
            f"{issuance.certified_wh:,} Wh ({issuance.auto_retired_wh:,} Wh retired for local "
            f"buyers), {issuance.gas_used:,} gas"
        )


# ---- the community fund -------------------------------------------------------------------


FundOption = Annotated[
    str | None, typer.Option("--fund", help="The fund's address (default: the deployment's).")
]


def _one_fund(chain: Chain, address: str | None) -> CommunityFundClient:
    funds = chain.funds(address)
    if len(funds) != 1:
        raise ChainError(f"the deployment names {len(funds)} community funds; pass --fund ADDRESS")
    return funds[0]


@fund_app.command("status")
@user_errors
def fund_status(
    fund: FundOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
) -> None:
    """The campaign (raised, goal, cap, deadline) and the caller's shares and revenue."""
    from meterchain.ledger.fund import fund_status as status

    chain = _chain(deployment, rpc, keystore, password_file, password_env)
    summary = status(_one_fund(chain, fund), chain.account.address)
    if as_json:
        _print_json(summary)
        return
    for key, value in summary.items():
        console.print(f"{key}: {value}")


@fund_app.command("buy")
@user_errors
def fund_buy(
    shares: Annotated[int, typer.Option(min=1, help="How many shares.")],
    fund: FundOption = None,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
) -> None:
    """Buy shares of the campaign with a permit of your credit."""
    chain = _chain(deployment, rpc, keystore, password_file, password_env)
    client = _one_fund(chain, fund)
    deadline = int(chain.w3.eth.get_block("latest")["timestamp"]) + 3600
    client.buy_with_permit(shares, chain.account, deadline)
    console.print(f"{chain.account.address} holds {client.shares_of(chain.account.address)} shares")


@fund_app.command("collect")
@user_errors
def fund_collect(
    fund: FundOption = None,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
) -> None:
    """Move the plant's market revenue into the fund (anyone may; run it again after the
    market's withdrawal delay to receive what the first run asked for)."""
    from meterchain.ledger.community import collect

    chain = _chain(deployment, rpc, keystore, password_file, password_env)
    client = _one_fund(chain, fund)
    if collect(client):
        console.print(f"collected; {client.total_distributed()} units distributed so far")
    else:
        console.print("nothing to collect now (a withdrawal may still be waiting for its delay)")


@fund_app.command("claim")
@user_errors
def fund_claim(
    fund: FundOption = None,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
) -> None:
    """Claim the revenue your shares earned."""
    from meterchain.ledger.community import claim_all

    chain = _chain(deployment, rpc, keystore, password_file, password_env)
    client = _one_fund(chain, fund)
    received = claim_all({chain.account.address: client})[chain.account.address]
    console.print(f"claimed {client.credit.to_currency(received)} ({received} units)")


# ---- statements ---------------------------------------------------------------------------


@user_errors
def statement(
    meter: Annotated[str, typer.Option("--meter", help="The meter's id.")],
    period: Annotated[str, typer.Option(help="The month, YYYY-MM.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the statement as JSON.")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the printable page here.")
    ] = None,
    lang: Annotated[Lang, typer.Option(help="Language of the page: en or pt-BR.")] = Lang.pt_br,
    record: Annotated[
        bool, typer.Option("--record", help="Record its hash on chain (the biller's role).")
    ] = False,
    pay: Annotated[
        bool,
        typer.Option("--pay", help="Pay what it says is owed, with a permit from your wallet."),
    ] = False,
    from_balance: Annotated[
        bool,
        typer.Option(
            "--from-balance",
            help="With --pay: take it from the meter's market balance (the owner's key; asks "
            "the market first, then pays when run again after the withdrawal delay).",
        ),
    ] = False,
    timezone: TimezoneOption = DEFAULT_TIMEZONE,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
) -> None:
    """A meter's monthly statement: energy, local trades, certificates, fund revenue, what was
    paid and what is owed (JSON, or a printable HTML page in pt-BR or English)."""
    from meterchain.ledger.certificates import iso
    from meterchain.ledger.period import Month
    from meterchain.ledger.statement_html import render_statement_html
    from meterchain.ledger.statements import (
        build_statement,
        pay_from_meter_balance,
        read_statement_inputs,
        record_statement,
    )

    month = Month.parse(period, timezone)
    chain = _chain(deployment, rpc, keystore, password_file, password_env)
    billing = chain.billing()

    def build() -> dict[str, Any]:
        return build_statement(
            read_statement_inputs(
                chain.market(),
                meter,
                month,
                certificates=chain.certificates(),
                funds=chain.funds(),
                billing=billing,
                from_block=chain.from_block,
            )
        )

    document = build()
    if record:
        record_statement(billing, document, month)
        document = build()
    if pay:
        payment = document.get("payment")
        if not payment:
            raise ChainError(
                f"the statement of {meter} for {month.label} is not recorded on chain yet: the "
                "utility records it (`--record` with the biller's key) before it can be paid"
            )
        outstanding = int(payment["outstanding_units"])
        if outstanding <= 0:
            raise ChainError(f"nothing is owed on the statement of {meter} for {month.label}")
        if from_balance:
            step = pay_from_meter_balance(chain.market(), billing, meter, month, chain.account)
            if step.requested_units:
                stderr.print(
                    f"asked the market for {step.requested_units} units of meter {meter}'s "
                    f"balance; run this again after {iso(step.available_at)} to pay",
                    soft_wrap=True,
                )
        else:
            deadline = int(chain.w3.eth.get_block("latest")["timestamp"]) + 3600
            billing.pay_with_permit(meter, month.number, outstanding, chain.account, deadline)
        document = build()
    if html is not None:
        try:
            html.write_text(render_statement_html(document, lang.value))
        except OSError as exc:
            raise PeriodError(
                f"cannot write {html}: {exc.strerror}; choose a writable path"
            ) from None
    if as_json:
        _print_json(document)
        return
    _print_statement(document)
    if html is not None:
        console.print(f"page: {html}")


def _print_statement(document: dict[str, Any]) -> None:
    symbol = document["currency"]["symbol"]
    table = Table(title=f"statement of meter {document['meter_id']} for {document['period']}")
    table.add_column("item")
    table.add_column("kWh", justify="right")
    table.add_column(f"amount ({symbol})", justify="right")
    for line in document["lines"]:
        wh = "" if line["wh"] is None else f"{line['wh'] / 1000:,.3f}"
        table.add_row(line["key"].replace("_", " "), wh, f"{line['amount']:,.2f}")
    totals = document["totals"]
    table.add_section()
    table.add_row("charges (negative: credit)", "", f"{totals['charges']:,.2f}", style="bold")
    table.add_row("paid from the meter's balance", "", f"{totals['paid_from_balance']:,.2f}")
    table.add_row("owed", "", f"{totals['owed']:,.2f}")
    console.print(table)
    console.print(f"hash {document['statement_hash']}")
