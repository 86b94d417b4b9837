"""`meterchain board status`: what the board's agent is doing, read from its store.

The agent's records say what it signed and what it was told: its last signed reading and
orders, the trades and settlements the market announced, void intervals. Its supervisor
(`board.supervisor`) adds, every few seconds, what only the running process knows: the last
meter reading, whether the broker is connected, what waits in the spool, the clock's offset,
the disk, and the alarms. A board never talks to the chain: what it knows of the chain is
what the market's notices said (a batch or delivery transaction, or the market's error).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from typing import Any

from meterchain.roles import BoardConfig
from meterchain.store.db import open_store
from meterchain.store.migrate import current_revision
from meterchain.store.records import Records

STATUS_KIND = "board-status"
STATUS_KEY = "now"
STALE_AFTER_S = 120.0  # a status older than this (wall clock): the agent is not running


def _latest(records: dict[str, dict[str, Any]]) -> tuple[int, dict[str, Any]] | None:
    keyed = [(int(k), v) for k, v in records.items() if k.isdigit()]
    return max(keyed, key=lambda item: item[0]) if keyed else None


def gather_status(config: BoardConfig, *, now: datetime | None = None) -> dict[str, Any]:
    """Everything `board status` shows, as JSON-ready data."""
    now = now or datetime.now(UTC)
    store = open_store(config.store, create=False)  # the agent's store: only read it
    try:
        # An agent that never ran has made no tables yet: then it has nothing to say.
        ran = current_revision(store.engine) is not None
        records = Records(store, config.agent_name) if ran else None

        def newest(kind: str) -> tuple[int, dict[str, Any]] | None:
            return None if records is None else _latest(records.all(kind))

        live = (records.get(STATUS_KIND, STATUS_KEY) if records else None) or {}
        reading, orders = newest("delivery"), newest("orders")
        cleared, delivered, void = newest("trades"), newest("delivered"), newest("void")
    finally:
        store.close()
    updated = live.get("at")
    age_s = None
    if updated is not None:
        age_s = (now - datetime.fromisoformat(updated)).total_seconds()
    status: dict[str, Any] = {
        "meter_id": config.meter_id,
        "agent": config.agent_name,
        "service": _service_state(),
        "running": age_s is not None and age_s < STALE_AFTER_S,
        "status_updated_at": updated,
        "last_reading": None,
        "last_signed_reading": None,
        "last_order": None,
        "last_settlement": None,
        "broker": live.get("broker"),
        "chain": None,
        "clock": live.get("clock"),
        "disk": live.get("disk"),
        "alarms": live.get("alarms", []),
    }
    if live.get("last_reading"):
        status["last_reading"] = live["last_reading"]
    if reading is not None:
        interval, signed = reading
        status["last_signed_reading"] = {
            "interval": interval,
            "import_wh": int(signed["end_import_wh"]) - int(signed["start_import_wh"]),
            "export_wh": int(signed["end_export_wh"]) - int(signed["start_export_wh"]),
            "end_import_wh": int(signed["end_import_wh"]),
            "end_export_wh": int(signed["end_export_wh"]),
        }
    if orders is not None:
        interval, prepared = orders
        status["last_order"] = {
            "interval": interval,
            "orders": [
                {k: o[k] for k in ("side", "quantity_wh", "limit_price_units", "nonce")}
                for o in prepared.get("orders", [])
            ],
        }
    status["last_settlement"] = _settlement(delivered, cleared, void)
    status["chain"] = _chain(delivered, cleared, void)
    return status


def _settlement(
    delivered: tuple[int, dict[str, Any]] | None,
    cleared: tuple[int, dict[str, Any]] | None,
    void: tuple[int, dict[str, Any]] | None,
) -> dict[str, Any] | None:
    """The newest of: a delivery settled, an interval cleared, an interval void."""
    candidates: list[tuple[int, dict[str, Any]]] = []
    if delivered is not None:
        interval, notice = delivered
        candidates.append(
            (
                interval,
                {
                    "interval": interval,
                    "what": "delivery settled" if notice.get("tx_hash") else "delivery failed",
                    "tx_hash": notice.get("tx_hash"),
                    "reading_missing": notice.get("reading_missing"),
                },
            )
        )
    if cleared is not None:
        interval, notice = cleared
        traded = sum(int(t["quantity_wh"]) for t in notice.get("trades", []))
        candidates.append(
            (
                interval,
                {"interval": interval, "what": "cleared", "traded_wh": traded,
                 "tx_hash": notice.get("tx_hash")},
            )
        )  # fmt: skip
    if void is not None:
        interval, notice = void
        candidates.append(
            (interval, {"interval": interval, "what": "void", "reason": notice.get("reason")})
        )
    if not candidates:
        return None
    return max(candidates, key=lambda item: item[0])[1]


def _chain(
    delivered: tuple[int, dict[str, Any]] | None,
    cleared: tuple[int, dict[str, Any]] | None,
    void: tuple[int, dict[str, Any]] | None,
) -> dict[str, Any]:
    """What the market's notices said of the chain (the board never asks the chain itself)."""
    seen = []
    for found, what in ((delivered, "delivery"), (cleared, "batch")):
        if found is not None and found[1].get("tx_hash"):
            seen.append((found[0], what, found[1]["tx_hash"]))
    problem = None
    for found in (delivered, cleared):
        if found is not None and found[1].get("error"):
            problem = (found[0], found[1]["error"])
    if void is not None and (problem is None or void[0] > problem[0]):
        problem = (void[0], void[1].get("reason"))
    last = max(seen) if seen else None
    return {
        "source": "the market's notices",
        "reachable": None
        if last is None and problem is None
        else problem is None or (last is not None and last[0] >= problem[0]),
        "last_transaction": None
        if last is None
        else {"interval": last[0], "what": last[1], "tx_hash": last[2]},
        "last_problem": None if problem is None else {"interval": problem[0], "what": problem[1]},
    }


def _service_state() -> str | None:
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None
    result = subprocess.run(
        [systemctl, "is-active", "meterchain-board.service"],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    return result.stdout.strip() or None


def _when(interval: int | None) -> str:
    if interval is None:
        return "-"
    return datetime.fromtimestamp(interval, UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_text(status: dict[str, Any]) -> str:
    """The status for a person: one line per subject."""
    lines = [
        f"board {status['agent']} (meter {status['meter_id']}): "
        + ("running" if status["running"] else "NOT running (no recent status from the agent)")
        + (f", service {status['service']}" if status["service"] else ""),
    ]
    live = status.get("last_reading")
    if live:
        lines.append(
            f"last reading:    {live.get('at', '?')}: import {live['import_wh']:.0f} Wh, "
            f"export {live['export_wh']:.0f} Wh, {live.get('power_w', 0):.0f} W"
        )
    signed = status.get("last_signed_reading")
    if signed:
        lines.append(
            f"last signed:     interval {_when(signed['interval'])}: import "
            f"{signed['import_wh']} Wh, export {signed['export_wh']} Wh"
        )
    elif not live:
        lines.append("last reading:    none yet")
    order = status.get("last_order")
    if order:
        text = ", ".join(
            f"{o['side']} {o['quantity_wh']} Wh at {o['limit_price_units']}"
            for o in order["orders"]
        )
        lines.append(f"last order:      interval {_when(order['interval'])}: {text or 'no order'}")
    else:
        lines.append("last order:      none yet")
    settlement = status.get("last_settlement")
    if settlement:
        detail = {k: v for k, v in settlement.items() if k not in ("interval", "what") and v}
        lines.append(
            f"last settlement: interval {_when(settlement['interval'])}: {settlement['what']}"
            + (f" ({json.dumps(detail)})" if detail else "")
        )
    else:
        lines.append("last settlement: none heard yet")
    broker = status.get("broker")
    if broker:
        state = "connected" if broker.get("connected") else "NOT connected"
        extra = f" ({broker['last_error']})" if broker.get("last_error") else ""
        lines.append(
            f"broker:          {broker.get('where', '')} {state}{extra}; "
            f"{broker.get('pending', 0)} messages waiting"
        )
    else:
        lines.append("broker:          unknown (the agent has not reported)")
    chain = status["chain"]
    if chain["reachable"] is None:
        lines.append("chain:           nothing heard from the market yet")
    else:
        last = chain["last_transaction"]
        lines.append(
            "chain:           "
            + ("reachable" if chain["reachable"] else "NOT reachable")
            + " (as the market reports it)"
            + (f"; last {last['what']} tx {last['tx_hash']}" if last else "")
            + (f"; last problem: {chain['last_problem']['what']}" if chain["last_problem"] else "")
        )
    clock = status.get("clock")
    if clock and clock.get("offset_s") is not None:
        lines.append(f"clock:           {clock['offset_s']:+.1f} s from the market's")
    disk = status.get("disk")
    if disk:
        lines.append(f"disk:            {disk['free_mb']:.1f} MB free ({disk['state']})")
    alarms = status.get("alarms") or []
    lines.append(f"alarms:          {len(alarms) or 'none'}")
    lines.extend(f"  - {a['code']}: {a['message']}" for a in alarms)
    return "\n".join(lines)
