"""`meterchain chain …`: run a local node, deploy the contract suite, manage keys."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from meterchain.chain.deployment import DEFAULT_DEPLOYMENT_PATH, Deployment, save_deployment
from meterchain.chain.errors import ChainError
from meterchain.chain.keystore import (
    PASSWORD_ENV,
    PRODUCTION_SCRYPT_N,
    create_keystore,
    keystore_address,
    load_keystore,
    read_password,
)
from meterchain.commands.errors import USER_ERRORS, user_errors
from meterchain.store.errors import StoreError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from meterchain.chain.sender import TransactionSender

# web3 and the node module are imported inside the commands that use them: importing web3
# takes seconds on a board, and every `meterchain …` start reads this module.

USER_ERRORS.extend([ChainError, StoreError])

app = typer.Typer(
    help="Run a local chain node, deploy the contracts, manage keys.", no_args_is_help=True
)
key_app = typer.Typer(help="Encrypted keystore files.", no_args_is_help=True)
app.add_typer(key_app, name="key")
console = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)

PasswordFile = Annotated[
    Path | None,
    typer.Option("--password-file", help="Read the keystore password from this file."),
]
PasswordEnv = Annotated[
    str,
    typer.Option("--password-env", help="Environment variable holding the keystore password."),
]


@app.command()
@user_errors
def up(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1; 0 picks a free one.")] = 8545,
    state: Annotated[
        Path, typer.Option(help="Directory that keeps the chain between runs.")
    ] = Path("var/chain"),
    block_time: Annotated[
        float | None,
        typer.Option("--block-time", help="Mine a block every N seconds (default: per tx)."),
    ] = None,
    dump_every: Annotated[
        float, typer.Option("--dump-every", help="Also save the state every N seconds.")
    ] = 30.0,
) -> None:
    """Run a local anvil node until SIGINT/SIGTERM; its chain is kept in --state."""
    from meterchain.chain.node import ANVIL_CHAIN_ID, HARDFORK, start_anvil, stop_anvil

    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        node = start_anvil(
            port, state, block_time_s=block_time, state_interval_s=dump_every or None
        )
        try:
            print(node.rpc_url, flush=True)
            stderr.print(
                f"anvil on {node.rpc_url}: chain id {ANVIL_CHAIN_ID}, hardfork {HARDFORK}, "
                f"state in {node.state_dir}; Ctrl-C stops it",
                soft_wrap=True,
            )
            while not stop.wait(0.2):
                if node.process.poll() is not None:
                    raise ChainError(
                        f"anvil stopped by itself (exit code {node.process.returncode}); its "
                        f"output ends with:\n{node.stderr_tail()}"
                    )
        finally:
            stop_anvil(node)
        stderr.print(f"stopped; the chain is saved in {node.state_file}", soft_wrap=True)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@app.command()
@user_errors
def deploy(
    rpc: Annotated[
        str, typer.Option(help="JSON-RPC URL of the chain, e.g. http://127.0.0.1:8545.")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print contract name -> address as JSON.")
    ] = False,
    deployment: Annotated[
        Path, typer.Option(help="Where to write the deployment file.")
    ] = DEFAULT_DEPLOYMENT_PATH,
    keystore: Annotated[
        Path | None,
        typer.Option(help="Deployer's keystore (needed on any chain but a local anvil)."),
    ] = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
) -> None:
    """Deploy the whole contract suite and write the deployment file."""
    from web3 import Web3

    from meterchain.chain.node import connect
    from meterchain.chain.sender import TransactionSender

    w3 = connect(rpc)
    chain_id = int(w3.eth.chain_id)
    account = _deployer(chain_id, keystore, password_file, password_env)
    deploy_suite = _deploy_suite()
    sender = TransactionSender(w3, account)
    first_block = int(w3.eth.block_number) + 1
    addresses = deploy_suite(sender)
    record = Deployment(
        chain_id=chain_id,
        rpc_url=rpc,
        deployed_at_block=first_block,
        contracts={name: Web3.to_checksum_address(a) for name, a in addresses.items()},
        deployer=account.address,
    )
    path = save_deployment(record, deployment)
    if as_json:
        print(json.dumps(record.contracts))
        return
    table = Table(title=f"deployed on chain {chain_id} from block {first_block}")
    table.add_column("contract")
    table.add_column("address")
    for name, address in record.contracts.items():
        table.add_row(name, address)
    console.print(table)
    console.print(f"deployment file: {path}")


@key_app.command("new")
@user_errors
def key_new(
    keystore: Annotated[Path, typer.Option(help="Keystore file to create (never overwritten).")],
    password_file: PasswordFile = None,
    password_env: PasswordEnv = PASSWORD_ENV,
    scrypt_n: Annotated[
        int, typer.Option("--scrypt-n", help="scrypt work factor (a power of two).")
    ] = PRODUCTION_SCRYPT_N,
) -> None:
    """Create a new random key in an encrypted keystore; prints its address only."""
    password = read_password(env=password_env, file=password_file)
    print(create_keystore(keystore, password, scrypt_n=scrypt_n))


@key_app.command("address")
@user_errors
def key_address(
    keystore: Annotated[Path, typer.Option(help="Keystore file.")],
) -> None:
    """Print the address a keystore holds (no password needed)."""
    print(keystore_address(keystore))


def _deployer(
    chain_id: int, keystore: Path | None, password_file: Path | None, password_env: str
) -> LocalAccount:
    from meterchain.chain.node import ANVIL_CHAIN_ID, dev_account

    if keystore is not None:
        return load_keystore(keystore, read_password(env=password_env, file=password_file))
    if chain_id != ANVIL_CHAIN_ID:
        raise ChainError(
            f"chain {chain_id} is not a local anvil (chain id {ANVIL_CHAIN_ID}): pass "
            "--keystore FILE with the deployer's key; anvil's public dev keys are for local use"
        )
    return dev_account(0)


def _deploy_suite() -> Callable[[TransactionSender], dict[str, str]]:
    """`meterchain.chain.deploy.deploy_suite`, imported only by the command that needs it."""
    try:
        from meterchain.chain.deploy import deploy_suite
    except ImportError as exc:  # a broken install: say so rather than print a traceback
        raise ChainError(f"cannot load the contract deployment code: {exc}") from None
    return deploy_suite
