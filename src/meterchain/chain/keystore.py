"""Encrypted keystore files (Web3 Secret Storage, scrypt) for a board's or operator's key.

The key never goes into the repository, a log or an error message; nor does the password,
which comes from an environment variable or a file, never from the command line.
"""

from __future__ import annotations

import hashlib
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
# A board's key (docs/board.md, "The key"): 16 MiB per unlock, and the work of n = 2^14
# five times over (p = 5), which OWASP rates as strong as n = 2^17, p = 1 (128 MiB) against
# password guessing; and `board install` gives it a random 256-bit password besides.
BOARD_SCRYPT_N = 2**14
BOARD_SCRYPT_P = 5
SCRYPT_R = 8


def create_keystore(
    path: Path,
    password: str,
    *,
    scrypt_n: int = PRODUCTION_SCRYPT_N,
    scrypt_p: int = 1,
    private_key: bytes | None = None,
) -> str:
    """Write a new encrypted key (a random one unless given) to `path`; return its address.

    Refuses to overwrite an existing file; the file is created readable by its owner only.
    """
    if not password:
        raise KeystoreError("refusing to create a keystore with an empty password")
    if scrypt_n < 2 or scrypt_n & (scrypt_n - 1):
        raise KeystoreError(f"the scrypt work factor must be a power of two, not {scrypt_n}")
    if not 1 <= scrypt_p <= 16:
        raise KeystoreError(f"the scrypt parallelism must be 1 to 16, not {scrypt_p}")
    key = private_key if private_key is not None else os.urandom(32)
    encrypted = encrypt_v3(key, password, scrypt_n=scrypt_n, scrypt_p=scrypt_p)
    address = "0x" + str(encrypted["address"])
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
        file.flush()
        os.fsync(file.fileno())
    from eth_utils.address import to_checksum_address

    return str(to_checksum_address(address))


def encrypt_v3(key: bytes, password: str, *, scrypt_n: int, scrypt_p: int) -> dict[str, Any]:
    """A Web3 Secret Storage (v3) keystore of `key`: scrypt(n, r=8, p), AES-128-CTR, keccak MAC.

    Written here rather than through eth-keyfile, which fixes p = 1: a board's keystore uses
    p > 1 to buy password-guessing cost with time instead of memory. eth-keyfile (and geth)
    read any p, so the file is a standard one.
    """
    import uuid

    from Crypto.Cipher import AES
    from Crypto.Util import Counter
    from eth_hash.auto import keccak
    from eth_keys.datatypes import PrivateKey

    salt, iv = os.urandom(16), os.urandom(16)
    derived = hashlib.scrypt(
        password.encode(), salt=salt, n=scrypt_n, r=SCRYPT_R, p=scrypt_p, dklen=32,
        maxmem=256 * SCRYPT_R * scrypt_n + 2**20,
    )  # fmt: skip
    counter = Counter.new(128, initial_value=int.from_bytes(iv, "big"))
    ciphertext = AES.new(derived[:16], AES.MODE_CTR, counter=counter).encrypt(key)
    address = PrivateKey(key).public_key.to_checksum_address()
    return {
        "address": address[2:].lower(),
        "crypto": {
            "cipher": "aes-128-ctr",
            "cipherparams": {"iv": iv.hex()},
            "ciphertext": ciphertext.hex(),
            "kdf": "scrypt",
            "kdfparams": {
                "dklen": 32,
                "n": scrypt_n,
                "r": SCRYPT_R,
                "p": scrypt_p,
                "salt": salt.hex(),
            },
            "mac": keccak(derived[16:32] + ciphertext).hex(),
        },
        "id": str(uuid.uuid4()),
        "version": 3,
    }


def keystore_memory_bytes(path: Path) -> int:
    """What unlocking the keystore takes in memory: 128 × r × n bytes of scrypt."""
    params = _read(path).get("crypto", {}).get("kdfparams", {})
    try:
        return 128 * int(params.get("r", 8)) * int(params.get("n", 0))
    except (TypeError, ValueError):
        raise KeystoreError(f"{path} has malformed scrypt parameters") from None


def reencrypt_keystore(
    source: Path, destination: Path, password: str, *, scrypt_n: int, scrypt_p: int
) -> str:
    """Unlock `source` and write the same key to `destination` with new scrypt parameters."""
    account = load_keystore(source, password)
    return create_keystore(
        destination, password, scrypt_n=scrypt_n, scrypt_p=scrypt_p, private_key=account.key
    )


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


CREDENTIALS_DIRECTORY_ENV = "CREDENTIALS_DIRECTORY"


def credential_file(name: str) -> Path:
    """Where systemd put the credential `name` (LoadCredential=) for this service."""
    directory = os.environ.get(CREDENTIALS_DIRECTORY_ENV)
    if not directory:
        raise KeystoreError(
            f"the password is the systemd credential {name!r}, but ${CREDENTIALS_DIRECTORY_ENV} "
            "is not set: run the agent as its service (systemctl start meterchain-board), or "
            "give a password_file instead"
        )
    return Path(directory) / name


def read_password(
    *, env: str | None = PASSWORD_ENV, file: Path | None = None, credential: str | None = None
) -> str:
    """The keystore password from a systemd credential, a file (first line) or else the
    environment variable `env`."""
    if credential is not None:
        file = credential_file(credential)
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
