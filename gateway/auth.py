"""Credentials on each upstream call: the step between the compiled operation
and the transport.

A connection's auth gives the headers that authorize its calls. Static
credentials (an API key, a bearer token, a user and password) are rendered
once, when the connection is loaded. OAuth2 access tokens die within hours
and their refresh tokens are single-use, rotating on every refresh, so
`OAuth2` keeps them alive:

- it refreshes ahead of expiry (a tenth of the token's lifetime, at most
  60 s), and once after a provider's 401, for the call to be sent once more
  (a 401 means the provider did nothing, so that is safe for a create too);
- one refresh at a time per connection: calls in this process wait on a
  lock, other instances on a lock in the state store with a bounded lease;
- the new tokens are written to the state store before they are used, so a
  spent refresh token is never sent again, by this instance or another,
  before or after a restart;
- a refused refresh (`invalid_grant`: the customer must authorize again) is
  logged once and answered at once afterwards, without calling the token
  endpoint again, until the connection's credentials change.
"""

import asyncio
import base64
import hashlib
import logging
import os
import time
from datetime import datetime, timezone
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import msgspec

from . import logs, metrics
from .errors import GatewayError, bad_gateway
from .mapping import Provider
from .settings import ConfigError
from .store import Store, StoreUnavailable
from .transport import TimedOut, TooLarge, Unreachable

log = logging.getLogger("gateway.auth")

LEASE = 15.0  # seconds one instance may hold a connection's refresh lock
_TRANSIENT_PAUSE = 5.0  # after a token endpoint that failed, before asking it again
# RFC 6749 5.2: the grant or the client is refused; only the customer or the operator can fix it.
_REFUSALS = {"invalid_grant", "invalid_client", "unauthorized_client", "unsupported_grant_type", "invalid_scope"}

# (provider, method, url, query, headers, body) -> Answer: the upstream exchange (gateway/upstream.py)
Exchange = Callable[..., Awaitable[Any]]


class StaticAuth:
    """Credentials that do not change while the gateway runs."""

    __slots__ = ("headers",)
    refreshable = False

    def __init__(self, headers: dict[str, str]):
        self.headers = headers

    def current(self) -> dict[str, str]:
        return self.headers


class Tokens(msgspec.Struct, array_like=True):
    access_token: str
    expires_at: float  # epoch seconds
    lifetime: float  # seconds it was issued for
    refresh_token: str | None = None
    # Which credentials of the connections file these descend from: the file
    # changed (the customer authorized again), and the file's win over these.
    seed: str = ""

    def fresh(self, now: float) -> bool:
        return now < self.expires_at - min(60.0, self.lifetime / 10)


_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.Decoder(Tokens).decode
_json = msgspec.json.Decoder()


class Keeper:
    """Where tokens are kept (the state store) and fetched (the upstream exchange)."""

    def __init__(self, store: Store, exchange: Exchange):
        self.store = store
        self.exchange = exchange


class OAuth2:
    refreshable = True

    def __init__(self, provider: Provider, credentials: dict[str, str], token_url: str, key: str,
                 keeper: Keeper, name: str):
        spec = provider.auth
        self.provider = provider
        self.grant = spec.grant
        self.client_auth = spec.client_auth
        self.scope = spec.scope
        self.token_url = token_url
        self.client_id = credentials["client_id"]
        self.client_secret = credentials["client_secret"]
        self.key = "oauth2:" + key
        self.lock_key = "oauth2-lock:" + key
        self.keeper = keeper
        self.name = name
        first = credentials.get("refresh_token") if self.grant == "refresh_token" else self.client_secret
        self.seed = hashlib.sha256(first.encode()).hexdigest()
        self.tokens = _from_file(credentials, self.seed)
        self.headers: dict[str, str] = self._headers()
        self.loaded = False  # whether the state store was consulted: it may hold newer tokens
        self.refused: GatewayError | None = None
        self.pause_until = 0.0
        self._lock: asyncio.Lock | None = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.tokens.access_token} if self.tokens else {}

    def current(self) -> dict[str, str] | None:
        """The headers to send now; None when tokens must be obtained first."""
        if self.loaded and self.tokens is not None and self.tokens.fresh(time.time()):
            return self.headers
        return None

    async def renew(self, refused: dict[str, str] | None) -> dict[str, str]:
        """Headers that are fresh; `refused`: those a provider answered 401,
        which must not be sent again."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # the calls of this process wait for one refresh
            if not self.loaded:
                self._adopt(await self._persisted())
                self.loaded = True
            if self.tokens is not None and self.tokens.fresh(time.time()) and self.headers != refused:
                return self.headers  # refreshed while this call waited
            if self.refused is not None:
                raise self.refused
            if time.monotonic() < self.pause_until:
                raise _unavailable(self.provider, "its token endpoint failed a moment ago")
            await self._refresh(refused)
            return self.headers

    async def _persisted(self) -> Tokens | None:
        try:
            raw = await self.keeper.store.get(self.key)
        except StoreUnavailable as exc:
            raise _store_down(exc) from None
        tokens = _decode(raw) if raw else None
        return tokens if tokens is not None and tokens.seed == self.seed else None

    def _adopt(self, tokens: Tokens | None) -> None:
        if tokens is not None:
            self.tokens = tokens
            self.headers = self._headers()

    async def _refresh(self, refused: dict[str, str] | None) -> None:
        store = self.keeper.store
        owner = os.urandom(16)
        try:
            await self._acquire(owner)
            try:
                # Another instance may have refreshed while this one waited for the lock.
                persisted = await self._persisted()
                if persisted is not None and persisted.fresh(time.time()) and \
                        {"Authorization": "Bearer " + persisted.access_token} != refused:
                    self._adopt(persisted)
                    return
                self._adopt(persisted)
                tokens = await self._grant()
                # Kept before it is used: the refresh token it replaces is spent.
                await store.set(self.key, _encode(tokens))
                self._adopt(tokens)
            finally:
                await store.delete(self.lock_key, only_if=owner)
        except StoreUnavailable as exc:
            raise _store_down(exc) from None

    async def _acquire(self, owner: bytes) -> None:
        deadline = time.monotonic() + LEASE + 5
        delay = 0.01
        while await self.keeper.store.add(self.lock_key, owner, LEASE) is not None:
            if time.monotonic() > deadline:
                raise _unavailable(self.provider, "another instance holds its token refresh")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def _grant(self) -> Tokens:
        form = {"grant_type": self.grant}
        if self.grant == "refresh_token":
            if not (self.tokens and self.tokens.refresh_token):
                raise self._refuse("the connection has no refresh token")
            form["refresh_token"] = self.tokens.refresh_token
        if self.scope:
            form["scope"] = self.scope
        headers = {"content-type": "application/x-www-form-urlencoded", "accept": "application/json"}
        if self.client_auth == "basic":
            # RFC 6749 2.3.1: each part form-encoded before the Basic encoding.
            pair = f"{quote(self.client_id, safe='')}:{quote(self.client_secret, safe='')}"
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form.update(client_id=self.client_id, client_secret=self.client_secret)
        started = time.time()
        try:
            answer = await self.keeper.exchange(self.provider, "POST", self.token_url, [], headers, urlencode(form).encode())
        except (TimedOut, Unreachable, TooLarge) as exc:
            raise self._transient(f"its token endpoint did not answer ({type(exc).__name__})") from None
        data = _json_or_none(answer.body)
        error = data.get("error") if isinstance(data, dict) else None
        if answer.status >= 400 and error in _REFUSALS:
            raise self._refuse(f"{error}: {data.get('error_description') or 'the token endpoint refused the grant'}")
        token = data.get("access_token") if isinstance(data, dict) else None
        if answer.status != 200 or not isinstance(token, str) or not token:
            raise self._transient(f"its token endpoint answered {answer.status} without an access token")
        lifetime = _seconds(data.get("expires_in"))
        rotated = data.get("refresh_token")
        # RFC 6749 6: without a new refresh token, the old one stays good.
        refresh = rotated if isinstance(rotated, str) and rotated else (self.tokens.refresh_token if self.tokens else None)
        log.info("%s: OAuth2 tokens refreshed (%s grant), valid %d s", self.name, self.grant, lifetime,
                 extra=logs.event("token_refreshed", connection=self.name, provider=self.provider.name))
        metrics.count("gateway_token_refreshes", self.name, self.provider.name, "ok")
        return Tokens(token, started + lifetime, lifetime, refresh, self.seed)

    def _refuse(self, why: str) -> GatewayError:
        log.error("%s: %s refused the connection's OAuth2 grant (%s); it must be authorized again, "
                  "then its credentials updated in the connections file", self.name, self.provider.name, why,
                  extra=logs.event("token_refresh_refused", connection=self.name, provider=self.provider.name))
        metrics.count("gateway_token_refreshes", self.name, self.provider.name, "refused")
        self.refused = GatewayError(
            502, "reauthorization_required",
            f"{self.provider.name} refused this connection's authorization; the customer must authorize it again",
            provider=self.provider.name)
        return self.refused

    def _transient(self, why: str) -> GatewayError:
        log.warning("%s: OAuth2 refresh failed: %s", self.name, why,
                    extra=logs.event("token_refresh_failed", connection=self.name, provider=self.provider.name))
        metrics.count("gateway_token_refreshes", self.name, self.provider.name, "failed")
        self.pause_until = time.monotonic() + _TRANSIENT_PAUSE
        return _unavailable(self.provider, why)


def _store_down(exc: StoreUnavailable) -> GatewayError:
    return GatewayError(503, "state_unavailable", f"the state store does not answer: {exc}", {"Retry-After": "1"})


def _unavailable(provider: Provider, why: str) -> GatewayError:
    return bad_gateway("token_refresh_failed", f"cannot refresh the access token for {provider.name}: {why}",
                       provider=provider.name)


def _seconds(expires_in: Any) -> float:
    """A token's lifetime: RFC 6749 says a number of seconds, some endpoints send
    it as text; absent or unreadable, an hour (what the providers we map give)."""
    try:
        seconds = float(expires_in)
    except (TypeError, ValueError):
        return 3600.0
    return seconds if seconds > 0 else 3600.0


def _json_or_none(body: bytes) -> Any:
    try:
        return _json.decode(body) if body else None
    except msgspec.DecodeError:
        return None


def _from_file(credentials: dict[str, str], seed: str) -> Tokens | None:
    """The access token the connections file gives, with its `expires_at`, if any."""
    token, expires = credentials.get("access_token"), credentials.get("expires_at")
    if not token or not expires:
        return Tokens("", 0.0, 1.0, credentials.get("refresh_token"), seed) if credentials.get("refresh_token") else None
    at = _epoch(expires)
    return Tokens(token, at, max(1.0, at - time.time()), credentials.get("refresh_token"), seed)


def _epoch(value: str) -> float:
    """Epoch seconds, or an ISO 8601 date and time (UTC if it names no zone)."""
    try:
        return float(value)
    except ValueError:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def _credential(credentials: dict[str, str], name: str, where: str) -> str:
    if not credentials.get(name):
        raise ConfigError(f"{where}: credentials.{name} is required by its provider's auth")
    return credentials[name]


def for_connection(provider: Provider, credentials: dict[str, str], token_url: str | None, key: str,
                   keeper: Keeper, name: str, where: str) -> "StaticAuth | OAuth2":
    """The auth the provider's mapping asks for, from one connection's credentials."""
    auth = provider.auth
    if auth.type == "api_key":
        return StaticAuth({auth.header: _credential(credentials, auth.credential, where)})
    if auth.type == "bearer":
        return StaticAuth({"Authorization": "Bearer " + _credential(credentials, auth.credential, where)})
    if auth.type == "basic":
        pair = f"{_credential(credentials, 'username', where)}:{_credential(credentials, 'password', where)}"
        return StaticAuth({"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()})
    if auth.type == "oauth2":
        for required in ("client_id", "client_secret") + (("refresh_token",) if auth.grant == "refresh_token" else ()):
            _credential(credentials, required, where)
        url = token_url or auth.token_url
        parts = urlsplit(url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{where}: token_url must be an http:// or https:// URL with a host "
                              f"(the mapping's auth.token_url or the connection's token_url)")
        if credentials.get("expires_at"):
            try:
                _epoch(credentials["expires_at"])
            except ValueError:
                raise ConfigError(f"{where}: credentials.expires_at must be epoch seconds or an ISO 8601 date and time") from None
        return OAuth2(provider, credentials, url, key, keeper, name)
    return StaticAuth({})
