"""`meterchain board status`: what the board knows, from its store and its supervisor."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from meterchain.board.status import STATUS_KEY, STATUS_KIND
from meterchain.cli import app
from meterchain.store.db import open_store
from meterchain.store.records import Records

AGENT = "prosumer-10000001"
T = 1_795_489_200


def board_toml(tmp_path: Path) -> Path:
    path = tmp_path / "board.toml"
    path.write_text(
        f'meter_id = "10000001"\nmeter_url = "modbus+tcp://127.0.0.1:1?unit=1"\n'
        f'store = "sqlite:///{tmp_path / "board.db"}"\n[key]\nkeystore = "k.json"\n'
        '[market]\nchain_id = 31337\naddress = "0x' + "ab" * 20 + '"\n'
    )
    return path


def write_records(tmp_path: Path, *, status_age_s: float, void_last: bool = False) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'board.db'}")
    records = Records(store, AGENT)
    records.put_once("orders", str(T), {"orders": [
        {"side": "sell", "quantity_wh": 610, "limit_price_units": 30, "nonce": 0,
         "signature": "0x00"}]})  # fmt: skip
    records.put_once("delivery", str(T - 900), {
        "start_import_wh": 1000, "start_export_wh": 500, "end_import_wh": 1010,
        "end_export_wh": 900, "signature": "0x00"})  # fmt: skip
    records.put_once("trades", str(T), {"trades": [{"quantity_wh": 400}], "tx_hash": "0xba7c"})
    records.put_once("delivered", str(T - 900), {"tx_hash": "0xde11", "error": None,
                                                 "reading_missing": False})  # fmt: skip
    if void_last:
        records.put_once("void", str(T + 900), {"reason": "its batch failed on chain: node down"})
    records.put(STATUS_KIND, STATUS_KEY, {
        "at": (datetime.now(UTC) - timedelta(seconds=status_age_s)).isoformat(),
        "last_reading": {"at": "2026-11-24T13:00:00+00:00", "import_wh": 1010.0,
                         "export_wh": 950.0, "power_w": -800.0},
        "broker": {"where": "127.0.0.1:8883", "connected": False, "pending": 7,
                   "last_error": "[Errno 111] Connection refused", "expired": 0},
        "clock": {"offset_s": -118.4, "samples": 16},
        "disk": {"free_mb": 812.0, "state": "ok", "ballast_mb": 1.0},
        "alarms": [{"code": "broker-unreachable", "message": "no broker for 45 minutes"}],
    })  # fmt: skip
    store.close()


def test_status_says_what_the_board_is_doing(tmp_path: Path) -> None:
    write_records(tmp_path, status_age_s=3)
    result = CliRunner().invoke(app, ["board", "status", "--config", str(board_toml(tmp_path))])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "running" in text and "NOT running" not in text
    assert "import 1010 Wh, export 950 Wh, -800 W" in text  # the last reading
    assert "sell 610 Wh at 30" in text  # the last order
    assert "cleared" in text and "0xba7c" in text  # the last settlement the market announced
    assert "127.0.0.1:8883 NOT connected (" in text and "7 messages waiting" in text
    assert "chain:           reachable (as the market reports it)" in text
    assert "-118.4 s from the market's" in text
    assert "broker-unreachable: no broker for 45 minutes" in text


def test_status_json_has_the_issue_fields(tmp_path: Path) -> None:
    write_records(tmp_path, status_age_s=3, void_last=True)
    result = CliRunner().invoke(
        app, ["board", "status", "--config", str(board_toml(tmp_path)), "--json"]
    )
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    for field in ("last_reading", "last_order", "last_settlement", "broker", "chain", "alarms"):
        assert status[field], field
    reason = "its batch failed on chain: node down"
    assert status["last_settlement"] == {"interval": T + 900, "what": "void", "reason": reason}
    assert status["chain"]["reachable"] is False  # the market's newest word was a failure
    assert status["last_signed_reading"]["export_wh"] == 400


def test_a_stale_status_means_the_agent_is_not_running(tmp_path: Path) -> None:
    write_records(tmp_path, status_age_s=600)
    result = CliRunner().invoke(app, ["board", "status", "--config", str(board_toml(tmp_path))])
    assert "NOT running" in result.output


def test_status_of_a_board_whose_agent_never_ran_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["board", "status", "--config", str(board_toml(tmp_path)), "--json"]
    )
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["running"] is False
    assert status["last_reading"] is None and status["last_order"] is None
