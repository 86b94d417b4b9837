"""Start and stop a local anvil node as a child process; connect to any EVM JSON-RPC URL.

anvil comes from the npm package `@foundry-rs/anvil` (pinned in package-lock.json). We run
its native binary directly rather than the `node_modules/.bin/anvil` node wrapper: the wrapper
exits as soon as it forwards SIGTERM, before anvil has written its state file, so a restart
could read a half-written or stale state.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import platform
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3
from web3.middleware import ExtraDataToPOAMiddleware
from web3.providers.rpc.utils import ExceptionRetryConfiguration

from meterchain.chain.errors import ChainUnavailable, NodeStartError

DEV_MNEMONIC = "test test test test test test test test test test test junk"  # anvil's; dev only
ANVIL_CHAIN_ID = 31337
HARDFORK = "paris"  # Energy Web Chain's level: no PUSH0, MCOPY or transient storage
# States anvil keeps in memory (--prune-history): none on disk, so a long run never grows,
# and enough that a call which resolved "latest" just before a block was mined finds its state.
RECENT_STATES = 64
STATE_FILE = "state.json"
ANVIL_ENV = "MCHAIN_ANVIL"

_SETUP_HINT = "run `make setup` (or `npm ci`) in the meterchain checkout"


@dataclass
class AnvilNode:
    """A running anvil child process and where to reach it."""

    rpc_url: str
    port: int
    state_dir: Path | None
    process: subprocess.Popen[bytes]
    work_dir: Path = field(repr=False, default=Path("."))  # HOME and log live here
    _temp: tempfile.TemporaryDirectory[str] | None = field(repr=False, default=None)
    _lock: TextIO | None = field(repr=False, default=None)  # holds flock on the state dir

    @property
    def log_path(self) -> Path:
        return self.work_dir / "anvil.log"

    @property
    def state_file(self) -> Path | None:
        return None if self.state_dir is None else self.state_dir / STATE_FILE

    def stderr_tail(self, lines: int = 20) -> str:
        return _tail(self.log_path, lines)


def find_anvil() -> Path:
    """The anvil binary: $MCHAIN_ANVIL, else the one npm installed next to this checkout."""
    override = os.environ.get(ANVIL_ENV)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise NodeStartError(
                f"{ANVIL_ENV}={override} is not an executable file: point it at an anvil "
                f"binary, or unset it and {_SETUP_HINT}"
            )
        return path
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    native = f"node_modules/@foundry-rs/anvil-{platform.system().lower()}-{arch}/bin/anvil"
    roots = [*Path(__file__).resolve().parents, *Path.cwd().resolve().parents, Path.cwd()]
    for root in roots:
        for candidate in (root / native, root / "node_modules/.bin/anvil"):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    raise NodeStartError(
        f"anvil not found (looked for {native} above {Path(__file__).parent} and the current "
        f"directory): {_SETUP_HINT}, or set {ANVIL_ENV} to an anvil binary"
    )


def start_anvil(
    port: int = 0,
    state_dir: Path | None = None,
    *,
    block_time_s: float | None = None,
    accounts: int = 10,
    mnemonic: str = DEV_MNEMONIC,
    no_mining: bool = False,
    state_interval_s: float | None = None,
    chain_id: int | None = None,
    startup_timeout_s: float = 15.0,
) -> AnvilNode:
    """Start anvil on 127.0.0.1 and return once it answers eth_chainId.

    port 0 picks a free port. With `state_dir` the chain is loaded from and dumped to
    `state_dir/state.json` (on SIGTERM, and every `state_interval_s` if given), so a restart
    finds the same chain; anvil's HOME and log live there too. Without it all goes to a
    temporary directory removed by `stop_anvil`. `chain_id` defaults to anvil's 31337.
    """
    binary = find_anvil()
    temp: tempfile.TemporaryDirectory[str] | None = None
    if state_dir is None:
        temp = tempfile.TemporaryDirectory(prefix="meterchain-anvil-")
        work_dir = Path(temp.name)
    else:
        state_dir = Path(state_dir).resolve()
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NodeStartError(
                f"cannot create the chain state directory {state_dir}: {exc}"
            ) from None
        work_dir = state_dir
    (work_dir / "home").mkdir(exist_ok=True)
    lock = _lock_state_dir(state_dir) if state_dir is not None else None
    if port and not _port_is_free(port):
        _unlock(lock)
        raise NodeStartError(
            f"port {port} on 127.0.0.1 is in use (another node?); stop it, or pass another "
            "port (0 picks a free one)"
        )
    attempts = 3 if port == 0 else 1
    try:
        for attempt in range(attempts):
            chosen = port or _free_port()
            node = _spawn(
                binary, chosen, state_dir, work_dir, temp,
                block_time_s=block_time_s, accounts=accounts, mnemonic=mnemonic,
                no_mining=no_mining, state_interval_s=state_interval_s, chain_id=chain_id,
            )  # fmt: skip
            try:
                _wait_until_ready(node, startup_timeout_s)
            except NodeStartError:
                _terminate(node.process, timeout_s=5)
                if attempt + 1 < attempts and "in use" in node.stderr_tail().lower():
                    continue
                raise
            node._lock = lock
            _running.add(node)
            return node
    except BaseException:
        _unlock(lock)
        if temp is not None:
            temp.cleanup()
        raise
    raise AssertionError("unreachable")  # pragma: no cover


def stop_anvil(node: AnvilNode, timeout_s: float = 60.0) -> None:
    """Stop anvil with SIGTERM so it dumps its state (if it has a state dir); idempotent."""
    _running.discard(node)
    code = _terminate(node.process, timeout_s)
    _unlock(node._lock)
    node._lock = None
    if node._temp is not None:
        node._temp.cleanup()
        node._temp = None
    if code is None:
        raise NodeStartError(
            f"anvil (pid {node.process.pid}) did not stop within {timeout_s:g} s after SIGTERM "
            "and was killed; its state file may be stale"
        )


def connect(rpc_url: str, *, timeout_s: float = 30.0) -> Web3:
    """A Web3 for `rpc_url` (http/https) that is known to answer; raises ChainUnavailable."""
    if not rpc_url.startswith(("http://", "https://")):
        raise ChainUnavailable(rpc_url, "only http:// and https:// JSON-RPC URLs are supported")
    provider = HTTPProvider(
        rpc_url,
        request_kwargs={"timeout": timeout_s},
        exception_retry_configuration=ExceptionRetryConfiguration(
            errors=(requests.ConnectionError, requests.Timeout), retries=2, backoff_factor=0.1
        ),
    )
    w3 = Web3(provider)
    try:
        chain_id = w3.eth.chain_id
    except Exception as exc:
        raise ChainUnavailable(rpc_url, _describe(exc)) from None
    if chain_id != ANVIL_CHAIN_ID:
        # Proof-of-authority chains (Energy Web's AuRa, Clique) put more than 32 bytes in extraData.
        w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    return w3


def dev_account(index: int = 0, mnemonic: str = DEV_MNEMONIC) -> LocalAccount:
    """Anvil's dev account `index` (public test keys: never use them on a real chain)."""
    Account.enable_unaudited_hdwallet_features()
    account: LocalAccount = Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{index}")
    return account


def _spawn(
    binary: Path,
    port: int,
    state_dir: Path | None,
    work_dir: Path,
    temp: tempfile.TemporaryDirectory[str] | None,
    *,
    block_time_s: float | None,
    accounts: int,
    mnemonic: str,
    no_mining: bool,
    state_interval_s: float | None,
    chain_id: int | None,
) -> AnvilNode:
    args = [
        str(binary),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--hardfork", HARDFORK,
        "--accounts", str(accounts),
        "--mnemonic", mnemonic,
        # Keep recent states in memory (none on disk: it never grows), so a call that resolved
        # "latest" just before a block was mined still finds its state.
        "--prune-history", str(RECENT_STATES),
        "--silent",
    ]  # fmt: skip
    if state_dir is not None:
        args += ["--state", str(state_dir / STATE_FILE)]
        if state_interval_s is not None:
            args += ["--state-interval", str(max(1, round(state_interval_s)))]
    if chain_id is not None:
        args += ["--chain-id", str(chain_id)]
    if no_mining:
        args.append("--no-mining")
    elif block_time_s is not None:
        args += ["--block-time", f"{block_time_s:g}"]
    env = {**os.environ, "HOME": str(work_dir / "home")}
    log = (work_dir / "anvil.log").open("wb")  # this run's output only
    try:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work_dir,
            start_new_session=True,  # a Ctrl-C in the terminal is ours to handle, not anvil's
        )
    except OSError as exc:
        raise NodeStartError(f"cannot run {binary}: {exc}; {_SETUP_HINT}") from None
    finally:
        log.close()
    return AnvilNode(
        rpc_url=f"http://127.0.0.1:{port}",
        port=port,
        state_dir=state_dir,
        process=process,
        work_dir=work_dir,
        _temp=temp,
    )


def _wait_until_ready(node: AnvilNode, timeout_s: float) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        code = node.process.poll()
        if code is not None:
            raise NodeStartError(
                f"anvil exited with code {code} while starting on port {node.port}"
                f"{_state_hint(node)}; its output ends with:\n{node.stderr_tail()}"
            )
        request = urllib.request.Request(
            node.rpc_url, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=1.0) as response:
                if "result" in json.loads(response.read()):
                    return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise NodeStartError(
                f"anvil did not answer eth_chainId at {node.rpc_url} within {timeout_s:g} s; "
                f"its output ends with:\n{node.stderr_tail()}"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def _state_hint(node: AnvilNode) -> str:
    if node.state_file is not None and node.state_file.exists():
        return f" (is {node.state_file} a state file anvil wrote? move it away to start afresh)"
    return ""


def _terminate(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """SIGTERM, wait, then SIGKILL; the exit code, or None if it had to be killed."""
    if process.poll() is not None:
        return process.returncode
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


def _lock_state_dir(state_dir: Path) -> TextIO:
    """Take an exclusive lock on the state dir: two nodes must never share one state file."""
    lock = (state_dir / ".lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise NodeStartError(
            f"the chain state in {state_dir} is in use by {holder}; stop that node first, "
            "or use another --state directory"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}\n")
    lock.flush()
    return lock


def _unlock(lock: TextIO | None) -> None:
    if lock is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no obstacle
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(no output)"


def _describe(exc: BaseException) -> str:
    """A one-line reason from a transport error, without requests' nested reprs."""
    text = str(exc)
    if isinstance(exc, requests.Timeout):
        return "timed out"
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "unknown host name"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network unreachable"),
    ):
        if needle in text:
            return reason
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    first = (text.strip() or type(exc).__name__).splitlines()[0]
    return first if len(first) <= 200 else first[:200] + "…"


class _Registry:
    """Nodes started by this process, stopped at interpreter exit so none is left behind."""

    def __init__(self) -> None:
        self._nodes: list[AnvilNode] = []
        self._lock = threading.Lock()
        atexit.register(self.stop_all)

    def add(self, node: AnvilNode) -> None:
        with self._lock:
            self._nodes.append(node)

    def discard(self, node: AnvilNode) -> None:
        with self._lock:
            self._nodes = [n for n in self._nodes if n is not node]

    def stop_all(self) -> None:
        with self._lock:
            nodes, self._nodes = self._nodes, []
        for node in nodes:
            with contextlib.suppress(Exception):
                stop_anvil(node, timeout_s=10)


_running = _Registry()

__all__ = [
    "ANVIL_CHAIN_ID",
    "DEV_MNEMONIC",
    "HARDFORK",
    "AnvilNode",
    "connect",
    "dev_account",
    "find_anvil",
    "start_anvil",
    "stop_anvil",
]
