"""`meterchain agent …`, `meterchain market run`, `meterchain grid run`: the deployed processes.

One process per role and host: `agent run` on each meter's board, `market run` at the
operator, `grid run` at the utility. They talk over an MQTT broker and agree on time through
their configs' `[clock]` and `[schedule]`. `agent register`, `agent fund` and
`agent dev-keystore` set meters up on chain from the command line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from meterchain.agents.broker import BrokerError
from meterchain.agents.bus_mqtt import BusUnavailable
from meterchain.chain.errors import ChainError
from meterchain.chain.keystore import PASSWORD_ENV, PRODUCTION_SCRYPT_N, read_password
from meterchain.commands.errors import USER_ERRORS, user_errors
from meterchain.config import ConfigError, load_toml
from meterchain.log_setup import LOG_FORMAT_ENV, LogSetupError, configure_logging
from meterchain.meters.errors import MeterError
from meterchain.roles import DEFAULT_DEPLOYMENT, BoardConfig, GridConfig, MarketConfig
from meterchain.store.errors import StoreError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

    from meterchain.agents.services import Running
    from meterchain.chain.client import EnergyMarketClient

USER_ERRORS.extend([ConfigError, ChainError, StoreError, BusUnavailable, BrokerError, MeterError])

agent_app = typer.Typer(
    help="Run a board's agent; register and fund meters on chain.", no_args_is_help=True
)
grid_app = typer.Typer(help="Run the grid's agent (tariffs, feeder limits).", no_args_is_help=True)
console = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)

ConfigOption = Annotated[Path, typer.Option("--config", help="The role's TOML file.")]
LogLevel = Annotated[
    str, typer.Option("--log-level", help="debug, info, warning or error (to stderr).")
]
LogFormatOption = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        help=f"text (default) or json: one JSON object per line, for journald and log shippers "
        f"(or set {LOG_FORMAT_ENV}).",
    ),
]
PasswordFile = Annotated[
    Path | None,
    typer.Option("--password-file", help="Read the keystore password from this file."),
]
PasswordEnv = Annotated[
    str,
    typer.Option("--password-env", help="Environment variable holding the keystore password."),
]
DeploymentOption = Annotated[
    Path, typer.Option("--deployment", help="The deployment file `chain deploy` wrote.")
]
RpcOption = Annotated[
    str | None, typer.Option("--rpc", help="JSON-RPC URL (default: the deployment file's).")
]
KeystoreOption = Annotated[
    Path | None,
    typer.Option(
        "--keystore", help="Keystore of the account that sends (default on anvil: dev account 0)."
    ),
]


def _configure_logging(level: str, log_format: str | None) -> None:
    try:
        configure_logging(level, log_format)
    except LogSetupError as exc:
        raise ConfigError(str(exc)) from None


def _announce(line: str) -> None:
    print(line, flush=True)


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """What asyncio itself could not hand to anyone (a socket closed under the MQTT client
    while the broker went away): one line, as every error here; the trace at debug level."""
    exc = context.get("exception")
    what = str(context.get("message", "error in the event loop")).splitlines()[0]
    log = logging.getLogger("meterchain.loop")
    log.warning("%s: %s", what, f"{type(exc).__name__}: {exc}" if exc else "no exception")
    if isinstance(exc, BaseException):
        log.debug("the trace of that error", exc_info=exc)


def _serve(build: Callable[[], Running]) -> None:
    """Build a process's parts and run them until SIGINT or SIGTERM."""
    from meterchain.agents.services import serve

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_loop_exception)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        running = build()
        await serve(running, stop, _announce)
        _announce(f"{running.description}: stopped")

    asyncio.run(main())


@agent_app.command("run")
@user_errors
def agent_run(
    config: ConfigOption, log_level: LogLevel = "info", log_format: LogFormatOption = None
) -> None:
    """Run the agent on a meter's board: read, plan, trade, report delivery."""
    from meterchain.agents.services import build_board

    _configure_logging(log_level, log_format)
    board = load_toml(config, BoardConfig)
    _serve(lambda: build_board(board))


@user_errors
def market_run(
    config: ConfigOption, log_level: LogLevel = "info", log_format: LogFormatOption = None
) -> None:
    """Run the community's market agent: collect orders, clear, settle on chain."""
    from meterchain.agents.services import build_market

    _configure_logging(log_level, log_format)
    market = load_toml(config, MarketConfig)
    _serve(lambda: build_market(market))


@grid_app.command("run")
@user_errors
def grid_run(
    config: ConfigOption, log_level: LogLevel = "info", log_format: LogFormatOption = None
) -> None:
    """Run the grid's agent: announce tariffs, share out the feeder's export limit."""
    from meterchain.agents.services import build_grid

    _configure_logging(log_level, log_format)
    grid = load_toml(config, GridConfig)
    _serve(lambda: build_grid(grid))


# ---- setting meters up on chain ---------------------------------------------------------------


class Kind(StrEnum):
    consumer = "consumer"
    prosumer = "prosumer"
    generator = "generator"
    ev_charger = "ev-charger"


def _market(
    deployment: Path, rpc: str | None, keystore: Path | None, password_file: Path | None,
    password_env: str,
) -> tuple[EnergyMarketClient, LocalAccount]:  # fmt: skip
    """The market client, called by the given keystore's account (dev account 0 on anvil)."""
    from meterchain.chain.client import EnergyMarketClient
    from meterchain.chain.deployment import load_deployment
    from meterchain.chain.node import connect
    from meterchain.chain.sender import TransactionSender

    record = load_deployment(deployment)
    w3 = connect(rpc or record.rpc_url)
    account = _account(w3, keystore, password_file, password_env)
    client = EnergyMarketClient(TransactionSender(w3, account), record.address("EnergyMarket"))
    return client, account


def _account(
    w3: Web3, keystore: Path | None, password_file: Path | None, password_env: str
) -> LocalAccount:
    from meterchain.chain.keystore import load_keystore
    from meterchain.chain.node import ANVIL_CHAIN_ID, dev_account

    if keystore is not None:
        return load_keystore(keystore, read_password(env=password_env, file=password_file))
    chain_id = int(w3.eth.chain_id)
    if chain_id != ANVIL_CHAIN_ID:
        raise ChainError(
            f"chain {chain_id} is not a local anvil (chain id {ANVIL_CHAIN_ID}): pass "
            "--keystore FILE; anvil's public dev keys are for local use only"
        )
    return dev_account(0)


@agent_app.command("register")
@user_errors
def register(
    meter_id: Annotated[str, typer.Option("--meter-id", help="The meter's id.")],
    signer: Annotated[
        str | None, typer.Option(help="Address of the board's key that signs for the meter.")
    ] = None,
    board_keystore: Annotated[
        Path | None,
        typer.Option(
            "--board-keystore",
            help="Or: a keystore on this machine (tests); a board's key stays on the board, "
            "so give its address (`chain key address`) with --signer.",
        ),
    ] = None,
    owner: Annotated[
        str | None, typer.Option(help="Who may withdraw the meter's balance (default: signer).")
    ] = None,
    kind: Annotated[Kind, typer.Option(help="What the meter measures.")] = Kind.prosumer,
    max_power_w: Annotated[
        int,
        typer.Option(
            "--max-power-w", min=1, help="What the connection can carry (W); more is implausible."
        ),
    ] = 15_000,
    import_wh: Annotated[
        int, typer.Option("--import-wh", min=0, help="The import register at installation (Wh).")
    ] = 0,
    export_wh: Annotated[
        int, typer.Option("--export-wh", min=0, help="The export register at installation (Wh).")
    ] = 0,
    baseline_at: Annotated[
        str | None,
        typer.Option(
            "--baseline-at",
            help="When the registers were read (ISO 8601; default now). With a virtual clock, "
            "give a time before the agents' first interval.",
        ),
    ] = None,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
) -> None:
    """Register a meter and its board's signing key, put it in the market and record its
    registers at installation as its baseline (registrar role, and the market's grid role)."""
    from meterchain.chain.client import MeterKind
    from meterchain.chain.keystore import keystore_address

    if board_keystore is not None and signer is None:
        address = keystore_address(board_keystore)
    elif signer is not None and board_keystore is None:
        address = signer
    else:
        raise ConfigError("give the board's key as either --signer ADDRESS or --board-keystore")
    read_at = _moment("--baseline-at", baseline_at)
    client, account = _market(deployment, rpc, keystore, password_file, password_env)
    meter_kind = MeterKind[kind.name.upper()]
    registry = client.registry
    receipt = registry.register_meter(meter_id, address, owner or address, meter_kind, max_power_w)
    registry.assign_market(meter_id, client.address)
    baseline_interval = _interval_before(read_at, client.interval_seconds)
    client.set_baseline(meter_id, baseline_interval, import_wh, export_wh, "enrolled")
    console.print(
        f"meter {meter_id} registered ({kind.value}, {max_power_w} W): signer {address}, "
        f"owner {owner or address}, by {account.address} in block {receipt['blockNumber']}; "
        f"in market {client.address} from interval {baseline_interval} with registers "
        f"{import_wh}/{export_wh} Wh",
        soft_wrap=True,
    )


def _moment(option: str, value: str | None) -> datetime:
    """An ISO 8601 time with its zone from the command line (now when not given)."""
    if value is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{option} {value!r} is not an ISO 8601 time, e.g. 2026-12-05T10:00:00+00:00"
        ) from None
    if moment.tzinfo is None:
        raise ConfigError(f"{option} {value!r} has no time zone; add +00:00 or -03:00")
    return moment


def _interval_before(moment: datetime, interval_s: int) -> int:
    """Registers read during an interval count as the end of the one before."""
    return int(moment.timestamp()) // interval_s * interval_s - interval_s


@grid_app.command("baseline")
@user_errors
def baseline(
    meter_id: Annotated[str, typer.Option("--meter-id", help="The meter's id.")],
    import_wh: Annotated[
        int, typer.Option("--import-wh", min=0, help="The import register now (Wh).")
    ],
    export_wh: Annotated[
        int, typer.Option("--export-wh", min=0, help="The export register now (Wh).")
    ],
    reason: Annotated[
        str, typer.Option(help="Why, for the record (at most 32 bytes).")
    ] = "meter replaced",
    at: Annotated[
        str | None,
        typer.Option(help="When the registers were read (ISO 8601; default now)."),
    ] = None,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
) -> None:
    """Record a meter's registers anew (the grid's role): a replaced meter, whose registers
    start again near zero, or a corrected fault. Readings after it are counted from there;
    nothing settled before is touched, so nothing is counted twice."""
    client, account = _market(deployment, rpc, keystore, password_file, password_env)
    interval = _interval_before(_moment("--at", at), client.interval_seconds)
    receipt = client.set_baseline(meter_id, interval, import_wh, export_wh, reason)
    console.print(
        f"meter {meter_id}: baseline {import_wh}/{export_wh} Wh at the end of interval "
        f"{interval} ({reason}), by {account.address} in block {receipt['blockNumber']}",
        soft_wrap=True,
    )


@agent_app.command("fund")
@user_errors
def fund(
    amount: Annotated[float, typer.Option(help="Currency units to deposit.", min=0.0)],
    meter_id: Annotated[
        str | None, typer.Option("--meter-id", help="The meter whose balance to fund.")
    ] = None,
    grid: Annotated[
        bool, typer.Option("--grid", help="Fund the grid account instead (it pays feed-in).")
    ] = False,
    mint: Annotated[
        bool, typer.Option("--mint", help="Mint the credit to the sender first (treasury role).")
    ] = False,
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    rpc: RpcOption = None,
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Deposit credit into a meter's balance in the market (or into the grid account)."""
    from meterchain.chain.units import to_units

    if grid == (meter_id is not None):
        raise ConfigError("say what to fund: --meter-id ID or --grid")
    client, account = _market(deployment, rpc, keystore, password_file, password_env)
    credit = client.credit
    units = to_units(amount, credit.decimals)
    if units <= 0:
        raise ConfigError(f"{amount:g} is less than the credit's smallest unit")
    if mint:
        credit.mint(account.address, units)
    held = credit.balance_of(account.address)
    if held < units:
        raise ChainError(
            f"{account.address} holds {credit.to_currency(held)} credit, less than {amount:g}; "
            "pass --mint (with the treasury's key) or top the account up first"
        )
    if grid:
        client.deposit_grid(units)
        balance = client.grid_balance()
        target = "the grid account"
    else:
        assert meter_id is not None
        client.deposit(meter_id, units)
        balance = client.balance_of(meter_id)
        target = f"meter {meter_id}"
    if as_json:
        print(json.dumps({"funded": target, "units": units, "balance_units": balance}))
    else:
        console.print(
            f"deposited {credit.to_currency(units)} into {target}; it now holds "
            f"{credit.to_currency(balance)}"
        )


@agent_app.command("dev-keystore")
@user_errors
def dev_keystore(
    keystore: Annotated[Path, typer.Option(help="Keystore file to create (never overwritten).")],
    index: Annotated[int, typer.Option(help="Which anvil dev account (0 deploys).", min=0)] = 0,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
    scrypt_n: Annotated[
        int, typer.Option("--scrypt-n", help="scrypt work factor (a power of two).")
    ] = PRODUCTION_SCRYPT_N,
) -> None:
    """Put one of anvil's public dev keys in a keystore: for local chains only, never real ones."""
    from meterchain.chain.keystore import create_keystore
    from meterchain.chain.node import dev_account

    password = read_password(env=password_env, file=password_file)
    account = dev_account(index)
    print(create_keystore(keystore, password, scrypt_n=scrypt_n, private_key=account.key))
