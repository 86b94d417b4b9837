"""The FastAPI application: pages, JSON API, live events, static files (no CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from meterchain.web import (
    api,
    ledger_api,
    ledger_pages,
    live,
    pages,
    prepaid_api,
    prepaid_pages,
)
from meterchain.web.deps import NotLoggedIn, formatter
from meterchain.web.services import WebServices

STATIC = Path(__file__).with_name("static")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'"
    ),
}


# Swagger UI starts itself with an inline script.
DOCS_CSP = SECURITY_HEADERS["Content-Security-Policy"].replace(
    "script-src 'self'", "script-src 'self' 'unsafe-inline'"
)


def create_app(services: WebServices) -> FastAPI:
    """The app for one store (and, optionally, a bus link and the chain)."""
    app = FastAPI(
        title="meterchain",
        summary="Smart meters that trade energy with their neighbours: the community's API",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    app.include_router(api.router)
    app.include_router(ledger_api.router)
    app.include_router(prepaid_api.router)
    app.include_router(live.router)
    app.include_router(pages.router)
    app.include_router(ledger_pages.router)
    app.include_router(prepaid_pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """Swagger UI on the OpenAPI document, from the vendored files (no CDN)."""
        response = get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="meterchain API",
            swagger_js_url="/static/vendor/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )
        response.headers["Content-Security-Policy"] = DOCS_CSP
        return response

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(NotLoggedIn)
    async def not_logged_in(request: Request, _exc: NotLoggedIn) -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/api") or "text/html" not in request.headers.get(
            "accept", ""
        ):
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        f = formatter(request, None)
        context = {
            "f": f,
            "t": f.t,
            "caller": None,
            "user": None,
            "csrf": None,
            "status": exc.status_code,
            "detail": exc.detail,
            "path": request.url.path,
            "languages": (),
        }
        return pages.TEMPLATES.TemplateResponse(
            request, "error.html", context, status_code=exc.status_code
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(p) for p in first["loc"][1:]) or None
        return JSONResponse(
            {"detail": f"{field or 'request'}: {first['msg']}", "field": field}, status_code=422
        )

    return app
