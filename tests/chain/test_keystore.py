"""Keystore files: encrypted keys that round-trip, refuse wrong passwords and never leak."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from meterchain.chain.errors import KeystoreError
from meterchain.chain.keystore import (
    TEST_SCRYPT_N,
    create_keystore,
    keystore_address,
    load_keystore,
    read_password,
)

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
PASSWORD = "correct horse battery staple"


def test_a_keystore_round_trips_the_key(tmp_path: Path) -> None:
    path = tmp_path / "board.json"
    address = create_keystore(path, PASSWORD, scrypt_n=TEST_SCRYPT_N, private_key=KEY)
    account = load_keystore(path, PASSWORD)
    assert account.address == address == keystore_address(path)
    assert bytes(account.key) == KEY


def test_the_file_holds_neither_key_nor_password_and_only_its_owner_reads_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "board.json"
    create_keystore(path, PASSWORD, scrypt_n=TEST_SCRYPT_N, private_key=KEY)
    text = path.read_text()
    assert KEY.hex() not in text and PASSWORD not in text
    assert '"kdf": "scrypt"' in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_wrong_password_is_refused_without_leaking_anything(tmp_path: Path) -> None:
    path = tmp_path / "board.json"
    create_keystore(path, PASSWORD, scrypt_n=TEST_SCRYPT_N, private_key=KEY)
    with pytest.raises(KeystoreError, match="wrong password") as caught:
        load_keystore(path, "guess")
    message = str(caught.value)
    assert "guess" not in message and PASSWORD not in message and KEY.hex() not in message


def test_a_keystore_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "board.json"
    first = create_keystore(path, PASSWORD, scrypt_n=TEST_SCRYPT_N)
    with pytest.raises(KeystoreError, match="already exists"):
        create_keystore(path, PASSWORD, scrypt_n=TEST_SCRYPT_N)
    assert keystore_address(path) == first


def test_a_missing_keystore_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="chain key new"):
        load_keystore(tmp_path / "nope.json", PASSWORD)


def test_a_file_that_is_not_a_keystore_is_named(tmp_path: Path) -> None:
    path = tmp_path / "deployment.json"
    path.write_text('{"chain_id": 1}')
    with pytest.raises(KeystoreError, match="not a keystore"):
        load_keystore(path, PASSWORD)


def test_the_work_factor_must_be_a_power_of_two(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="power of two"):
        create_keystore(tmp_path / "k.json", PASSWORD, scrypt_n=1000)


def test_the_password_comes_from_a_file_before_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOARD_PASSWORD", "from-env")
    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    assert read_password(env="BOARD_PASSWORD", file=secret) == "from-file"
    assert read_password(env="BOARD_PASSWORD") == "from-env"


def test_no_password_anywhere_says_where_to_put_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOARD_PASSWORD", raising=False)
    with pytest.raises(KeystoreError, match=r"BOARD_PASSWORD.*--password-file"):
        read_password(env="BOARD_PASSWORD")
