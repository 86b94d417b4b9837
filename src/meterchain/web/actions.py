"""The changes people make, shared by the pages and the API: each one validated, carried
out, and written to the audit log with who made it and the values before and after."""

from __future__ import annotations

import asyncio
import functools
import json
import re
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select

from meterchain.agents.messages import TariffNotice, TradingConfig
from meterchain.agents.monitor import new_meter
from meterchain.chain.errors import ChainError
from meterchain.config import Tariffs
from meterchain.store.accounts import LANGUAGES, ApiTokenRow, AuditRow, UserRow
from meterchain.store.community import AlarmRow, BoardConfigRow, MeterRow
from meterchain.web.chain_actions import ChainActions, NotDeployed, NoWallet
from meterchain.web.queries import config_in_force, config_json
from meterchain.web.security import User, issue_api_token, now_utc
from meterchain.web.services import WebServices

ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
METER_ID = re.compile(r"^[0-9A-Za-z_-]{1,32}$")


class ActionError(Exception):
    """A change that cannot be made; `field` names the input at fault (None: the whole)."""

    def __init__(self, message: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status

    def as_json(self) -> dict[str, Any]:
        return {"detail": self.message, "field": self.field}


def audit(svc: WebServices, actor: User, action: str, target: str, before: Any, after: Any) -> None:
    with svc.store.session() as session:
        session.add(
            AuditRow(
                at=now_utc(),
                actor=actor.username,
                action=action,
                target=target,
                before=None if before is None else json.dumps(before, default=str),
                after=None if after is None else json.dumps(after, default=str),
            )
        )


def validate_config(data: dict[str, Any]) -> TradingConfig:
    """A configuration from a form or JSON; the first problem names its field."""
    try:
        return TradingConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or None
        raise ActionError(f"{field}: {error['msg']}", field=field, status=422) from None


async def change_config(
    svc: WebServices, actor: User, meter_id: str, config: TradingConfig
) -> dict[str, Any]:
    """Store a new configuration version and send it to the meter's board."""
    with svc.store.session() as session:
        if session.get(MeterRow, meter_id) is None:
            raise ActionError(f"no meter {meter_id}", status=404)
        before = config_in_force(session, meter_id)
        version = (
            session.scalar(
                select(func.max(BoardConfigRow.version)).where(BoardConfigRow.meter_id == meter_id)
            )
            or 0
        ) + 1
        row = BoardConfigRow(
            meter_id=meter_id,
            version=version,
            config=config.model_dump_json(),
            status="sent",
            requested_by=actor.username,
            requested_at=now_utc(),
        )
        if svc.monitor is None:
            row.status = "not-sent"
            row.reason = "this web server is not connected to the bus (start it with --broker)"
        session.add(row)
        session.flush()
        stored = config_json(row)
    audit(
        svc, actor, "config.change", f"meter:{meter_id}",
        None if before is None else before["config"], config.model_dump(),
    )  # fmt: skip
    if svc.monitor is not None:
        await svc.monitor.push_config(meter_id, version, config, actor.username)
    return stored


def _chain(svc: WebServices) -> ChainActions:
    if svc.chain is None:
        raise ActionError("this web server has no chain connection (start it with --deployment)")
    return svc.chain


def chain_of(svc: WebServices) -> ChainActions:
    """The chain actions, or ActionError (404) when this server has no chain connection."""
    if svc.chain is None:
        raise ActionError(
            "this web server has no chain connection (start it with --deployment)", status=404
        )
    return svc.chain


async def _on_chain(what: str, call: Any, *args: Any) -> Any:
    """Run a blocking chain call in a thread; its failures as ActionErrors people can act on."""
    return await asyncio.to_thread(on_chain_now, what, call, *args)


def on_chain_now(what: str, call: Any, *args: Any) -> Any:
    """A chain call in this thread (the app runs plain `def` handlers in its thread pool)."""
    try:
        return call(*args)
    except NotDeployed as exc:
        raise ActionError(str(exc), status=404) from None
    except NoWallet as exc:
        raise ActionError(str(exc), status=409) from None
    except ChainError as exc:
        raise ActionError(f"the chain refused to {what}: {exc}", status=409) from None
    except ValueError as exc:
        raise ActionError(str(exc)) from None


async def register_meter(
    svc: WebServices,
    actor: User,
    *,
    meter_id: str,
    signer: str,
    owner: str,
    kind: str,
    protocol: str,
    pv_kwp: float = 0.0,
    battery_kwh: float = 0.0,
    max_power_w: int = 15_000,
    import_wh: int = 0,
    export_wh: int = 0,
) -> dict[str, Any]:
    if not METER_ID.match(meter_id):
        raise ActionError("meter_id: 1–32 letters, digits, - or _", field="meter_id")
    for name, value in (("signer", signer), ("owner", owner)):
        if not ADDRESS.match(value):
            raise ActionError(f"{name}: an address is 0x and 40 hex digits", field=name)
    chain = _chain(svc)
    result = await _on_chain(
        f"register meter {meter_id}",
        functools.partial(
            chain.register_meter,
            max_power_w=max_power_w,
            import_wh=import_wh,
            export_wh=export_wh,
        ),
        meter_id,
        signer,
        owner,
        kind,
    )
    with svc.store.session() as session:
        row = session.get(MeterRow, meter_id)
        if row is None:
            row = new_meter(meter_id)
            session.add(row)
        row.protocol, row.kind, row.signer, row.owner = protocol, kind, signer, owner
        row.pv_kwp, row.battery_kwh, row.revoked = pv_kwp, battery_kwh, False
    after = {"signer": signer, "owner": owner, "kind": kind, "tx": result.tx_hash}
    audit(svc, actor, "meter.register", f"meter:{meter_id}", None, after)
    return after


async def rotate_signer(
    svc: WebServices, actor: User, meter_id: str, new_signer: str
) -> dict[str, Any]:
    if not ADDRESS.match(new_signer):
        raise ActionError("signer: an address is 0x and 40 hex digits", field="signer")
    chain = _chain(svc)
    with svc.store.session() as session:
        row = session.get(MeterRow, meter_id)
        if row is None:
            raise ActionError(f"no meter {meter_id}", status=404)
        before = row.signer
    result = await _on_chain(
        f"rotate the key of meter {meter_id}", chain.rotate_signer, meter_id, new_signer
    )
    with svc.store.session() as session:
        found = session.get(MeterRow, meter_id)
        if found is not None:
            found.signer = new_signer
    if svc.monitor is not None:
        await svc.monitor.signer_changed(meter_id)
    after = {"signer": new_signer, "tx": result.tx_hash}
    audit(svc, actor, "meter.rotate", f"meter:{meter_id}", {"signer": before}, after)
    return after


async def revoke_meter(svc: WebServices, actor: User, meter_id: str) -> dict[str, Any]:
    chain = _chain(svc)
    with svc.store.session() as session:
        row = session.get(MeterRow, meter_id)
        if row is None:
            raise ActionError(f"no meter {meter_id}", status=404)
        if row.revoked:
            raise ActionError(f"meter {meter_id} is already revoked", status=409)
    result = await _on_chain(f"revoke meter {meter_id}", chain.revoke_meter, meter_id)
    with svc.store.session() as session:
        found = session.get(MeterRow, meter_id)
        if found is not None:
            found.revoked = True
    if svc.monitor is not None:
        await svc.monitor.signer_changed(meter_id)
    after = {"revoked": True, "tx": result.tx_hash}
    audit(svc, actor, "meter.revoke", f"meter:{meter_id}", {"revoked": False}, after)
    return after


async def set_tariffs(
    svc: WebServices,
    actor: User,
    retail_price: float,
    feed_in_price: float,
    feeder_export_limit_w: float | None,
) -> dict[str, Any]:
    try:
        Tariffs(retail_price=retail_price, feed_in_price=feed_in_price)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "feed_in_price"
        raise ActionError(
            f"{field}: {error['msg'].removeprefix('Value error, ')}", field=field, status=422
        ) from None
    if feeder_export_limit_w is not None and feeder_export_limit_w <= 0:
        raise ActionError(
            "feeder_export_limit_w: must be positive (or empty for none)",
            field="feeder_export_limit_w",
            status=422,
        )
    chain = _chain(svc)
    before = None
    if svc.monitor is not None:
        before = {
            "retail_price": svc.monitor.tariffs.retail_price,
            "feed_in_price": svc.monitor.tariffs.feed_in_price,
        }
    result = await _on_chain("set the tariffs", chain.set_tariffs, retail_price, feed_in_price)
    if svc.monitor is not None:
        await svc.monitor.announce_tariffs(
            TariffNotice(
                retail_price=retail_price,
                feed_in_price=feed_in_price,
                max_export_w=feeder_export_limit_w if feeder_export_limit_w is not None else 0.0,
            )
        )
    after = {
        "retail_price": retail_price,
        "feed_in_price": feed_in_price,
        "feeder_export_limit_w": feeder_export_limit_w,
        "tx": result.tx_hash,
    }
    audit(svc, actor, "tariffs.set", "market", before, after)
    return after


def acknowledge_alarm(svc: WebServices, actor: User, alarm_id: int) -> dict[str, Any]:
    with svc.store.session() as session:
        row = session.get(AlarmRow, alarm_id)
        if row is None or (not actor.is_operator and row.meter_id != actor.meter_id):
            raise ActionError(f"no alarm {alarm_id}", status=404)
        if row.acknowledged_at is None:
            row.acknowledged_at = now_utc()
            row.acknowledged_by = actor.username
        result = {"id": row.id, "acknowledged_by": row.acknowledged_by}
    audit(svc, actor, "alarm.acknowledge", f"alarm:{alarm_id}", None, result)
    return result


def set_language(svc: WebServices, actor: User, language: str) -> None:
    if language not in LANGUAGES:
        raise ActionError(
            f"language must be one of {', '.join(LANGUAGES)}", field="language", status=422
        )
    with svc.store.session() as session:
        row = session.get(UserRow, actor.id)
        assert row is not None
        before, row.language = row.language, language
    audit(svc, actor, "user.language", f"user:{actor.username}", before, language)


def create_token(svc: WebServices, actor: User, name: str) -> tuple[str, int]:
    name = name.strip()
    if not name:
        raise ActionError(
            "name: give the token a name (what will use it)", field="name", status=422
        )
    with svc.store.session() as session:
        token, token_id = issue_api_token(session, actor, name)
    audit(svc, actor, "token.create", f"token:{token_id}", None, {"name": name})
    return token, token_id


def revoke_token(svc: WebServices, actor: User, token_id: int) -> None:
    with svc.store.session() as session:
        row = session.get(ApiTokenRow, token_id)
        if row is None or row.user_id != actor.id:
            raise ActionError(f"no token {token_id}", status=404)
        row.revoked = True
    audit(svc, actor, "token.revoke", f"token:{token_id}", None, {"revoked": True})


def tokens(svc: WebServices, actor: User) -> list[dict[str, Any]]:
    with svc.store.session() as session:
        rows = session.scalars(
            select(ApiTokenRow).where(ApiTokenRow.user_id == actor.id).order_by(ApiTokenRow.id)
        )
        return [
            {
                "id": r.id,
                "name": r.name,
                "created_at": r.created_at,
                "last_used_at": r.last_used_at,
                "revoked": r.revoked,
            }
            for r in rows
        ]
