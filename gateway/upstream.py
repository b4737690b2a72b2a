"""The upstream call: send an `UpstreamRequest` to a connection's provider.

The one place that does network I/O to providers, bounded on every side:
timeouts, pool size and response size from the mapping file's `limits`;
retries of what is safe to retry, with jittered exponential backoff, within
a time budget; the connection's circuit breaker (gateway/breaker.py); the
connection's credentials (gateway/auth.py). Failures leave here as `GatewayError`s, success as decoded JSON.

Two exchanges carry the bytes. Over the network, gateway/transport.py, chosen
by measurement (README, "Benchmark"). In process, any httpx transport: the
embedded sandbox's ASGI app, or the mocked transport of the translation tests.
"""

import asyncio
import logging
import random
import time
from typing import Any

import httpx
import msgspec

from . import logs, metrics, transport
from .connections import Connection
from .errors import GatewayError, bad_gateway, from_provider
from .mapping import Provider, RetrySpec
from .operation import UpstreamRequest
from .transport import Answer, TimedOut, TooLarge, Unreachable

log = logging.getLogger("gateway.upstream")

_json = msgspec.json.Decoder()
_encode = msgspec.json.encode
_HEADERS = {"accept": "application/json", "user-agent": "panora-gateway"}


class NetworkExchange:
    """The network path: gateway/transport.py's keep-alive pools."""

    def __init__(self) -> None:
        self._client = transport.Client()
        # By value, not by provider name: a reload may change a provider's limits.
        self._timeouts_of: dict[tuple[float, float, float], transport.Timeouts] = {}

    def _timeouts(self, provider: Provider) -> transport.Timeouts:
        limits = provider.limits
        key = (limits.connect_timeout, limits.read_timeout, limits.total_timeout)
        timeouts = self._timeouts_of.get(key)
        if timeouts is None:
            timeouts = self._timeouts_of[key] = transport.Timeouts(*key)
        return timeouts

    async def __call__(self, provider: Provider, method: str, url: str, query: list, headers: dict,
                       body: bytes | None) -> Answer:
        limits = provider.limits
        # Redirects are not followed (the client has no notion of them): a Location
        # must not take the gateway, and the connection's credentials, to another host.
        try:
            return await self._client.send(method, url, query, {**_HEADERS, **headers}, body,
                                           cap=limits.max_response_bytes, pool_size=limits.max_connections,
                                           timeouts=self._timeouts(provider))
        except ValueError as exc:  # a header HTTP/1.1 cannot carry: nothing was sent
            raise GatewayError(422, "untranslatable", f"cannot send this request to {provider.name}: {exc}",
                               provider=provider.name) from None

    async def aclose(self) -> None:
        await self._client.aclose()


class HttpxExchange:
    """Any httpx transport: in-process apps, or a mocked transport in tests."""

    def __init__(self, transport: httpx.AsyncBaseTransport):
        self._client = httpx.AsyncClient(transport=transport, follow_redirects=False, headers=_HEADERS)

    async def __call__(self, provider: Provider, method: str, url: str, query: list, headers: dict,
                       body: bytes | None) -> Answer:
        limits = provider.limits
        timeout = httpx.Timeout(limits.total_timeout, connect=limits.connect_timeout, read=limits.read_timeout)
        try:
            async with asyncio.timeout(limits.total_timeout):
                request = self._client.build_request(method, url, params=query or None, headers=headers,
                                                     content=body, timeout=timeout)
                response = await self._client.send(request, stream=True)
                try:
                    content = bytearray()
                    async for chunk in response.aiter_bytes():
                        content += chunk
                        if len(content) > limits.max_response_bytes:
                            raise TooLarge()
                finally:
                    await response.aclose()
        except (httpx.TimeoutException, TimeoutError):
            raise TimedOut() from None
        except httpx.ConnectError as exc:
            raise Unreachable(type(exc).__name__, sent=False) from None
        except httpx.TransportError as exc:
            raise Unreachable(type(exc).__name__, sent=True) from None
        return Answer(response.status_code, bytes(content), response.headers.get("retry-after"))

    async def aclose(self) -> None:
        await self._client.aclose()


def _retry_after_seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date: not worth the parse, fall back to backoff


class Upstream:
    def __init__(self, exchange: NetworkExchange | HttpxExchange):
        self.exchange = exchange

    async def aclose(self) -> None:
        await self.exchange.aclose()

    async def send(self, conn: Connection, request: UpstreamRequest, decoder: msgspec.json.Decoder | None = None) -> Any:
        """The provider's decoded answer; `decoder` (gateway/unify.py's `page_decoder`) reads a success."""
        provider, state = conn.provider, conn.state
        if state.in_flight >= provider.limits.max_in_flight:
            raise GatewayError(503, "connection_busy", f"this connection already has {state.in_flight} calls to "
                               f"{provider.name} under way; retry shortly", {"Retry-After": "1"}, provider=provider.name)
        # The breaker judges calls, not attempts: a call's retries are one failure.
        breaker = state.breaker
        wait = breaker.retry_after()
        if wait is not None:
            raise GatewayError(503, "upstream_circuit_open", f"{provider.name} is failing; calls are paused",
                               {"Retry-After": str(max(1, round(wait)))}, provider=provider.name)
        state.in_flight += 1
        started = time.monotonic()
        try:
            raw = await self._attempts(conn, request)
        except GatewayError as exc:
            if exc.code in ("upstream_timeout", "upstream_unreachable"):
                breaker.failed()
            elif exc.code == "upstream_response_too_large":
                breaker.succeeded()  # the provider is up; its answer is just too big for us
            raise
        finally:
            state.in_flight -= 1
            elapsed = time.monotonic() - started
            metrics.upstream(provider.name, elapsed)
            logs.note(upstream_ms=round(elapsed * 1000, 3))
        logs.note(upstream_status=raw.status)
        if raw.status >= 500:
            breaker.failed()
        else:
            breaker.succeeded()
        return _result(conn, raw, decoder)

    async def _attempts(self, conn: Connection, request: UpstreamRequest) -> Answer:
        provider = conn.provider
        policy = provider.retries
        auth = conn.state.auth
        url = conn.base_url + request.path
        credentials = auth.current()
        if credentials is None:
            credentials = await auth.renew(None)
        headers = {**request.headers, **conn.headers, **credentials}
        body = None
        if request.body is not None:
            body = _encode(request.body)
            headers["content-type"] = "application/json"
        deadline = time.monotonic() + policy.budget
        attempt = 0
        replayed = False
        while True:
            attempt += 1
            try:
                raw = await self.exchange(provider, request.method, url, request.query, headers, body)
            except TimedOut:
                if _may_retry(request.method, attempt, policy.attempts, deadline, None, sent=True):
                    metrics.count("gateway_upstream_retries", provider.name, "timeout")
                    await _backoff(policy, attempt, None)
                    continue
                raise GatewayError(504, "upstream_timeout", f"{provider.name} did not answer in time",
                                   maybe_done=True, provider=provider.name) from None
            except Unreachable as exc:
                log.warning("%s: %s %s failed: %s", conn.name, request.method, request.path, exc)
                if _may_retry(request.method, attempt, policy.attempts, deadline, None, sent=exc.sent):
                    metrics.count("gateway_upstream_retries", provider.name, "unreachable")
                    await _backoff(policy, attempt, None)
                    continue
                raise bad_gateway("upstream_unreachable", f"cannot reach {provider.name}: {exc}",
                                  maybe_done=exc.sent, provider=provider.name) from None
            except TooLarge as exc:
                # It answered, so it may have acted: a create must not run again.
                cap = transport.MAX_HEAD_BYTES if exc.part == "head" else provider.limits.max_response_bytes
                raise bad_gateway("upstream_response_too_large", f"{provider.name}'s {exc.part} exceeds {cap} bytes",
                                  maybe_done=True, provider=provider.name) from None
            if raw.status == 401 and auth.refreshable and not replayed:
                # The provider did nothing: new credentials, and the same call once more.
                replayed = True
                credentials = await auth.renew(credentials)
                headers.update(credentials)
                metrics.count("gateway_upstream_retries", provider.name, "auth")
                attempt -= 1
                continue
            if raw.status in (429, 503):
                pause = _retry_after_seconds(raw.retry_after)
                # The provider refused before doing anything: safe for any method.
                if _may_retry("GET", attempt, policy.attempts, deadline, pause, sent=True):
                    metrics.count("gateway_upstream_retries", provider.name, "throttled")
                    await _backoff(policy, attempt, pause)
                    continue
            elif raw.status >= 500 and _may_retry(request.method, attempt, policy.attempts, deadline, None, sent=True):
                metrics.count("gateway_upstream_retries", provider.name, "status_5xx")
                await _backoff(policy, attempt, None)
                continue
            return raw


def _may_retry(method: str, attempt: int, attempts: int, deadline: float, pause: float | None, sent: bool) -> bool:
    if attempt >= attempts:
        return False
    if method != "GET" and sent:
        return False  # a create may have happened: only the caller's Idempotency-Key makes that safe
    return time.monotonic() + (pause or 0.0) < deadline


async def _backoff(policy: RetrySpec, attempt: int, pause: float | None) -> None:
    if pause is None:
        # Full jitter: spreads the retries of many callers apart.
        pause = random.uniform(0, min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1)))
    await asyncio.sleep(pause)


_INVALID = object()


def _decode(body: bytes, decoder: msgspec.json.Decoder = _json) -> Any:
    if not body:
        return None
    try:
        if decoder is not _json and (body.isascii() or _utf8(body)):  # what it skips, it does not check
            try:
                return decoder.decode(body)
            except msgspec.ValidationError:
                pass  # not the shape the mapping reads: decoded whole, whatever it is
        return _json.decode(body)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deeply
        return _INVALID


def _utf8(body: bytes) -> bool:
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


def _result(conn: Connection, raw: Answer, decoder: msgspec.json.Decoder | None = None) -> Any:
    data = _decode(raw.body, decoder if decoder is not None and 200 <= raw.status < 300 else _json)
    if 200 <= raw.status < 300:
        if data is _INVALID:
            # A 2xx may mean the record exists: keep what the provider said.
            raise bad_gateway("upstream_invalid_response", f"{conn.provider.name} answered {raw.status} with a body that is not JSON",
                              maybe_done=True, provider=conn.provider.name, provider_status=raw.status,
                              provider_body=raw.body[:4096].decode("utf-8", "replace"))
        return data
    error = provider_error(conn, raw.status, None if data is _INVALID else data, raw.retry_after)
    error.maybe_done = raw.status >= 500  # a provider that failed midway may have written
    raise error


def provider_error(conn: Connection, status: int, data: Any, retry_after: str | None) -> GatewayError:
    provider = conn.provider
    message = code = None
    if isinstance(data, (dict, list)):
        message = _text(_safe_search(provider.error_message, data, conn))
        if provider.error_code is not None:
            code = _text(_safe_search(provider.error_code, data, conn))
    return from_provider(provider.name, status, message, code, provider.error_status.get(code or ""), retry_after)


def _safe_search(expression, data: Any, conn: Connection) -> Any:
    try:
        return expression.search(data, options=conn.options)
    except Exception:  # an error body of an unexpected shape still makes an error
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def open_upstream(transport: httpx.AsyncBaseTransport | None = None) -> Upstream:
    return Upstream(HttpxExchange(transport) if transport is not None else NetworkExchange())

