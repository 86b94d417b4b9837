"""`meterchain prepaid …`: prepaid supply from the command line.

The utility deploys PrepaidMeter beside the market (`deploy`), registers a prepaid meter with
it as owner (`meterchain agent register --owner ADDRESS`) and enrols it (`enrol`); households
top up (`topup`, from their wallet with a permit) or redeem a voucher the utility printed
(`voucher new` signs one with the vending key, offline; `voucher redeem` sends it); anyone
reads a meter's credit (`status --json`). Amounts are in currency units (e.g. BRL).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from meterchain.chain.errors import ChainError
from meterchain.chain.keystore import PASSWORD_ENV, load_keystore, read_password
from meterchain.commands.agents import (
    DeploymentOption,
    KeystoreOption,
    PasswordEnv,
    PasswordFile,
    RpcOption,
    _account,
)
from meterchain.commands.errors import USER_ERROR_NAMES, USER_ERRORS, user_errors
from meterchain.config import ConfigError
from meterchain.roles import DEFAULT_DEPLOYMENT

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from meterchain.prepaid.client import PrepaidMeterClient
    from meterchain.prepaid.service import PrepaidService

USER_ERRORS.extend([ChainError, ConfigError])
USER_ERROR_NAMES.update(
    {"meterchain.prepaid.service:PrepaidError", "meterchain.prepaid.voucher:VoucherError"}
)

app = typer.Typer(
    help="Prepaid supply: credit per meter, top-ups, vouchers, cut-off rules.",
    no_args_is_help=True,
)
voucher_app = typer.Typer(help="Vouchers the utility prints and households redeem.")
app.add_typer(voucher_app, name="voucher")
console = Console(highlight=False)

MeterOption = Annotated[str, typer.Option("--meter", help="The meter's id.")]
AmountOption = Annotated[str, typer.Option("--amount", help="Currency units, e.g. 20 or 12.50.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _client(
    deployment: Path,
    rpc: str | None,
    keystore: Path | None,
    password_file: Path | None,
    password_env: str,
) -> tuple[PrepaidMeterClient, LocalAccount]:
    """The PrepaidMeter of the deployment file, called by the keystore's account (dev account
    0 on anvil)."""
    from meterchain.chain.deployment import load_deployment
    from meterchain.chain.node import connect
    from meterchain.chain.sender import TransactionSender
    from meterchain.prepaid.client import PrepaidMeterClient

    record = load_deployment(deployment)
    address = record.address("PrepaidMeter")
    w3 = connect(rpc or record.rpc_url)
    account = _account(w3, keystore, password_file, password_env)
    return PrepaidMeterClient(TransactionSender(w3, account), address), account


def _service(client: PrepaidMeterClient) -> PrepaidService:
    from meterchain.prepaid.service import PrepaidService

    return PrepaidService(client)


def _print(payload: dict[str, object], as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps(payload))
    else:
        console.print(text, soft_wrap=True)


@app.command()
@user_errors
def run(
    config: Annotated[Path, typer.Option("--config", help="The prepaid agent's TOML file.")],
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error (to stderr).")
    ] = "info",
    log_format: Annotated[
        str | None,
        typer.Option("--log-format", help="text or json (one object per line, for journald)."),
    ] = None,
) -> None:
    """Run the operator's prepaid agent: assess after each delivery, tell the boards."""
    from meterchain.commands.agents import _configure_logging, _serve
    from meterchain.config import load_toml
    from meterchain.prepaid.process import PrepaidAgentConfig, build_prepaid

    _configure_logging(log_level, log_format)
    settings = load_toml(config, PrepaidAgentConfig)
    _serve(lambda: build_prepaid(settings))


@app.command()
@user_errors
def deploy(
    emergency_credit: Annotated[
        float, typer.Option("--emergency-credit", min=0.0, help="Credit below zero before a cut.")
    ] = 20.0,
    advance_buffer: Annotated[
        float,
        typer.Option("--advance-buffer", min=0.0, help="Least the float keeps ahead of use."),
    ] = 10.0,
    threshold: Annotated[
        list[float] | None,
        typer.Option("--threshold", help="Low-credit warning level (repeat; default 10, 5, 0)."),
    ] = None,
    vending_key: Annotated[
        str | None, typer.Option("--vending-key", help="Address of the key that signs vouchers.")
    ] = None,
    float_amount: Annotated[
        float, typer.Option("--float", min=0.0, help="Credit to put in the float now.")
    ] = 0.0,
    mint: Annotated[
        bool, typer.Option("--mint", help="Mint the float's credit first (treasury role).")
    ] = False,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
    as_json: JsonOption = False,
) -> None:
    """Deploy PrepaidMeter beside the deployment's market and add it to the deployment file
    (the sender becomes its grid role: enrolment, rules, vending key, float)."""
    from dataclasses import replace

    from meterchain.chain.client import EnergyMarketClient
    from meterchain.chain.deployment import load_deployment, save_deployment
    from meterchain.chain.node import connect
    from meterchain.chain.sender import TransactionSender
    from meterchain.chain.units import to_units
    from meterchain.prepaid.client import PrepaidMeterClient, PrepaidSettings, deploy_prepaid

    record = load_deployment(deployment)
    w3 = connect(rpc or record.rpc_url)
    account = _account(w3, keystore, password_file, password_env)
    sender = TransactionSender(w3, account)
    market = EnergyMarketClient(sender, record.address("EnergyMarket"))
    decimals = market.credit.decimals
    levels = threshold if threshold is not None else [10.0, 5.0, 0.0]
    settings = PrepaidSettings(
        emergency_credit=to_units(emergency_credit, decimals),
        advance_buffer=to_units(advance_buffer, decimals),
        thresholds=tuple(to_units(abs(t), decimals) * (-1 if t < 0 else 1) for t in levels),
        vending_key=vending_key,
    )
    address = deploy_prepaid(sender, market.address, settings)
    client = PrepaidMeterClient(sender, address)
    if float_amount > 0:
        units = to_units(float_amount, decimals)
        if mint:
            client.credit.mint(account.address, units)
        client.fund_float(units)
    path = save_deployment(
        replace(record, contracts={**record.contracts, "PrepaidMeter": address}), deployment
    )
    _print(
        {"PrepaidMeter": address, "deployment": str(path)},
        as_json,
        f"PrepaidMeter at {address} beside market {market.address}; float "
        f"{client.credit.to_currency(client.float_balance())}; deployment file {path}",
    )


@app.command()
@user_errors
def enrol(
    meter: MeterOption,
    holder: Annotated[str, typer.Option(help="The household's address (may withdraw credit).")],
    never_cut: Annotated[
        bool, typer.Option("--never-cut", help="Never cut off (life-sustaining equipment).")
    ] = False,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
    as_json: JsonOption = False,
) -> None:
    """Run a registered meter prepaid (its registry owner must be the PrepaidMeter)."""
    client, _ = _client(deployment, rpc, keystore, password_file, password_env)
    client.enrol(meter, holder, never_cut=never_cut)
    view = _service(client).status(meter)
    _print(view.as_json(), as_json, f"meter {meter} is prepaid: {_line(view.as_json())}")


@app.command("never-cut")
@user_errors
def never_cut(
    meter: MeterOption,
    off: Annotated[bool, typer.Option("--off", help="Take it off the list instead.")] = False,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
) -> None:
    """Put a meter on the never-cut list (medical equipment), or take it off (--off)."""
    client, _ = _client(deployment, rpc, keystore, password_file, password_env)
    client.set_never_cut(meter, not off)
    console.print(f"meter {meter} is {'no longer ' if off else ''}on the never-cut list")


@app.command()
@user_errors
def holiday(
    day: Annotated[list[str], typer.Argument(help="Local dates, e.g. 2026-12-25.")],
    remove: Annotated[bool, typer.Option("--remove", help="Unmark them instead.")] = False,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
) -> None:
    """Mark public holidays (no cut-off on them, nor, by default, the day before)."""
    from meterchain.prepaid.rules import day_number

    try:
        days = [date.fromisoformat(d) for d in day]
    except ValueError as exc:
        raise ConfigError(f"{exc}: give dates as YYYY-MM-DD") from None
    client, _ = _client(deployment, rpc, keystore, password_file, password_env)
    client.set_holidays([day_number(d) for d in days], not remove)
    console.print(
        f"{'unmarked' if remove else 'marked'} {', '.join(d.isoformat() for d in days)}"
        f" as public holidays"
    )


@app.command()
@user_errors
def topup(
    meter: MeterOption,
    amount: AmountOption,
    mint: Annotated[
        bool, typer.Option("--mint", help="Mint the credit to the payer first (treasury role).")
    ] = False,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    keystore: Annotated[
        Path | None,
        typer.Option("--keystore", help="The payer's wallet (default on anvil: dev account 0)."),
    ] = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
    as_json: JsonOption = False,
) -> None:
    """Top a meter up from the payer's wallet (an EIP-2612 permit: no separate approval);
    its debt (emergency credit, grace) is repaid first, and it is reconnected above zero."""
    from meterchain.chain.units import to_units

    client, account = _client(deployment, rpc, keystore, password_file, password_env)
    if mint:
        try:
            units = to_units(amount, client.credit.decimals)
        except ValueError as exc:
            raise ConfigError(f"--amount {amount!r}: {exc}") from None
        client.credit.mint(account.address, units)
    result = _service(client).top_up(meter, amount, account)
    payload = result.as_json()
    _print(
        payload,
        as_json,
        f"topped meter {meter} up with {result.amount} ({result.repaid} repaid emergency "
        f"credit){'; reconnected' if result.reconnected else ''}: "
        f"{_line(result.after.as_json())}",
    )


@app.command()
@user_errors
def status(
    meter: MeterOption,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    as_json: JsonOption = False,
) -> None:
    """A meter's credit, supply state (supplied, grace, cut_off) and since when."""
    client, _ = _client(deployment, rpc, None, None, PASSWORD_ENV)
    view = _service(client).status(meter)
    _print(view.as_json(), as_json, _line(view.as_json()))


@voucher_app.command("new")
@user_errors
def voucher_new(
    meter: MeterOption,
    amount: AmountOption,
    vending_keystore: Annotated[
        Path, typer.Option("--vending-keystore", help="The utility's vending key.")
    ],
    serial: Annotated[
        int | None,
        typer.Option(min=0, help="The voucher's serial (default: a random 63-bit number)."),
    ] = None,
    expires_in_days: Annotated[
        float | None, typer.Option("--expires-in-days", min=0.0, help="Default: never.")
    ] = None,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
    as_json: JsonOption = False,
) -> None:
    """Sign a voucher for one meter with the vending key and print its code (nothing is sent:
    the code is redeemed once, for that meter, with `voucher redeem` or the web page)."""
    vending = load_keystore(vending_keystore, read_password(env=password_env, file=password_file))
    client, _ = _client(deployment, rpc, None, None, PASSWORD_ENV)
    expiry = 0
    if expires_in_days is not None:
        expiry = int((datetime.now(UTC) + timedelta(days=expires_in_days)).timestamp())
    issued = _service(client).issue_voucher(meter, amount, vending, serial=serial, expiry=expiry)
    _print(
        issued.as_json(),
        as_json,
        f"voucher for meter {meter}, {issued.amount}, serial {issued.signed.voucher.serial}:\n"
        f"{issued.code}",
    )


@voucher_app.command("redeem")
@user_errors
def voucher_redeem(
    meter: MeterOption,
    code: Annotated[str, typer.Option("--code", help="The code printed on the voucher.")],
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
    as_json: JsonOption = False,
) -> None:
    """Redeem a voucher code for a meter (any account may send it)."""
    client, _ = _client(deployment, rpc, keystore, password_file, password_env)
    result = _service(client).redeem_voucher(meter, code)
    _print(
        result.as_json(),
        as_json,
        f"voucher of {result.amount} redeemed for meter {meter}"
        f"{'; reconnected' if result.reconnected else ''}: {_line(result.after.as_json())}",
    )


def _line(view: dict[str, object]) -> str:
    return f"credit {view['credit']}, {view['state']} since {view['since']}"
