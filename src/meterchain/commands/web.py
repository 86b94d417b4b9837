"""`meterchain web`: the web interface and JSON API (see docs/web.md).

`meterchain web [--host 127.0.0.1] [--port 8080] [--db URL]` serves the operator's database;
with `--broker` it also runs the monitor agent on the community's MQTT bus (boards' heartbeats,
alarms, configuration round trips), with `--deployment` the chain actions (register, rotate,
revoke meters; tariffs); with `--demo SCENARIO` it runs that community live beside it.
`meterchain web add-user` creates logins.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from meterchain.commands.errors import USER_ERROR_NAMES, user_errors

if TYPE_CHECKING:
    from meterchain.web.chain_actions import ChainActions

USER_ERROR_NAMES.update(
    {
        "meterchain.config:ConfigError",
        "meterchain.store.errors:StoreError",
        "meterchain.chain.errors:ChainError",
        "meterchain.sim.errors:SimulationError",
        "meterchain.agents.bus_mqtt:BusUnavailable",
        "builtins:OSError",
    }
)

app = typer.Typer(
    help="The web interface and JSON API (OpenAPI at /docs).",
    invoke_without_command=True,
    no_args_is_help=False,
)
console = Console(highlight=False)

DbOption = Annotated[
    str, typer.Option("--db", help="Database URL: sqlite:///FILE or postgresql+psycopg://…")
]


@app.callback()
@user_errors
def web(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).", min=0, max=65535)] = 8080,
    db: DbOption = "sqlite:///var/web.db",
    broker: Annotated[
        str | None, typer.Option(help="MQTT broker HOST:PORT of the community (monitor agent).")
    ] = None,
    broker_dir: Annotated[
        Path | None,
        typer.Option(
            "--broker-dir",
            help="The files `meterchain broker config` wrote: the monitor logs in with "
            "credentials/monitor.password, over TLS with ca.crt.",
        ),
    ] = None,
    deployment: Annotated[
        Path | None, typer.Option(help="Deployment file of `chain deploy` (chain actions).")
    ] = None,
    rpc: Annotated[
        str | None, typer.Option(help="JSON-RPC URL (default: the deployment's).")
    ] = None,
    keystore: Annotated[
        Path | None, typer.Option(help="Operator's keystore (default on anvil: dev account 0).")
    ] = None,
    demo: Annotated[
        Path | None, typer.Option(help="Run this scenario live beside the interface.")
    ] = None,
    demo_days: Annotated[float, typer.Option(help="Days the demo runs.", min=0.1)] = 7.0,
    interval_wall_s: Annotated[
        float, typer.Option(help="Real seconds per demo interval.", min=0.2)
    ] = 3.0,
    webhook: Annotated[str | None, typer.Option(help="POST every alarm to this URL.")] = None,
    timezone: Annotated[str, typer.Option(help="The community's time zone.")] = "America/Fortaleza",
    wallets: Annotated[
        Path | None,
        typer.Option(
            help="Directory of households' keystores, METER_ID.json (password in "
            "$MCHAIN_WALLETS_PASSWORD): the web then retires, tops up, buys and pays for them."
        ),
    ] = None,
    vending_keystore: Annotated[
        Path | None,
        typer.Option(help="The utility's vending key (password in $MCHAIN_KEY_PASSWORD)."),
    ] = None,
) -> None:
    """Serve the web interface (and JSON API at /api, OpenAPI at /docs)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = db
        return
    from meterchain.web.settings import WebSettings

    settings = WebSettings(host=host, port=port, db_url=db, timezone=timezone)
    asyncio.run(
        _serve(
            settings, broker, deployment, rpc, keystore, demo, demo_days, interval_wall_s, webhook,
            (wallets, vending_keystore), broker_dir,
        )
    )  # fmt: skip


async def _serve(
    settings: object, broker: str | None, deployment: Path | None, rpc: str | None,
    keystore: Path | None, demo: Path | None, demo_days: float, interval_wall_s: float,
    webhook: str | None, keys: tuple[Path | None, Path | None] = (None, None),
    broker_dir: Path | None = None,
) -> None:  # fmt: skip
    from meterchain.config import ConfigError, Scenario, load_toml
    from meterchain.web.server import DemoOptions, serve_until, start_web
    from meterchain.web.settings import WebSettings

    assert isinstance(settings, WebSettings)
    demo_options = None
    if demo is not None:
        scenario = load_toml(demo, Scenario).model_copy(update={"days": demo_days})
        demo_options = DemoOptions(scenario, Path("var/web-demo"), interval_wall_s)
    bus = None
    if broker is not None and demo is None:
        from meterchain.agents.bus_mqtt import MqttBus

        host, _, port = broker.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--broker wants HOST:PORT, got {broker!r}")
        credentials, ca = None, None
        if broker_dir is not None:  # the community broker takes no anonymous client
            from meterchain.agents.broker_files import CA_FILE, CREDENTIALS_DIR

            secret = broker_dir / CREDENTIALS_DIR / "monitor.password"
            try:
                credentials = ("monitor", secret.read_text().strip())
            except OSError as exc:
                raise ConfigError(f"cannot read the monitor's credential {secret}: {exc}") from None
            ca = str(broker_dir / CA_FILE)
        bus = MqttBus(host, int(port), credentials=credentials, tls_ca_file=ca)
    chain = None
    if deployment is not None and demo is None:
        chain = _chain_actions(deployment, rpc, keystore, *keys)
    running = await start_web(
        settings, demo=demo_options, bus=bus, chain=chain, webhook_url=webhook
    )
    console.print(
        f"[bold]meterchain web interface:[/] {running.url}  (API docs: {running.url}/docs)",
        soft_wrap=True,
    )
    if running.demo is not None:
        table = Table(title="demo logins")
        for column in ("role", "user", "password"):
            table.add_column(column)
        for row in running.demo.logins():
            table.add_row(*row)
        console.print(table)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await serve_until(running, stop, console.print)


def _chain_actions(
    deployment: Path,
    rpc: str | None,
    keystore: Path | None,
    wallets: Path | None = None,
    vending_keystore: Path | None = None,
) -> ChainActions:
    from meterchain.chain.client import EnergyMarketClient
    from meterchain.chain.deployment import load_deployment
    from meterchain.chain.keystore import PASSWORD_ENV, load_keystore, read_password
    from meterchain.chain.node import ANVIL_CHAIN_ID, connect, dev_account
    from meterchain.chain.sender import TransactionSender
    from meterchain.web.chain_actions import ChainActions, ledger_contracts, load_wallets

    record = load_deployment(deployment)
    w3 = connect(rpc or record.rpc_url)
    if keystore is not None:
        account = load_keystore(keystore, read_password(env=PASSWORD_ENV, file=None))
    elif int(w3.eth.chain_id) == ANVIL_CHAIN_ID:
        account = dev_account(0)
    else:
        from meterchain.chain.errors import ChainError

        raise ChainError("not a local anvil: pass --keystore with the operator's key")
    sender = TransactionSender(w3, account)
    vending = None
    if vending_keystore is not None:
        vending = load_keystore(vending_keystore, read_password(env=PASSWORD_ENV, file=None))
    households = {}
    if wallets is not None:
        households = load_wallets(wallets, read_password(env="MCHAIN_WALLETS_PASSWORD"))
    return ChainActions(
        EnergyMarketClient(sender, record.address("EnergyMarket")),
        ledger_contracts(
            record.contracts, sender, from_block=record.deployed_at_block, vending_key=vending
        ),
        households,
    )


@app.command("add-user")
@user_errors
def add_user(
    ctx: typer.Context,
    username: Annotated[str, typer.Option(help="Login name.")],
    role: Annotated[str, typer.Option(help="operator or prosumer.")] = "prosumer",
    meter_id: Annotated[str | None, typer.Option("--meter-id", help="A prosumer's meter.")] = None,
    language: Annotated[str, typer.Option(help="pt-BR or en.")] = "pt-BR",
    password_env: Annotated[
        str, typer.Option(help="Environment variable holding the password.")
    ] = "MCHAIN_WEB_PASSWORD",
) -> None:
    """Create a login (the password comes from an environment variable, never the command line)."""
    import os

    from meterchain.store.db import open_store
    from meterchain.web.security import create_user

    password = os.environ.get(password_env)
    if not password:
        raise ValueError(f"set the password in ${password_env} (it is never read from arguments)")
    store = open_store(str(ctx.obj))
    try:
        with store.session() as session:
            create_user(
                session, username, password, role=role, meter_id=meter_id, language=language
            )
    finally:
        store.close()
    console.print(f"user {username} ({role}{', meter ' + meter_id if meter_id else ''}) created")
