"""A community's Mosquitto files: its CA, the broker's certificate, a password per agent, the ACL.

`meterchain broker config` writes them for a deployment, and the test broker
(`agents.broker.start_mosquitto`) for every test, so no client gets in without a password and
TLS. What they enforce:

* TLS with the community's own CA (made here with the `cryptography` library); every process
  checks the broker's certificate against `ca.crt`.
* One credential per agent: each board (`prosumer-METER_ID`), the market, the grid, the
  operator's monitor and the prepaid agent. A credential is a random token in
  `credentials/AGENT.password` (mode 0600), copied to the process that uses it; the broker
  keeps only its PBKDF2-SHA512 hash (Mosquitto 2's `$7$` format). Revoking an agent removes
  its line; the broker stops taking it on its next reload (SIGHUP).
* The ACL: a message to agent X from agent Y travels on `meterchain/to/X/from/Y`. Every client
  reads only `meterchain/to/ITSELF/…` and `meterchain/to/community/…`, and writes only under its
  own name (`…/from/ITSELF`); a board may write only to the operator's agents (market, grid,
  monitor, prepaid), which may write to anyone. So board A can neither read board B's mail nor
  write to B, nor speak for B: the bus drops a message whose envelope names another sender than
  its topic (`bus_mqtt`), and the topic's sender is what the broker authenticated.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

OPERATOR_AGENTS = ("market", "grid", "monitor", "prepaid")
COMMUNITY_GROUP = "community"
PBKDF2_ITERATIONS = 101  # Mosquitto's own default; the tokens are random, not guessable words
AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

CA_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
CERT_FILE = "broker.crt"
KEY_FILE = "broker.key"
PASSWORD_FILE = "passwd"
ACL_FILE = "acl"
CONFIG_FILE = "mosquitto.conf"
CREDENTIALS_DIR = "credentials"


class BrokerFilesError(Exception):
    """The broker's files cannot be made as asked."""


@dataclass(frozen=True)
class BrokerFiles:
    """What `write_broker_files` wrote, and the credentials it holds."""

    directory: Path
    port: int
    hosts: tuple[str, ...]
    agents: tuple[str, ...]
    operators: tuple[str, ...]

    @property
    def config(self) -> Path:
        return self.directory / CONFIG_FILE

    @property
    def ca_file(self) -> Path:
        return self.directory / CA_FILE

    def credential_file(self, agent: str) -> Path:
        return self.directory / CREDENTIALS_DIR / f"{agent}.password"

    def password(self, agent: str) -> str:
        """The agent's token; BrokerFilesError if it has none (never issued, or revoked)."""
        try:
            return self.credential_file(agent).read_text().strip()
        except FileNotFoundError:
            raise BrokerFilesError(
                f"no broker credential for {agent!r} in {self.directory / CREDENTIALS_DIR}; "
                f"add it with `meterchain broker config --dir {self.directory} --agent {agent}`"
            ) from None


def board_agent(meter_id: str) -> str:
    """The agent (and broker user) name of a meter's board."""
    return f"prosumer-{meter_id}"


def check_agent_name(name: str) -> str:
    """Agent names become MQTT user names and topic levels: no wildcards, no slashes."""
    if not AGENT_NAME.match(name) or name == COMMUNITY_GROUP:
        raise BrokerFilesError(
            f"{name!r} cannot be an agent on the broker: use letters, digits, '-', '_' and '.' "
            f"(up to 100), and not {COMMUNITY_GROUP!r}, which is everyone's group"
        )
    return name


# ---- passwords and ACL (pure) -------------------------------------------------------------------


def password_line(user: str, password: str, *, salt: bytes | None = None) -> str:
    """One line of a Mosquitto 2 password file: PBKDF2-SHA512, `$7$ITERATIONS$SALT$HASH`."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS, 64)
    salt64, hash64 = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"{user}:$7${PBKDF2_ITERATIONS}${salt64}${hash64}"


def acl_text(operators: Sequence[str] = OPERATOR_AGENTS, superusers: Sequence[str] = ()) -> str:
    """The ACL: each client reads its own mail and the community's, writes under its own name.

    `pattern` lines apply to every user (%u is the user's name); the operator's agents may
    also write to anyone, under their own name. `superusers` (tests of the bus itself only)
    may read and write every meterchain topic.
    """
    lines = [
        "# Written by `meterchain broker config`. A message to X from Y is published on",
        "# meterchain/to/X/from/Y; a user's name is its agent's name.",
        "",
        "# Everyone reads what is addressed to it and to the whole community.",
        "pattern read meterchain/to/%u/#",
        f"pattern read meterchain/to/{COMMUNITY_GROUP}/#",
        "",
        "# Everyone may write to the operator's agents, under its own name only.",
        *(f"pattern write meterchain/to/{agent}/from/%u" for agent in operators),
    ]
    for agent in operators:
        lines += ["", f"# {agent} answers boards and announces to the community.", f"user {agent}"]
        lines.append(f"topic write meterchain/to/+/from/{agent}")
    for user in superusers:
        lines += ["", "# A test's own client: every meterchain topic.", f"user {user}"]
        lines.append("topic readwrite meterchain/#")
    return "\n".join(lines) + "\n"


def mosquitto_conf_text(
    directory: Path,
    *,
    port: int,
    bind: str | None,
    data_dir: Path | None,
    run_as_root: bool = False,
) -> str:
    """The broker's configuration: one TLS listener, passwords and the ACL, no anonymous."""
    directory = directory.resolve()
    listener = f"listener {port}" + (f" {bind}" if bind else "")
    if data_dir is None:
        persistence = ["persistence false"]
    else:
        persistence = [
            "persistence true",
            f"persistence_location {data_dir.resolve()}/",
            "autosave_interval 2",
        ]
    return "\n".join(
        [
            "# Written by `meterchain broker config`: TLS with the community's CA, a password",
            "# per agent, and an ACL under which each agent reads only its own mail (and the",
            "# community's) and writes only under its own name. Reload with SIGHUP after",
            "# adding or revoking an agent.",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {directory / PASSWORD_FILE}",
            f"acl_file {directory / ACL_FILE}",
            "",
            listener,
            f"cafile {directory / CA_FILE}",
            f"certfile {directory / CERT_FILE}",
            f"keyfile {directory / KEY_FILE}",
            "",
            *persistence,
            "# A board that is away for a while must not lose what is queued for it.",
            "max_queued_messages 100000",
            *(["user root"] if run_as_root else []),
            "",
        ]
    )


# ---- certificates (cryptography) ----------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only (mode 0600 from the first byte)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


def _ca_key_usage(x509: Any) -> Any:
    """A CA's key usage: it signs certificates (and revocation lists), nothing else."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(directory: Path, *, community: str, valid_days: int) -> None:
    """A self-signed CA for the community (EC P-256): ca.key (0600) and ca.crt."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"meterchain {community} CA")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(x509), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(
        directory / CA_KEY_FILE,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    (directory / CA_FILE).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def make_broker_certificate(directory: Path, *, hosts: Sequence[str], valid_days: int) -> None:
    """The broker's key and certificate, signed by the community's CA, for `hosts` (names or
    IP addresses: the clients check the one they connect to)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key((directory / CA_KEY_FILE).read_bytes(), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise BrokerFilesError(f"{directory / CA_KEY_FILE} is not the EC key this command made")
    ca_cert = x509.load_pem_x509_certificate((directory / CA_FILE).read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(
        directory / KEY_FILE,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
    )
    (directory / CERT_FILE).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


# ---- the whole set ------------------------------------------------------------------------------


def write_broker_files(
    directory: Path,
    *,
    agents: Iterable[str] = (),
    revoke: Iterable[str] = (),
    operators: Sequence[str] = OPERATOR_AGENTS,
    superusers: Sequence[str] = (),
    hosts: Sequence[str] = ("127.0.0.1",),
    port: int = 8883,
    bind: str | None = None,
    data_dir: Path | None = None,
    community: str = "community",
    valid_days: int = 3650,
    run_as_root: bool = False,
) -> BrokerFiles:
    """Write (or bring up to date) a community's broker files in `directory`.

    Run again on the same directory, it keeps the CA, the broker's certificate and every
    credential already issued, issues credentials to new `agents`, and removes the `revoke`d
    ones; the password file and the ACL are rewritten from the credentials present.
    """
    directory = Path(directory)
    if not hosts:
        raise BrokerFilesError("the broker needs at least one host name or address (--host)")
    wanted = [check_agent_name(a) for a in (*operators, *agents, *superusers)]
    revoked = {check_agent_name(a) for a in revoke}
    if revoked & set(operators):
        raise BrokerFilesError(
            f"cannot revoke {', '.join(sorted(revoked & set(operators)))}: the operator's "
            "agents are what every board talks to; issue them a new credential instead "
            "(delete its file under credentials/ and run this again)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / CA_FILE).exists():
        make_ca(directory, community=community, valid_days=valid_days)
    if not (directory / CERT_FILE).exists() or not (directory / KEY_FILE).exists():
        make_broker_certificate(directory, hosts=hosts, valid_days=valid_days)
    credentials = directory / CREDENTIALS_DIR
    credentials.mkdir(mode=0o700, exist_ok=True)
    for agent in wanted:
        path = credentials / f"{agent}.password"
        if agent not in revoked and not path.exists():
            _write_private(path, (secrets.token_urlsafe(32) + "\n").encode())
    for agent in revoked:
        (credentials / f"{agent}.password").unlink(missing_ok=True)
    issued = sorted(p.name.removesuffix(".password") for p in credentials.glob("*.password"))
    lines = [password_line(a, (credentials / f"{a}.password").read_text().strip()) for a in issued]
    _write_private(directory / PASSWORD_FILE, ("\n".join(lines) + "\n").encode())
    (directory / ACL_FILE).write_text(acl_text(operators, superusers))
    (directory / CONFIG_FILE).write_text(
        mosquitto_conf_text(
            directory, port=port, bind=bind, data_dir=data_dir, run_as_root=run_as_root
        )
    )
    return BrokerFiles(directory, port, tuple(hosts), tuple(issued), tuple(operators))
