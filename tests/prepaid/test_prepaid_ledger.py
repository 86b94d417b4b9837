"""The board's credit estimate and its decisions, as pure functions of their inputs."""

from __future__ import annotations

from datetime import UTC, datetime

from meterchain.model import RelayState
from meterchain.prepaid.ledger import ChainState, CreditSnapshot, LocalCredit
from meterchain.prepaid.rules import CutOffRules

NOON = int(datetime(2026, 11, 24, 15, 0, tzinfo=UTC).timestamp())  # Tuesday 12:00 local


def snapshot(**fields: object) -> CreditSnapshot:
    values: dict[str, object] = {
        "credit_units": 1_000,
        "state": ChainState.SUPPLIED,
        "since": NOON,
        "emergency_units": 200,
        "settled_import_wh": 10_000,
        "settled_export_wh": 500,
        "retail_units": 95,
        "feed_in_units": 25,
        "never_cut": False,
        "rules": CutOffRules(),
        "thresholds": (500, 0),
        "received_at": NOON,
    }
    values.update(fields)
    return CreditSnapshot(**values)  # type: ignore[arg-type]


def test_the_estimate_debits_imports_at_retail_up_and_credits_exports_at_feed_in_down() -> None:
    ledger = LocalCredit()
    ledger.update(snapshot())
    assert ledger.estimate_units(10_000, 500) == 1_000
    assert ledger.estimate_units(10_001, 500) == 1_000 - 1  # 0.095 cents, rounded up
    assert ledger.estimate_units(11_000, 540) == 1_000 - 95 + 1  # 40 Wh at 25: 1 cent


def test_registers_behind_the_chain_s_count_nothing() -> None:
    ledger = LocalCredit()
    ledger.update(snapshot())
    assert ledger.estimate_units(9_000, 0) == 1_000


def test_local_warnings_come_once_per_threshold_and_re_arm_with_a_new_snapshot() -> None:
    ledger = LocalCredit()
    ledger.update(snapshot())
    assert ledger.new_warnings(15_000, 500) == []  # 5 kWh at 95: 525 left
    assert ledger.new_warnings(16_000, 500) == [500]  # 430 left
    assert ledger.new_warnings(16_500, 500) == []
    assert ledger.new_warnings(21_000, 500) == [0]
    ledger.update(snapshot(credit_units=2_000))
    assert ledger.new_warnings(26_000, 500) == [500]


def test_an_online_board_follows_the_chain_and_an_offline_one_the_rules() -> None:
    ledger = LocalCredit(offline_after_s=1800)
    ledger.update(snapshot(credit_units=0))
    decision = ledger.decide(15_000, 500, RelayState.ON, NOON + 60)
    assert decision is not None and decision.state is RelayState.ON  # the chain says supplied
    decision = ledger.decide(15_000, 500, RelayState.ON, NOON + 3600)  # offline, -475
    assert decision is not None and decision.state is RelayState.OFF and decision.local
    assert ledger.cut_at_import_wh == 15_000


def test_an_offline_board_never_reconnects_by_itself() -> None:
    ledger = LocalCredit(offline_after_s=1800)
    ledger.update(snapshot(credit_units=50_000))
    assert ledger.decide(10_000, 500, RelayState.OFF, NOON + 7200) is None
