"""Live updates: a server-sent event whenever an interval settles or an alarm changes.

The stream watches a small stamp in the database (the last settled interval, the alarms'
counts) every `live_poll_s`, so it works whether the monitor writing the database runs in
this process or another. Pages react by fetching what they show again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from sse_starlette.sse import EventSourceResponse

from meterchain.web import queries
from meterchain.web.deps import ApiCaller, Services

router = APIRouter(prefix="/api", tags=["api"])


@router.get("/live", response_class=EventSourceResponse)
async def live(request: Request, caller: ApiCaller, svc: Services) -> EventSourceResponse:
    """Server-sent events: `update` with the last settled interval whenever something changed."""

    def read() -> tuple[str, int | None]:
        with svc.store.session() as session:
            return queries.live_stamp(session), queries.latest_delivered(session)

    async def events() -> AsyncIterator[dict[str, str]]:
        seen, _ = await asyncio.to_thread(read)
        yield {"event": "hello", "data": json.dumps({"user": caller.user.username})}
        while not await request.is_disconnected():
            await asyncio.sleep(svc.settings.live_poll_s)
            stamp, delivered = await asyncio.to_thread(read)
            if stamp != seen:
                seen = stamp
                yield {"event": "update", "data": json.dumps({"interval": delivered})}

    return EventSourceResponse(events(), ping=15)
