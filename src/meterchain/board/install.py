"""`meterchain board install`: a board's agent as a systemd service, from its board.toml.

The plan is computed first, as data (`plan_install`: every file with its path, mode, owner and
content), then carried out (`apply_install`) or printed (`--dry-run`), so the two can never
differ. What a board gets:

* a system user (`meterchain`, in the `dialout` group for the meter's serial port), declared
  in /etc/sysusers.d so an image keeps it, and created at once (systemd-sysusers, or useradd);
* /etc/meterchain/board.toml: the given config with its paths moved to the installed ones
  (store and keystore under /var/lib/meterchain, the deployment file and the broker's CA under
  /etc/meterchain) and its passwords taken from systemd credentials;
* /etc/meterchain/credentials/ (root only): the keystore's and the broker's passwords, handed
  to the service by `LoadCredential=`, so they are never in its environment (which any process
  of the same user may read in /proc);
* /var/lib/meterchain/keystore.json, mode 0600, owned by the service's user: the given
  keystore (re-encrypted with parameters a 1 GB board can afford if it was made heavier), or
  a new key made on the board, whose address the installer prints for registration;
* /etc/systemd/system/meterchain-board.service: `Type=notify` with the watchdog,
  `Restart=on-failure`, logs to journald as JSON, and a sandbox; enabled (and started when
  systemd runs).

`--root DIR` installs into an image tree instead of the running system (as image builders do):
the user goes into DIR/etc/passwd, the unit is enabled with `systemctl --root`.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from meterchain.chain.keystore import (
    BOARD_SCRYPT_N,
    BOARD_SCRYPT_P,
    create_keystore,
    keystore_memory_bytes,
    read_password,
    reencrypt_keystore,
)
from meterchain.config import load_toml
from meterchain.roles import BoardConfig

SERVICE = "meterchain-board"
USER = "meterchain"
CONFIG_DIR = PurePosixPath("/etc/meterchain")
STATE_DIR = PurePosixPath("/var/lib/meterchain")
CREDENTIALS_DIR = CONFIG_DIR / "credentials"
UNIT_DIR = PurePosixPath("/etc/systemd/system")
SYSUSERS_DIR = PurePosixPath("/etc/sysusers.d")
KEY_CREDENTIAL = "keystore-password"
BROKER_CREDENTIAL = "broker-password"
WATCHDOG_S = 60
MEMORY_MAX_MB = 300  # twice the measured peak (docs/board.md): a leak restarts the agent
KEYSTORE_MEMORY_LIMIT = 64 * 2**20  # what one unlock may take on a 1 GB board


class InstallError(Exception):
    """The board cannot be installed as asked; the message says what to change."""


@dataclass(frozen=True)
class PlannedFile:
    """A file the install writes: where (on the target system), what, and whose."""

    path: PurePosixPath
    content: bytes
    mode: int
    owner: str = "root"
    group: str = "root"
    secret: bool = False

    def describe(self) -> str:
        """How `--dry-run` prints it: the header, then the text (secrets are not shown)."""
        header = f"==> {self.path}  ({self.owner}:{self.group} {self.mode:04o})"
        if self.secret:
            return f"{header}\n(secret, {len(self.content)} bytes, not shown)\n"
        return f"{header}\n{self.content.decode()}"


@dataclass(frozen=True)
class PlannedDirectory:
    path: PurePosixPath
    mode: int
    owner: str = "root"
    group: str = "root"


@dataclass
class InstallPlan:
    """Everything `apply_install` does, and the facts it needs."""

    config: BoardConfig
    user: str
    files: list[PlannedFile]
    directories: list[PlannedDirectory]
    keystore_source: Path | None  # copied (re-encrypted if heavy); None: a new key is made
    keystore_password: str
    unit_name: str = f"{SERVICE}.service"
    notes: list[str] = field(default_factory=list)

    def file(self, path: PurePosixPath) -> PlannedFile:
        return next(f for f in self.files if f.path == path)


def default_executable() -> str:
    """The `meterchain` command of the Python that runs this one (the board's venv)."""
    beside = Path(sys.executable).with_name("meterchain")
    return str(beside if beside.exists() else shutil.which("meterchain") or beside)


def plan_install(
    config_path: Path,
    *,
    executable: str,
    user: str = USER,
    environ: dict[str, str] | None = None,
) -> InstallPlan:
    """What installing `config_path` writes; nothing is touched yet."""
    environ = dict(os.environ if environ is None else environ)
    config = load_toml(config_path, BoardConfig)
    base = config_path.resolve().parent

    def given(path: Path) -> Path:
        return path if path.is_absolute() else base / path

    files: list[PlannedFile] = []
    installed: dict[str, Any] = json.loads(config.model_dump_json(exclude_defaults=True))
    installed["store"] = f"sqlite:///{STATE_DIR / 'board.db'}"

    # The key: the given keystore if it exists (its password from the config's source), or a
    # new one made on the board with a random password no person needs to know.
    key_source = given(config.key.keystore)
    if key_source.exists():
        try:
            password = read_password(
                env=config.key.password_env, file=_opt(given, config.key.password_file)
            )
        except Exception as exc:
            raise InstallError(f"cannot read the keystore's password: {exc}") from None
        keystore_source: Path | None = key_source
    else:
        password = secrets.token_urlsafe(32)
        keystore_source = None
    installed["key"] = {
        "keystore": str(STATE_DIR / "keystore.json"),
        "password_credential": KEY_CREDENTIAL,
    }
    files.append(_secret(CREDENTIALS_DIR / KEY_CREDENTIAL, password))

    market = installed.get("market", {})
    if config.market.deployment is not None:
        source = given(config.market.deployment)
        if not source.exists():
            raise InstallError(
                f"the deployment file {source} ([market] deployment) does not exist: copy the "
                "market's deployment file here, or give [market] chain_id and address"
            )
        files.append(_public(CONFIG_DIR / "deployment.json", source.read_bytes()))
        market["deployment"] = str(CONFIG_DIR / "deployment.json")
    installed["market"] = market

    broker = installed.setdefault("broker", {})
    if config.broker.username is not None:
        broker_password = _broker_password(config, given, environ)
        files.append(_secret(CREDENTIALS_DIR / BROKER_CREDENTIAL, broker_password))
        broker.pop("password_file", None)
        broker.pop("password_env", None)
        broker["password_credential"] = BROKER_CREDENTIAL
    if config.broker.tls_ca_file is not None:
        ca = given(config.broker.tls_ca_file)
        if not ca.exists():
            raise InstallError(f"the broker's CA file {ca} ([broker] tls_ca_file) does not exist")
        files.append(_public(CONFIG_DIR / "broker-ca.crt", ca.read_bytes()))
        broker["tls_ca_file"] = str(CONFIG_DIR / "broker-ca.crt")

    files.insert(
        0,
        PlannedFile(
            CONFIG_DIR / "board.toml", board_toml(installed, config_path), 0o640, "root", user
        ),
    )
    credentials = [f.path.name for f in files if f.path.parent == CREDENTIALS_DIR]
    files.append(
        _public(UNIT_DIR / f"{SERVICE}.service", unit_text(config, executable, user, credentials))
    )
    files.append(_public(SYSUSERS_DIR / f"{USER}.conf", sysusers_text(user)))
    directories = [
        PlannedDirectory(CONFIG_DIR, 0o750, "root", user),
        PlannedDirectory(CREDENTIALS_DIR, 0o700),
        PlannedDirectory(STATE_DIR, 0o700, user, user),
    ]
    plan = InstallPlan(config, user, files, directories, keystore_source, password)
    if keystore_source is None:
        plan.notes.append(
            f"a new key is made on the board in {STATE_DIR / 'keystore.json'}; register the "
            "address it prints (`meterchain agent register --signer ADDRESS`)"
        )
    return plan


def _opt(given: Callable[[Path], Path], path: Path | None) -> Path | None:
    return None if path is None else given(path)


def _broker_password(
    config: BoardConfig, given: Callable[[Path], Path], environ: dict[str, str]
) -> str:
    broker = config.broker
    if broker.password_file is not None:
        path = given(broker.password_file)
        try:
            text = path.read_text().splitlines()
        except OSError as exc:
            raise InstallError(f"cannot read the broker password file {path}: {exc}") from None
        if text and text[0]:
            return text[0]
        raise InstallError(f"the broker password file {path} is empty")
    value = environ.get(broker.password_env)
    if not value:
        raise InstallError(
            f"[broker] username is {broker.username!r} but no password: give [broker] "
            f"password_file or set {broker.password_env}"
        )
    return value


def _secret(path: PurePosixPath, value: str) -> PlannedFile:
    return PlannedFile(path, (value + "\n").encode(), 0o600, secret=True)


def _public(path: PurePosixPath, content: bytes | str) -> PlannedFile:
    data = content.encode() if isinstance(content, str) else content
    return PlannedFile(path, data, 0o644)


def board_toml(installed: dict[str, Any], source: Path) -> bytes:
    """The installed config as TOML, with a header that says where it came from."""
    import tomli_w

    header = (
        f"# Installed by `meterchain board install` from {source.name}: paths moved to\n"
        f"# {CONFIG_DIR} and {STATE_DIR}, passwords from systemd credentials\n"
        f"# ({CREDENTIALS_DIR}). Edit, then `systemctl restart {SERVICE}`.\n"
    )
    return (header + tomli_w.dumps(installed)).encode()


def unit_text(config: BoardConfig, executable: str, user: str, credentials: list[str]) -> str:
    """The systemd unit: notify + watchdog, restart on failure, credentials, journald, sandbox."""
    loads = "".join(f"LoadCredential={name}:{CREDENTIALS_DIR / name}\n" for name in credentials)
    return f"""# Written by `meterchain board install` (docs/board.md).
[Unit]
Description=meterchain board agent for meter {config.meter_id}
Wants=network-online.target
After=network-online.target time-sync.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={executable} agent run --config {CONFIG_DIR / "board.toml"} --log-format json
User={user}
Group={user}
SupplementaryGroups=dialout
WorkingDirectory={STATE_DIR}
StateDirectory={STATE_DIR.name}
StateDirectoryMode=0700
{loads}Environment=PYTHONUNBUFFERED=1
Restart=on-failure
RestartSec=5
TimeoutStartSec=120
TimeoutStopSec=30
WatchdogSec={WATCHDOG_S}
MemoryMax={MEMORY_MAX_MB}M
StandardOutput=journal
StandardError=journal
SyslogIdentifier={SERVICE}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes

[Install]
WantedBy=multi-user.target
"""


def sysusers_text(user: str) -> str:
    """systemd-sysusers(8): the service's user and group, and the serial ports' group."""
    return (
        "# Written by `meterchain board install`: the board agent's system user.\n"
        f'u {user} - "meterchain board agent" {STATE_DIR} /usr/sbin/nologin\n'
        f"m {user} dialout\n"
    )


# ---- carrying the plan out ----------------------------------------------------------------------


def apply_install(plan: InstallPlan, *, root: Path = Path("/"), start: bool = True) -> list[str]:
    """Create the user, the directories, the files and the key; enable the service.

    Returns what was done, line by line, for the command to print.
    """
    done: list[str] = []
    target = _Target(root)
    target.write(plan.file(SYSUSERS_DIR / f"{USER}.conf"), done)
    target.create_user(plan.user, done)
    for directory in plan.directories:
        target.mkdir(directory, done)
    for planned in plan.files:
        target.write(planned, done)
    address = target.install_key(plan, done)
    target.enable(plan.unit_name, start, done)
    done.append(f"the board signs as {address}")
    return done


class _Target:
    """The system (or image tree) being installed into."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.is_live = root.resolve() == Path("/")

    def path(self, path: PurePosixPath) -> Path:
        return self.root / str(path).lstrip("/")

    def ids(self, owner: str, group: str) -> tuple[int, int]:
        """Numeric ids from the target's own /etc/passwd and /etc/group."""
        if self.is_live:
            try:
                return pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid
            except KeyError as exc:
                raise InstallError(f"no such user or group on this system: {exc}") from None
        uid = _lookup(self.path(PurePosixPath("/etc/passwd")), owner)
        gid = _lookup(self.path(PurePosixPath("/etc/group")), group)
        return uid, gid

    def chown(self, path: Path, owner: str, group: str) -> None:
        uid, gid = self.ids(owner, group)
        try:
            os.chown(path, uid, gid)
        except PermissionError:
            raise InstallError(
                f"cannot give {path} to {owner}:{group}: run the install as root (sudo)"
            ) from None

    def mkdir(self, directory: PlannedDirectory, done: list[str]) -> None:
        path = self.path(directory.path)
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(directory.mode)
        self.chown(path, directory.owner, directory.group)
        done.append(f"directory {directory.path} ({directory.owner}:{directory.group})")

    def write(self, planned: PlannedFile, done: list[str]) -> None:
        path = self.path(planned.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.new")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, planned.mode)
        with os.fdopen(fd, "wb") as file:
            file.write(planned.content)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, planned.mode)
        self.chown(temporary, planned.owner, planned.group)
        os.replace(temporary, path)
        done.append(f"wrote {planned.path} ({planned.owner}:{planned.group} {planned.mode:04o})")

    def create_user(self, user: str, done: list[str]) -> None:
        sysusers = shutil.which("systemd-sysusers")
        config = self.path(SYSUSERS_DIR / f"{USER}.conf")
        if sysusers is not None:
            args = [sysusers, *([] if self.is_live else [f"--root={self.root}"]), str(config)]
        else:  # no systemd-sysusers (an old system): the same with shadow's tools
            args = ["useradd", "--system", "--user-group", "--home-dir", str(STATE_DIR),
                    "--shell", "/usr/sbin/nologin", "--groups", "dialout",
                    *([] if self.is_live else ["--prefix", str(self.root)]), user]  # fmt: skip
            if self._user_exists(user):
                args = []
        if args:
            _run(args, f"creating the system user {user}")
        done.append(f"system user {user} (groups {user}, dialout)")

    def _user_exists(self, user: str) -> bool:
        try:
            self.ids(user, user)
        except InstallError:
            return False
        return True

    def install_key(self, plan: InstallPlan, done: list[str]) -> str:
        path = self.path(STATE_DIR / "keystore.json")
        if path.exists():
            from meterchain.chain.keystore import keystore_address

            done.append(f"kept the keystore already at {STATE_DIR / 'keystore.json'}")
            address = keystore_address(path)
        elif plan.keystore_source is None:
            address = create_keystore(
                path, plan.keystore_password, scrypt_n=BOARD_SCRYPT_N, scrypt_p=BOARD_SCRYPT_P
            )
            done.append(f"made a new key in {STATE_DIR / 'keystore.json'}: register {address}")
        else:
            source = plan.keystore_source
            if keystore_memory_bytes(source) > KEYSTORE_MEMORY_LIMIT:
                address = reencrypt_keystore(
                    source,
                    path,
                    plan.keystore_password,
                    scrypt_n=BOARD_SCRYPT_N,
                    scrypt_p=BOARD_SCRYPT_P,
                )
                done.append(
                    f"re-encrypted {source} into {STATE_DIR / 'keystore.json'} with scrypt "
                    f"n={BOARD_SCRYPT_N}, p={BOARD_SCRYPT_P} (its work factor needs more memory "
                    "than a 1 GB board can spare at start)"
                )
            else:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as file:
                    file.write(source.read_bytes())
                from meterchain.chain.keystore import keystore_address

                address = keystore_address(path)
                done.append(f"copied {source} into {STATE_DIR / 'keystore.json'}")
        os.chmod(path, 0o600)
        self.chown(path, plan.user, plan.user)
        return address

    def enable(self, unit: str, start: bool, done: list[str]) -> None:
        systemctl = shutil.which("systemctl")
        if systemctl is None:
            done.append(f"no systemctl here: enable {unit} by hand")
            return
        if not self.is_live:
            _run([systemctl, f"--root={self.root}", "enable", unit], f"enabling {unit}")
            done.append(f"enabled {unit} in {self.root}")
            return
        running = Path("/run/systemd/system").is_dir()  # systemd is the init system
        if running:
            _run([systemctl, "daemon-reload"], "reloading systemd")
        _run([systemctl, "enable", unit], f"enabling {unit}")
        if running and start:
            _run([systemctl, "restart", unit], f"starting {unit}")
            done.append(f"enabled and started {unit}")
        else:
            done.append(f"enabled {unit} (systemd is not running here: it starts at boot)")


def _lookup(path: Path, name: str) -> int:
    try:
        for line in path.read_text().splitlines():
            parts = line.split(":")
            if len(parts) > 2 and parts[0] == name:
                return int(parts[2])
    except OSError:
        pass
    raise InstallError(f"no {name!r} in {path}: was the system user created?")


def _run(args: list[str], what: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = " ".join((result.stderr or result.stdout).split())[-400:]
        raise InstallError(f"{what} failed: {' '.join(args)}: {output}")
