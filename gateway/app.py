"""Assemble the ASGI app from settings: mappings, connections, routes, errors."""

import asyncio
import contextlib
import logging
import os
import platform
import sqlite3
from importlib import metadata
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from . import auth, connections, idempotency, logs, mapping, metrics, sandbox, tracing
from .connections import ApiKeys, ConnectionEntry, Connections
from .call import PREFIX
from .cursor import Cursors
from .errors import GatewayError, internal_error
from .listing import Listing
from .openapi import ASSETS, Docs
from .records import REPLAYED_HEADERS, Records
from .routes import Gateway
from .runtime import Runtime, Snapshot, mapping_files
from .settings import DEMO_API_KEY, SANDBOX_TOKEN, ConfigError, Settings, from_environ
from .store import StoreUnavailable, open_store
from .upstream import open_upstream

log = logging.getLogger("gateway")

# The embedded default reaches the sandbox in-process, through this address.
SANDBOX_URL = "http://formation.sandbox.invalid"


def _embedded_connections(providers: dict[str, mapping.Provider], keeper: auth.Keeper,
                          previous: Connections | None) -> Connections:
    entry = ConnectionEntry(token=SANDBOX_TOKEN, provider="formation", name="embedded-sandbox", base_url=SANDBOX_URL,
                            credentials={"api_key": sandbox.API_KEY}, context={"company_id": sandbox.COMPANY_ID})
    conn = connections.Connection(entry, providers["formation"], "embedded sandbox", keeper,
                                  previous.resolve(SANDBOX_TOKEN) if previous else None)
    return Connections({SANDBOX_TOKEN: conn})


class App:
    """The ASGI app: the unified API's paths go straight to the gateway (the
    hot path, measured: Starlette's routing and middleware cost more than the
    gateway's own), everything else (health, 404s, lifespan) to Starlette."""

    def __init__(self, gateway: Gateway, starlette: Starlette):
        self.gateway = gateway
        self.starlette = starlette
        self.routes = frozenset(route.path for route in starlette.routes if isinstance(route, Route))

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path = scope["path"]
            if path.startswith(PREFIX):
                return await self.gateway(scope, receive, send)
            # What the log says: a route's path (an asset's is its mount's), or no route's.
            logs.note(path=path if path in self.routes else _ASSET if path.startswith(ASSETS + "/") else logs.UNMATCHED)
        return await self.starlette(scope, receive, send)


_ASSET = f"{ASSETS}/{{path}}"


def create_app(settings: Settings | None = None, environ: Mapping[str, str] = os.environ,
               transport: httpx.AsyncBaseTransport | None = None, metrics_dir: Path | None = None) -> App:
    """Load and check everything up front; raise ConfigError or MappingError on any problem.

    `transport`: send every upstream call through this httpx transport instead
    of the network (the embedded sandbox does; so do the translation tests).
    `metrics_dir`: where the workers of `gateway serve --workers N` share their figures."""
    settings = settings or from_environ(environ)
    if settings.embedded:
        transport = transport or httpx.ASGITransport(app=sandbox.create_app())
    upstream = open_upstream(transport)
    try:
        store = open_store(settings.state_url)
    except (ValueError, OSError, sqlite3.Error) as exc:
        raise ConfigError(f"GATEWAY_STATE_URL: {exc}") from None
    traces = tracing.start()  # None unless the OpenTelemetry SDK is installed and configured
    if traces:
        upstream.exchange = traces.client(upstream.exchange)
    keeper = auth.Keeper(store, upstream.exchange)  # token refreshes traced as any provider call

    def build(previous: Snapshot | None) -> Snapshot:
        providers = mapping.load_dirs(settings.mappings_dirs)
        old = previous.connections if previous else None
        if settings.embedded:
            return Snapshot(providers, _embedded_connections(providers, keeper, old))
        return Snapshot(providers, connections.load(settings.connections_file, providers, environ, keeper, old))

    def watched() -> list[Path]:
        files = mapping_files(settings.mappings_dirs)
        return files + [settings.connections_file] if settings.connections_file else files

    if settings.embedded:
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
        keys = settings.api_keys
    runtime = Runtime(build, watched)
    figures = metrics.Metrics(runtime, metrics_dir)
    if settings.cursor_secret_is_random:
        log.info("GATEWAY_CURSOR_SECRET is not set: cursors are valid for this process only")

    records = Records(upstream, idempotency.Once(store, REPLAYED_HEADERS), settings.max_body_bytes)
    gateway = Gateway(ApiKeys(keys), runtime, records, Listing(upstream, Cursors(settings.cursor_secret)))
    providers = runtime.current.providers
    log.info("gateway ready: %d provider mapping(s) (%s), %d connection(s)",
             len(providers), ", ".join(sorted(providers)), len(runtime.current.connections), extra=logs.event("ready"))

    async def health(request: Request) -> Response:
        """Liveness: the process serves."""
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        """Readiness: mappings and connections loaded (a reload never unloads
        them) and the state store answering. A connection whose circuit is open
        is reported, not a reason to take the instance out of service.
        ---
        responses:
          "200": {description: Ready}
          "503": {description: The state store does not answer}
        """
        snapshot = runtime.current
        body = {"status": "ready", "providers": sorted(snapshot.providers), "connections": len(snapshot.connections),
                "open_circuits": [{"connection": c.name, "provider": c.provider.name}
                                  for c in snapshot.connections if c.state.breaker.opened_at is not None],
                "state_store": "ok"}
        try:
            await store.ping()
        except StoreUnavailable as exc:
            body.update(status="not_ready", state_store=f"unreachable: {exc}")
            return JSONResponse(body, 503)
        return JSONResponse(body)

    async def version(request: Request) -> Response:
        """The gateway's version, and Python's."""
        return JSONResponse({"name": "gateway", "version": metadata.version("gateway"),
                             "python": platform.python_version()})

    async def scrape(request: Request) -> Response:
        """Metrics, in Prometheus' text exposition format; with several workers, their sum.
        ---
        responses:
          "200": {description: OK, content: {text/plain: {schema: {type: string}}}}
        """
        return Response(figures.exposition(), media_type=metrics.CONTENT_TYPE)

    async def gateway_error(request: Request, exc: GatewayError) -> Response:
        return exc.response()

    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = {404: "no_such_path", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return GatewayError(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}",
                            dict(exc.headers or {})).response()

    async def unexpected_error(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return internal_error().response()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        watching, sharing = loop.create_task(runtime.watch()), loop.create_task(figures.share())
        yield
        watching.cancel()
        sharing.cancel()
        await asyncio.gather(watching, sharing, return_exceptions=True)  # the last share written, its failure said
        await upstream.aclose()
        await store.aclose()
        if traces:
            traces.shutdown()

    # Each also with a trailing slash, answered in place (Starlette would redirect to the client's Host).
    endpoints = {"/health": health, "/healthz": health, "/readyz": ready, "/version": version, "/metrics": scrape}
    docs = Docs(gateway.served(), endpoints)
    endpoints = endpoints | {"/openapi.json": docs.openapi, "/docs": docs.page}
    starlette = Starlette(
        routes=[Route(path + slash, endpoint) for path, endpoint in endpoints.items() for slash in ("", "/")]
        + [Mount(ASSETS, docs.assets)],
        exception_handlers={GatewayError: gateway_error, HTTPException: http_error, Exception: unexpected_error},
        lifespan=lifespan,
    )
    # Starlette's redirect to the other spelling of a path names the Host the client sent: an open redirect.
    starlette.router.redirect_slashes = False
    return App(traces.server(gateway) if traces else gateway, starlette)
