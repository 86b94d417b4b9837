"""Who is asking and what they may see: FastAPI dependencies shared by pages and API.

A request is authenticated by its session cookie (browsers) or by `Authorization: Bearer`
(machine clients). Writes with a cookie must carry the session's CSRF token (a form field or
the X-CSRF-Token header); a bearer token is not sent by browsers on their own, so it needs
none. A prosumer reaches only their own meter: any other id is answered as unknown (404).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from meterchain.web.i18n import Formatter, pick_language
from meterchain.web.security import User, find_session, same, user_for_api_token
from meterchain.web.services import WebServices

SESSION_COOKIE = "mc_session"
LANGUAGE_COOKIE = "mc_lang"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"

bearer_scheme = HTTPBearer(auto_error=False, description="An API token from /account")
cookie_scheme = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="Login session")


class NotLoggedIn(Exception):
    """A page needs a login: the app redirects to /login."""


@dataclass(frozen=True)
class Caller:
    """The authenticated user, how they came, and their session's CSRF token (cookie only)."""

    user: User
    via_cookie: bool
    csrf_token: str | None


def services(request: Request) -> WebServices:
    found: WebServices = request.app.state.services
    return found


Services = Annotated[WebServices, Depends(services)]


def optional_caller(
    request: Request,
    svc: Services,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
    cookie: Annotated[str | None, Depends(cookie_scheme)] = None,
) -> Caller | None:
    if bearer is not None:
        with svc.store.session() as session:
            user = user_for_api_token(session, bearer.credentials)
        if user is None:
            raise HTTPException(
                401, "the API token is unknown or revoked", {"WWW-Authenticate": "Bearer"}
            )
        return Caller(user, via_cookie=False, csrf_token=None)
    if cookie:
        with svc.store.session() as session:
            found = find_session(session, cookie)
        if found is not None:
            return Caller(found.user, via_cookie=True, csrf_token=found.csrf_token)
    return None


def api_caller(caller: Annotated[Caller | None, Depends(optional_caller)]) -> Caller:
    if caller is None:
        raise HTTPException(
            401, "log in, or send an API token as 'Authorization: Bearer …'",
            {"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    return caller


def page_caller(caller: Annotated[Caller | None, Depends(optional_caller)]) -> Caller:
    if caller is None:
        raise NotLoggedIn
    return caller


ApiCaller = Annotated[Caller, Depends(api_caller)]
PageCaller = Annotated[Caller, Depends(page_caller)]


def require_operator(caller: Caller) -> None:
    if not caller.user.is_operator:
        raise HTTPException(403, "only the operator may do this")


def check_meter_access(caller: Caller, meter_id: str) -> None:
    """A prosumer's own meter, or any for the operator; another's id is 'not found'."""
    if caller.user.is_operator:
        return
    if caller.user.meter_id != meter_id:
        raise HTTPException(404, f"no meter {meter_id} for you")


async def check_csrf(request: Request, caller: Caller) -> None:
    """Writes with a session cookie must echo the session's CSRF token."""
    if not caller.via_cookie:
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or caller.csrf_token is None or not same(sent, caller.csrf_token):
        raise HTTPException(
            403, "the form is stale or did not come from this site (CSRF); reload and retry"
        )


def formatter(request: Request, caller: Caller | None) -> Formatter:
    svc: WebServices = request.app.state.services
    wanted = caller.user.language if caller is not None else request.cookies.get(LANGUAGE_COOKIE)
    language = pick_language(wanted, request.headers.get("accept-language"))
    return Formatter(language, svc.settings.timezone, svc.settings.currency)
