"""Passwords, tokens, sessions, CSRF and the login rate limit.

Passwords are hashed with Argon2id (argon2-cffi's defaults, RFC 9106 low-memory profile).
Session cookies and API tokens are 32 random bytes; the database keeps only their SHA-256,
so reading it opens no session. Each session has its own CSRF token, which every form and
every cookie-authenticated write must echo back. Failed logins are counted per user name and
per client address; past the limit the login answers 429 until the window has passed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from meterchain.store.accounts import (
    LANGUAGES,
    ApiTokenRow,
    LoginAttemptRow,
    UserRow,
    WebSessionRow,
)

_HASHER = PasswordHasher()
MIN_PASSWORD_LENGTH = 8


@dataclass(frozen=True)
class User:
    """Who is asking: detached from the database session."""

    id: int
    username: str
    role: str
    meter_id: str | None
    language: str

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


def _user(row: UserRow) -> User:
    return User(row.id, row.username, row.role, row.meter_id, row.language)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def now_utc() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def create_user(
    session: Session,
    username: str,
    password: str,
    *,
    role: str,
    meter_id: str | None = None,
    language: str = "pt-BR",
) -> User:
    """Add a user; the password must be long enough and a prosumer needs a meter."""
    if role not in ("operator", "prosumer"):
        raise ValueError(f"role must be operator or prosumer, got {role!r}")
    if role == "prosumer" and not meter_id:
        raise ValueError(f"prosumer {username!r} needs the meter id they own")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password of {username!r} needs {MIN_PASSWORD_LENGTH}+ characters")
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    row = UserRow(
        username=username,
        password_hash=hash_password(password),
        role=role,
        meter_id=meter_id if role == "prosumer" else None,
        language=language,
        created_at=now_utc(),
    )
    session.add(row)
    session.flush()
    return _user(row)


def user_by_id(session: Session, user_id: int) -> User | None:
    row = session.get(UserRow, user_id)
    return None if row is None else _user(row)


def authenticate(session: Session, username: str, password: str) -> User | None:
    row = session.scalars(select(UserRow).where(UserRow.username == username)).first()
    if row is None:
        verify_password(_DUMMY_HASH, password)  # same time whether or not the user exists
        return None
    return _user(row) if verify_password(row.password_hash, password) else None


_DUMMY_HASH = _HASHER.hash("not a password anyone has")


# ---- sessions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebSession:
    user: User
    csrf_token: str
    expires_at: datetime


def open_session(session: Session, user: User, ttl: timedelta) -> tuple[str, WebSession]:
    """A new session for `user`: the cookie's token and what it stands for."""
    token = new_token()
    created = now_utc()
    row = WebSessionRow(
        token_sha256=digest(token),
        user_id=user.id,
        csrf_token=new_token(),
        created_at=created,
        expires_at=created + ttl,
    )
    session.add(row)
    session.execute(delete(WebSessionRow).where(WebSessionRow.expires_at < created))
    return token, WebSession(user, row.csrf_token, row.expires_at)


def find_session(session: Session, token: str) -> WebSession | None:
    row = session.get(WebSessionRow, digest(token))
    if row is None or aware(row.expires_at) <= now_utc():
        return None
    user = user_by_id(session, row.user_id)
    return None if user is None else WebSession(user, row.csrf_token, aware(row.expires_at))


def close_session(session: Session, token: str) -> None:
    session.execute(delete(WebSessionRow).where(WebSessionRow.token_sha256 == digest(token)))


# ---- API tokens -----------------------------------------------------------------------------


def issue_api_token(session: Session, user: User, name: str) -> tuple[str, int]:
    """A new bearer token for `user`; the token is shown once and only its digest is kept."""
    token = new_token()
    row = ApiTokenRow(
        user_id=user.id,
        name=name[:100],
        token_sha256=digest(token),
        created_at=now_utc(),
        revoked=False,
    )
    session.add(row)
    session.flush()
    return token, row.id


def user_for_api_token(session: Session, token: str) -> User | None:
    row = session.scalars(
        select(ApiTokenRow).where(ApiTokenRow.token_sha256 == digest(token))
    ).first()
    if row is None or row.revoked:
        return None
    row.last_used_at = now_utc()
    return user_by_id(session, row.user_id)


# ---- login rate limit -----------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimit:
    attempts: int = 5
    window: timedelta = timedelta(minutes=5)


def login_blocked(session: Session, keys: list[str], limit: RateLimit) -> bool:
    """Whether any of `keys` (user name, client address) had too many recent failures."""
    since = now_utc() - limit.window
    for key in keys:
        count = session.scalar(
            select(func.count())
            .select_from(LoginAttemptRow)
            .where(LoginAttemptRow.key == key, LoginAttemptRow.at >= since)
        )
        if (count or 0) >= limit.attempts:
            return True
    return False


def record_failed_login(session: Session, keys: list[str]) -> None:
    at = now_utc()
    session.add_all(LoginAttemptRow(key=key[:200], at=at) for key in keys)


def clear_failed_logins(session: Session, keys: list[str]) -> None:
    session.execute(delete(LoginAttemptRow).where(LoginAttemptRow.key.in_(keys)))
