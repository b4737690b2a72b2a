"""Assemble the ASGI app from settings: mappings, connections, routes, errors."""

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import connections, idempotency, mapping, sandbox
from .connections import ApiKeys, ConnectionEntry, Connections
from .cursor import Cursors
from .errors import GatewayError, shutting_down
from .routes import Gateway
from .settings import DEMO_API_KEY, SANDBOX_TOKEN, ConfigError, Settings, from_environ
from .upstream import open_upstream

log = logging.getLogger("gateway")

# The embedded default reaches the sandbox in-process, through this address.
SANDBOX_URL = "http://formation.sandbox.invalid"


def _embedded_connections(providers: dict[str, mapping.Provider]) -> Connections:
    if "formation" not in providers:
        raise ConfigError("the embedded default needs the formation mapping, which is missing from the mappings directory")
    entry = ConnectionEntry(token=SANDBOX_TOKEN, provider="formation", name="sandbox-formation", base_url=SANDBOX_URL,
                            credentials={"api_key": sandbox.API_KEY}, context={"company_id": sandbox.COMPANY_ID})
    return Connections({SANDBOX_TOKEN: connections.Connection(entry, providers["formation"], "embedded sandbox")})


class _AnswerCancelled:
    """uvicorn cancels the calls still under way when --graceful-timeout runs
    out, and answers each with a bare text 500: answer one of ours instead."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def sending(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:
            if started:
                raise
            log.warning("%s %s cut short by shutdown", scope["method"], scope["path"])
            # Answered: the call ends here, not as an error uvicorn logs with a traceback.
            await shutting_down().response()(scope, receive, send)


def create_app(settings: Settings | None = None, environ: Mapping[str, str] = os.environ,
               transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    """Load and check everything up front; raise ConfigError or MappingError on any problem.

    `transport`: send every upstream call through this httpx transport instead
    of the network (the embedded sandbox does; so do the translation tests)."""
    settings = settings or from_environ(environ)
    providers = mapping.load_dir(settings.mappings_dir)
    if settings.embedded:
        conns = _embedded_connections(providers)
        transport = transport or httpx.ASGITransport(app=sandbox.create_app())
        keys = settings.api_keys
        if not keys:
            keys = [DEMO_API_KEY]
            log.warning("=" * 72)
            log.warning("DEMO MODE: no GATEWAY_API_KEYS and no GATEWAY_CONNECTIONS are set.")
            log.warning("Serving the in-memory Formation sandbox with connection token %r", SANDBOX_TOKEN)
            log.warning("and the PUBLIC demo API key %r. Do not expose this instance.", DEMO_API_KEY)
            log.warning("=" * 72)
    else:
        if not settings.api_keys:
            raise ConfigError("GATEWAY_API_KEYS is not set: with GATEWAY_CONNECTIONS configured, "
                              "the gateway needs at least one API key (comma-separated)")
        conns = connections.load(settings.connections_file, providers, environ)
        keys = settings.api_keys
    if settings.cursor_secret_is_random:
        log.info("GATEWAY_CURSOR_SECRET is not set: cursors are valid for this process only")

    upstream = open_upstream(transport)
    try:
        store = idempotency.open_store(settings.idempotency_url)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"GATEWAY_IDEMPOTENCY_URL: {exc}") from None
    gateway = Gateway(ApiKeys(keys), conns, upstream, Cursors(settings.cursor_secret), store, settings.max_body_bytes)
    log.info("gateway ready: %d provider mapping(s) (%s), %d connection(s)",
             len(providers), ", ".join(sorted(providers)), len(conns))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def gateway_error(request: Request, exc: GatewayError) -> Response:
        return exc.response()

    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = {404: "no_such_path", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return GatewayError(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}",
                            dict(exc.headers or {})).response()

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return GatewayError(500, "internal_error", "the gateway failed unexpectedly; the error is logged").response()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await upstream.aclose()
        await store.aclose()

    return Starlette(
        routes=[Route("/health", health), *gateway.routes()],
        exception_handlers={GatewayError: gateway_error, HTTPException: http_error, Exception: internal_error},
        middleware=[Middleware(_AnswerCancelled)],
        lifespan=lifespan,
    )
