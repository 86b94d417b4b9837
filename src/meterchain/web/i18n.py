"""Portuguese (Brazil) and English: the interface's words, money in R$, times in the
community's zone.

Words come from `locales/<language>.json` (one flat key → text table per language, with
`{name}` placeholders); a key missing from a table is a bug the tests catch. Numbers, money
and dates are formatted by Babel with the language's conventions (R$ 1.234,56 in pt-BR,
R$1,234.56 in English).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from babel.numbers import format_currency, format_decimal, format_percent

LANGUAGES = ("pt-BR", "en")
DEFAULT_LANGUAGE = "pt-BR"
LOCALES = Path(__file__).with_name("locales")
_BABEL = {"pt-BR": "pt_BR", "en": "en"}


@cache
def catalogue(language: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((LOCALES / f"{language}.json").read_text(encoding="utf-8"))
    return data


def pick_language(wanted: str | None, accept_language: str | None = None) -> str:
    """The user's language, else the browser's first known one, else Portuguese."""
    if wanted in LANGUAGES:
        return str(wanted)
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("pt"):
            return "pt-BR"
        if tag.startswith("en"):
            return "en"
    return DEFAULT_LANGUAGE


@dataclass(frozen=True)
class Formatter:
    """Everything a page needs to speak one language in one time zone."""

    language: str
    timezone: str = "America/Fortaleza"
    currency: str = "BRL"

    @property
    def locale(self) -> str:
        return _BABEL[self.language]

    def t(self, key: str, **values: object) -> str:
        text = catalogue(self.language).get(key)
        if text is None:
            text = catalogue("en").get(key, key)
        return text.format(**values) if values else text

    def money(self, amount: float | Decimal | None) -> str:
        if amount is None:
            return "–"
        return format_currency(amount, self.currency, locale=self.locale)

    def number(self, value: float | None, digits: int = 1) -> str:
        if value is None:
            return "–"
        return format_decimal(
            round(value, digits), format=f"#,##0.{'0' * digits}", locale=self.locale
        )

    def wh(self, energy_wh: float | None) -> str:
        """Whole watt-hours (a certificate's unit)."""
        if energy_wh is None:
            return "–"
        return f"{format_decimal(round(energy_wh), format='#,##0', locale=self.locale)} Wh"

    def kwh(self, energy_wh: float | None) -> str:
        return "–" if energy_wh is None else f"{self.number(energy_wh / 1000, 2)} kWh"

    def kw(self, power_w: float | None) -> str:
        return "–" if power_w is None else f"{self.number(power_w / 1000, 2)} kW"

    def percent(self, fraction: float | None) -> str:
        if fraction is None:
            return "–"
        return format_percent(fraction, format="#,##0.0 %", locale=self.locale)

    def price(self, price_per_kwh: float | None) -> str:
        if price_per_kwh is None:
            return "–"
        return f"{self.money(price_per_kwh)}/kWh"

    def when(self, moment: datetime | None) -> str:
        if moment is None:
            return "–"
        return format_datetime(
            moment, format="short", tzinfo=ZoneInfo(self.timezone), locale=self.locale
        )

    def iso_local(self, moment: datetime) -> str:
        return moment.astimezone(ZoneInfo(self.timezone)).isoformat()
