"""The web server's settings: where it listens, its database, its community's conventions."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import timedelta

from meterchain.web.security import RateLimit


@dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    db_url: str = "sqlite:///var/web.db"
    timezone: str = "America/Fortaleza"
    currency: str = "BRL"
    interval_s: int = 900
    session_ttl: timedelta = timedelta(hours=8)
    secure_cookies: bool | None = None  # None: Secure unless served on a loopback address
    login_limit: RateLimit = field(default_factory=RateLimit)
    live_poll_s: float = 0.25

    @property
    def cookies_secure(self) -> bool:
        if self.secure_cookies is not None:
            return self.secure_cookies
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host != "localhost"
