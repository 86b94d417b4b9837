"""Both languages have every word the pages use; the vendored front-end files are npm's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from meterchain.ledger.statements import LINE_KEYS
from meterchain.prepaid.rules import Reason
from meterchain.web.i18n import LOCALES, Formatter, catalogue

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "src" / "meterchain" / "web"


def _used_keys() -> set[str]:
    keys: set[str] = set()
    for path in [*WEB.glob("templates/*.html"), WEB / "pages.py"]:
        keys |= set(re.findall(r"""\bt\(["']([a-z_]+\.[a-z_.-]+)["']""", path.read_text()))
    # words picked by a value: "status." ~ board status, "alarm.kinds." ~ kind, …
    dynamic = {
        "status.": ("online", "offline", "meter-error", "unknown"),
        "config.status.": ("sent", "accepted", "applied", "refused", "not-sent"),
        "alarm.kinds.": (
            "meter-not-answering", "agent-offline", "reading-refused", "settlement-failed",
            "settlement-late", "battery-limits", "voltage", "order-refused", "interval-void",
            "prepaid-low-credit", "prepaid-grace", "prepaid-cut-off", "prepaid-relay-failed",
            "device-fault",
        ),
        "deployed.none.": ("certificates", "fund", "statements", "prepaid"),
        "prepaid.states.": ("supplied", "grace", "cut_off"),
        "prepaid.reasons.": (
            "none", "emergency_credit", "night", "day", "holiday", "holiday_eve", "never_cut",
        ),
        "statements.line.": LINE_KEYS,
        "done.": (
            "retired", "bought", "claimed", "nothing_to_claim", "collected", "nothing_to_collect",
            "recorded", "paid", "voucher", "topped_up",
        ),
    }  # fmt: skip
    for prefix, values in dynamic.items():
        keys.discard(prefix)
        keys |= {prefix + value for value in values}
    return keys


def test_every_reason_and_redirect_notice_the_code_can_give_has_words() -> None:
    """The words picked by value above cover every value the code can produce."""
    reasons = {r.name.lower() for r in Reason}
    used = _used_keys()
    assert {f"prepaid.reasons.{r}" for r in reasons} <= used
    pages = (WEB / "ledger_pages.py").read_text() + (WEB / "prepaid_pages.py").read_text()
    notices = set(re.findall(r"done=([a-z_]+)", pages) + re.findall(r'done="([a-z_]+)"', pages))
    for chosen in re.findall(r'done = "([a-z_]+)" if .* else "([a-z_]+)"', pages):
        notices |= set(chosen)
    assert notices and {f"done.{n}" for n in notices} <= used


def test_both_languages_have_the_same_words() -> None:
    english, portuguese = catalogue("en"), catalogue("pt-BR")
    assert set(english) == set(portuguese)
    assert all(text.strip() for text in [*english.values(), *portuguese.values()])


def test_every_word_a_page_uses_is_translated() -> None:
    used = _used_keys()
    assert len(used) > 80
    missing = used - set(catalogue("pt-BR"))
    assert not missing


def test_placeholders_match_between_languages() -> None:
    english, portuguese = catalogue("en"), catalogue("pt-BR")
    for key, text in english.items():
        assert set(re.findall(r"{(\w+)}", text)) == set(re.findall(r"{(\w+)}", portuguese[key])), (
            key
        )


def test_money_and_times_follow_the_language_and_the_community_zone() -> None:
    from datetime import UTC, datetime

    pt, en = Formatter("pt-BR"), Formatter("en")
    assert pt.money(1234.5) == "R$\xa01.234,50"
    assert en.money(1234.5) == "R$1,234.50"
    noon_utc = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
    assert pt.when(noon_utc) == "24/11/2026 12:00"  # Fortaleza is UTC-3
    assert "12:00" in en.when(noon_utc)


@pytest.mark.parametrize(
    ("vendored", "package"),
    [
        ("echarts.min.js", "echarts/dist/echarts.min.js"),
        ("htmx.min.js", "htmx.org/dist/htmx.min.js"),
        ("swagger-ui-bundle.js", "swagger-ui-dist/swagger-ui-bundle.js"),
        ("swagger-ui.css", "swagger-ui-dist/swagger-ui.css"),
    ],
)
def test_vendored_files_are_the_pinned_npm_packages(vendored: str, package: str) -> None:
    source = ROOT / "node_modules" / package
    assert (WEB / "static" / "vendor" / vendored).read_bytes() == source.read_bytes(), (
        f"static/vendor/{vendored} differs from node_modules/{package}: run `make web-assets`"
    )


def test_locale_files_are_valid_json() -> None:
    for path in LOCALES.glob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))
