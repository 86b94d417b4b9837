"""Encrypted keystore files (Web3 Secret Storage, scrypt) for a board's or operator's key.

The key never goes into the repository, a log or an error message; nor does the password,
which comes from an environment variable or a file, never from the command line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meterchain.chain.errors import KeystoreError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

# eth_account is imported inside the functions that need it: it takes a second or more to
# import, and the command line reads this module's defaults on every start.

PASSWORD_ENV = "MCHAIN_KEY_PASSWORD"
PRODUCTION_SCRYPT_N = 2**18  # geth's standard work factor: ~1 s and 256 MiB per unlock
TEST_SCRYPT_N = 2**10  # for tests only: milliseconds, no real protection


def create_keystore(
    path: Path,
    password: str,
    *,
    scrypt_n: int = PRODUCTION_SCRYPT_N,
    private_key: bytes | None = None,
) -> str:
    """Write a new encrypted key (a random one unless given) to `path`; return its address.

    Refuses to overwrite an existing file; the file is created readable by its owner only.
    """
    if not password:
        raise KeystoreError("refusing to create a keystore with an empty password")
    if scrypt_n < 2 or scrypt_n & (scrypt_n - 1):
        raise KeystoreError(f"the scrypt work factor must be a power of two, not {scrypt_n}")
    from eth_account import Account

    account: LocalAccount = (
        Account.from_key(private_key) if private_key is not None else Account.create()
    )
    encrypted = Account.encrypt(account.key, password, kdf="scrypt", iterations=scrypt_n)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeystoreError(
            f"{path} already exists; choose another file (a keystore is never overwritten)"
        ) from None
    except OSError as exc:
        raise KeystoreError(f"cannot create the keystore {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as file:
        json.dump(encrypted, file)
    return str(account.address)


def load_keystore(path: Path, password: str) -> LocalAccount:
    """Decrypt the keystore at `path`; KeystoreError if it is missing, malformed or locked."""
    from eth_account import Account

    keyfile = _read(path)
    try:
        key = Account.decrypt(keyfile, password)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise KeystoreError(f"wrong password for the keystore {path}") from None
        raise KeystoreError(f"{path} is not a usable keystore file") from None
    except Exception:
        raise KeystoreError(f"{path} is not a usable keystore file") from None
    account: LocalAccount = Account.from_key(key)
    return account


def keystore_address(path: Path) -> str:
    """The address a keystore holds, read without its password."""
    keyfile = _read(path)
    address = keyfile.get("address")
    if not isinstance(address, str):
        raise KeystoreError(f"{path} does not record its address; unlock it to find it")
    from eth_utils.address import to_checksum_address

    try:
        return str(to_checksum_address(address if address.startswith("0x") else "0x" + address))
    except ValueError:
        raise KeystoreError(f"{path} records a malformed address") from None


def read_password(*, env: str | None = PASSWORD_ENV, file: Path | None = None) -> str:
    """The keystore password from a file (first line) or else the environment variable `env`."""
    if file is not None:
        try:
            lines = Path(file).read_text().splitlines()
        except OSError as exc:
            raise KeystoreError(f"cannot read the password file {file}: {exc.strerror}") from None
        if not lines or not lines[0]:
            raise KeystoreError(f"the password file {file} is empty")
        return lines[0]
    if env:
        value = os.environ.get(env)
        if value:
            return value
    raise KeystoreError(
        f"no keystore password: set the environment variable {env or PASSWORD_ENV} "
        "or pass --password-file FILE"
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise KeystoreError(
            f"no keystore at {path}; create one with `meterchain chain key new --keystore {path}`"
        ) from None
    except OSError as exc:
        raise KeystoreError(f"cannot read the keystore {path}: {exc.strerror}") from None
    except ValueError:
        raise KeystoreError(f"{path} is not a keystore file (not JSON)") from None
    if not isinstance(data, dict) or ("crypto" not in data and "Crypto" not in data):
        raise KeystoreError(f"{path} is not a keystore file (no crypto section)")
    return data
