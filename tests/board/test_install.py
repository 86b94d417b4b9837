"""`meterchain board install`: the files it writes (golden), the unit (systemd-analyze verify),
and a whole install into an image tree: the system user, modes, owners, the key, the service."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath

import pytest
from typer.testing import CliRunner

from meterchain.board.install import (
    CONFIG_DIR,
    STATE_DIR,
    SYSUSERS_DIR,
    UNIT_DIR,
    apply_install,
    plan_install,
)
from meterchain.chain.keystore import (
    BOARD_SCRYPT_N,
    BOARD_SCRYPT_P,
    create_keystore,
    keystore_address,
    load_keystore,
    read_password,
)
from meterchain.cli import app
from meterchain.config import load_toml
from meterchain.roles import BoardConfig

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("MCHAIN_UPDATE_GOLDEN") == "1"
EXECUTABLE = "/opt/meterchain/bin/meterchain"
PASSWORD = "the installer's keystore password"
CA = "-----BEGIN CERTIFICATE-----\nMIIB…test CA…\n-----END CERTIFICATE-----\n"
BOARD_TOML = """\
meter_id = "10000001"
meter_url = "modbus+rtu:///dev/ttyUSB0?baud=9600&unit=1&map=sdm630"
store = "sqlite:///var/board.db"

[key]
keystore = "keys/board.json"
password_file = "keys/board.pass"

[market]
deployment = "deployment.json"

[broker]
host = "broker.example.org"
port = 8883
username = "prosumer-10000001"
password_file = "broker/prosumer-10000001.password"
tls_ca_file = "broker/ca.crt"

[site]
pv_kwp = 4.0

[devices]
battery = "sunspec+rtu:///dev/ttyUSB1?unit=1&baud=9600"
battery_capacity_wh = 10000
battery_max_w = 3000
"""


def board_dir(tmp_path: Path, *, keystore: bool = True, scrypt_n: int = 2**10) -> Path:
    source = tmp_path / "given"
    (source / "keys").mkdir(parents=True)
    (source / "broker").mkdir()
    (source / "board.toml").write_text(BOARD_TOML)
    (source / "keys" / "board.pass").write_text(PASSWORD + "\n")
    (source / "broker" / "prosumer-10000001.password").write_text("broker-token\n")
    (source / "broker" / "ca.crt").write_text(CA)
    (source / "deployment.json").write_text(
        json.dumps({"chain_id": 246, "contracts": {"EnergyMarket": "0x" + "11" * 20}})
    )
    if keystore:
        create_keystore(source / "keys" / "board.json", PASSWORD, scrypt_n=scrypt_n)
    return source


def check_golden(name: str, content: bytes) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_bytes(content)
    assert path.exists(), f"no golden file {path}: run with MCHAIN_UPDATE_GOLDEN=1 and review it"
    assert content.decode() == path.read_text(), f"{name} differs from {path}"


def test_the_generated_files_match_the_golden_ones(tmp_path: Path) -> None:
    plan = plan_install(board_dir(tmp_path) / "board.toml", executable=EXECUTABLE, environ={})
    check_golden("board.toml", plan.file(CONFIG_DIR / "board.toml").content)
    check_golden(
        "meterchain-board.service", plan.file(UNIT_DIR / "meterchain-board.service").content
    )
    check_golden("meterchain.sysusers.conf", plan.file(SYSUSERS_DIR / "meterchain.conf").content)
    secrets = {f.path: f for f in plan.files if f.secret}
    assert secrets[CONFIG_DIR / "credentials" / "keystore-password"].content.decode().strip() == (
        PASSWORD
    )
    assert secrets[CONFIG_DIR / "credentials" / "broker-password"].content == b"broker-token\n"
    assert all(f.mode == 0o600 and f.owner == "root" for f in secrets.values())
    assert plan.file(CONFIG_DIR / "broker-ca.crt").content.decode() == CA


def test_the_installed_config_is_valid_and_keeps_no_password_in_it(tmp_path: Path) -> None:
    plan = plan_install(board_dir(tmp_path) / "board.toml", executable=EXECUTABLE, environ={})
    text = plan.file(CONFIG_DIR / "board.toml").content.decode()
    config = BoardConfig.model_validate(tomllib.loads(text))
    assert config.store == "sqlite:////var/lib/meterchain/board.db"
    assert config.key.keystore == Path("/var/lib/meterchain/keystore.json")
    assert config.key.password_credential == "keystore-password"
    assert config.broker.password_credential == "broker-password"
    assert config.broker.password_file is None and config.key.password_file is None
    assert config.devices.battery is not None  # nothing the user gave is dropped
    assert "token" not in text and PASSWORD not in text


def test_dry_run_prints_every_file_and_writes_nothing(tmp_path: Path) -> None:
    source = board_dir(tmp_path)
    result = CliRunner().invoke(
        app, ["board", "install", "--config", str(source / "board.toml"), "--dry-run",
              "--executable", EXECUTABLE, "--root", str(tmp_path / "image")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for path in [
        "/etc/meterchain/board.toml", "/etc/meterchain/credentials/keystore-password",
        "/etc/meterchain/credentials/broker-password", "/etc/meterchain/deployment.json",
        "/etc/meterchain/broker-ca.crt", "/etc/systemd/system/meterchain-board.service",
        "/etc/sysusers.d/meterchain.conf", "/var/lib/meterchain/keystore.json",
    ]:  # fmt: skip
        assert f"==> {path}  (" in result.output, path
    assert "Restart=on-failure" in result.output and "WatchdogSec=60" in result.output
    assert PASSWORD not in result.output and "broker-token" not in result.output
    assert not (tmp_path / "image").exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    executable = shutil.which("meterchain") or str(Path(sys.executable).with_name("meterchain"))
    plan = plan_install(board_dir(tmp_path) / "board.toml", executable=executable, environ={})
    unit = tmp_path / "meterchain-board.service"
    unit.write_bytes(plan.file(UNIT_DIR / "meterchain-board.service").content)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    # It can fail: a unit with a typo is reported.
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restart=on-falure"))
    broken = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert "on-falure" in broken.stderr


def image_root(tmp_path: Path) -> Path:
    """A minimal image tree: root and the serial ports' group, nothing else."""
    root = tmp_path / "image"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\ndialout:x:20:\n")
    (root / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc" / "gshadow").write_text("root:*::\ndialout:*::\n")
    return root


needs_root_and_systemd = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("systemd-sysusers") is None or not shutil.which("systemctl"),
    reason="the install gives files to the service's user (root) with systemd's tools",
)


def uid_of(root: Path, user: str) -> int:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        if line.split(":")[0] == user:
            return int(line.split(":")[2])
    raise AssertionError(f"{user} not in {root}/etc/passwd")


@needs_root_and_systemd
def test_install_into_an_image_makes_the_user_the_files_the_key_and_enables_the_service(
    tmp_path: Path,
) -> None:
    source = board_dir(tmp_path, scrypt_n=2**17)  # heavier than a board affords: re-encrypted
    root = image_root(tmp_path)
    result = CliRunner().invoke(
        app, ["board", "install", "--config", str(source / "board.toml"), "--root", str(root),
              "--executable", EXECUTABLE],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    uid = uid_of(root, "meterchain")
    assert ":20:" in (root / "etc" / "group").read_text()
    assert "dialout:x:20:meterchain" in (root / "etc" / "group").read_text()

    def at(path: PurePosixPath) -> Path:
        return root / str(path).lstrip("/")

    keystore = at(STATE_DIR / "keystore.json")
    assert keystore.stat().st_mode & 0o777 == 0o600 and keystore.stat().st_uid == uid
    assert at(STATE_DIR).stat().st_mode & 0o777 == 0o700 and at(STATE_DIR).stat().st_uid == uid
    credentials = at(CONFIG_DIR / "credentials")
    assert credentials.stat().st_mode & 0o777 == 0o700 and credentials.stat().st_uid == 0
    for secret in credentials.iterdir():
        assert secret.stat().st_mode & 0o777 == 0o600 and secret.stat().st_uid == 0
    config = at(CONFIG_DIR / "board.toml")
    assert config.stat().st_mode & 0o777 == 0o640
    # The same key, now encrypted with the board's parameters, unlocked by the credential.
    given = keystore_address(source / "keys" / "board.json")
    assert keystore_address(keystore) == given and given in result.output
    params = json.loads(keystore.read_text())["crypto"]["kdfparams"]
    assert (params["n"], params["p"]) == (BOARD_SCRYPT_N, BOARD_SCRYPT_P)
    os.environ["CREDENTIALS_DIRECTORY"] = str(credentials)
    try:
        installed = load_toml(config, BoardConfig)
        password = read_password(credential=installed.key.password_credential)
    finally:
        del os.environ["CREDENTIALS_DIRECTORY"]
    assert load_keystore(keystore, password).address == given
    wants = root / "etc/systemd/system/multi-user.target.wants/meterchain-board.service"
    assert wants.is_symlink()


@needs_root_and_systemd
def test_a_board_without_a_key_gets_a_new_one_made_on_it(tmp_path: Path) -> None:
    source = board_dir(tmp_path, keystore=False)
    root = image_root(tmp_path)
    plan = plan_install(source / "board.toml", executable=EXECUTABLE, environ={})
    done = apply_install(plan, root=root)
    keystore = root / "var/lib/meterchain/keystore.json"
    address = keystore_address(keystore)
    assert any(address in line for line in done)
    password = (root / "etc/meterchain/credentials/keystore-password").read_text().strip()
    assert len(password) >= 40  # random, not a word anyone chose
    assert load_keystore(keystore, password).address == address
    # Installing again keeps the key: a board's key is never replaced by an install.
    again = apply_install(
        plan_install(source / "board.toml", executable=EXECUTABLE, environ={}), root=root
    )
    assert keystore_address(keystore) == address and any("kept the keystore" in x for x in again)


def test_a_missing_deployment_file_is_named(tmp_path: Path) -> None:
    source = board_dir(tmp_path)
    (source / "deployment.json").unlink()
    result = CliRunner().invoke(
        app, ["board", "install", "--config", str(source / "board.toml"), "--dry-run"]
    )
    assert result.exit_code == 1
    assert "deployment.json" in result.output and "does not exist" in result.output
