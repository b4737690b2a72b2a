"""Who is calling, and through which connection.

The connections file maps each connection token to a provider, its
credentials, an optional base URL and a context the mapping reads. Any string
in it may be `${ENV_VAR}`, so the file need hold no secret. Keys and tokens
are looked up by their SHA-256 digest and compared in constant time.

A `Connection` is its configuration, compiled, and fixed; what changes while
the gateway runs (its auth's tokens, breaker and calls under way) is its
`ConnectionState`, an object of its own, so that a reload can hand it to the
connection's next configuration.
"""

import hashlib
import hmac
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import yaml
from jmespath import Options

from . import auth
from .breaker import Breaker
from .errors import did_you_mean, unauthorized
from .functions import Functions
from .mapping import Provider, SafeLoader
from .settings import ConfigError


class ConnectionEntry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    token: str
    provider: str
    name: str | None = None  # for logs: tokens never appear there
    base_url: str | None = None  # e.g. a sandbox; the mapping's base_url otherwise
    token_url: str | None = None  # oauth2: the mapping's auth.token_url otherwise
    credentials: dict[str, str] = {}
    context: dict[str, Any] = {}


class ConnectionState:
    """What a connection's calls change: its credentials' live state, its
    breaker, and how many of its calls are under way (against limits.max_in_flight)."""

    __slots__ = ("auth", "breaker", "in_flight")

    def __init__(self, auth: auth.StaticAuth | auth.OAuth2, breaker: Breaker):
        self.auth = auth
        self.breaker = breaker
        self.in_flight = 0


class Connection:
    __slots__ = ("entry", "name", "provider", "base_url", "headers", "context", "options", "request_options", "scope",
                 "state")

    def __init__(self, entry: ConnectionEntry, provider: Provider, where: str, keeper: auth.Keeper,
                 previous: "Connection | None" = None):
        """`previous`: this connection as the configuration before a reload had it."""
        self.entry = entry
        self.name = entry.name or where
        self.provider = provider
        self.base_url = (entry.base_url or provider.base_url).rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # Checked here, at start: the upstream client would refuse it on every call.
            raise ConfigError(f"{where}: base_url must be an http:// or https:// URL with a host")
        self.context = _fit_context(provider, entry.context, where)
        self.options = Options(custom_functions=Functions(provider.values, self.context))
        # What renders a request refuses values its value maps do not hold; records are read leniently.
        self.request_options = Options(custom_functions=Functions(provider.values, self.context, strict=True,
                                                                  passthrough=provider.passthrough))
        self.headers: dict[str, str] = {}  # the mapping's own, from the context; the auth's come per call
        for name, expression in provider.headers.items():
            value = expression.search({"context": self.context}, options=self.options)
            if value is None:
                raise ConfigError(f"{where}: {provider.source} sends header {name} from the context, "
                                  f"which gives nothing; set it in this connection's context")
            self.headers[name] = str(value)
        # Cursors are signed for this scope, so they do not work on another connection.
        self.scope = hashlib.sha256(entry.token.encode()).digest()
        credentials = auth.for_connection(provider, entry.credentials, entry.token_url, self.scope.hex(), keeper,
                                          self.name, where)
        if previous is not None and previous.entry == entry and previous.provider.auth == provider.auth:
            # Unchanged: its tokens, breaker and calls under way go on.
            self.state = previous.state
            self.state.breaker.spec = provider.breaker
        else:
            self.state = ConnectionState(credentials, Breaker(provider.breaker, self.name))


_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "list": list, "object": dict}


def _fit_context(provider: Provider, context: dict[str, Any], where: str) -> dict[str, Any]:
    """The connection's context checked against what its mapping declares it
    reads, defaults filled in. Values from ${ENV} references arrive as strings:
    a number or a boolean written so is read as one."""
    declared = provider.context
    if not declared:
        return context
    for name in context:
        if name not in declared:
            raise ConfigError(f"{where}: context.{name}: {provider.source.name} reads no such setting"
                              f"{did_you_mean(name, declared, 'it reads')}")
    fitted = {}
    for name, key in declared.items():
        if name not in context or context[name] is None:
            if key.required:
                raise ConfigError(f"{where}: context.{name} is required by {provider.source.name}: {key.description}")
            if key.default is not None:
                fitted[name] = key.default
            continue
        fitted[name] = _typed(context[name], key.type, f"{where}: context.{name}")
    return fitted


def _typed(value: Any, kind: str, where: str) -> Any:
    if isinstance(value, str) and kind in ("integer", "number", "boolean"):
        text = value.strip()
        if kind == "boolean":
            if text.lower() not in ("true", "false"):  # not a number either: "1" is no boolean to a template
                raise ConfigError(f"{where} must be a boolean (true or false), not {value!r}")
            return text.lower() == "true"
        try:
            number = float(text) if kind == "number" else int(text)
        except ValueError:
            raise ConfigError(f"{where} must be {'a whole number' if kind == 'integer' else 'a ' + kind}, not {value!r}") from None
        return number
    if kind == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # an id YAML read as a number: 9341452
    if not isinstance(value, _TYPES[kind]) or (kind in ("integer", "number") and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {'an' if kind[0] in 'aeiou' else 'a'} {kind}, not {type(value).__name__} {value!r}")
    return value


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Connections:
    def __init__(self, connections: dict[str, Connection]):
        self._by_digest = {_digest(token): conn for token, conn in connections.items()}

    def __len__(self) -> int:
        return len(self._by_digest)

    def __iter__(self) -> Iterator[Connection]:
        return iter(self._by_digest.values())

    def resolve(self, token: str) -> Connection | None:
        # A dict lookup on the digest leaks no timing about the token itself.
        return self._by_digest.get(_digest(token))

    def authorize(self, api_keys: "ApiKeys", key: str | None, token: str | None) -> Connection:
        """The connection a call with these x-api-key and x-connection-token goes through."""
        if not key:
            raise unauthorized("missing_api_key", "the x-api-key header is required")
        if not api_keys.check(key):
            raise unauthorized("invalid_api_key", "the x-api-key is not valid")
        if not token:
            raise unauthorized("missing_connection_token", "the x-connection-token header is required")
        conn = self.resolve(token)
        if conn is None:
            raise unauthorized("invalid_connection_token", "no connection has this x-connection-token")
        return conn


class ApiKeys:
    def __init__(self, keys: list[str]):
        self._digests = [_digest(k) for k in keys]

    def check(self, presented: str) -> bool:
        digest = _digest(presented)
        ok = False
        for known in self._digests:  # no early exit: every key costs the same
            ok |= hmac.compare_digest(digest, known)
        return ok


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: Any, environ: Mapping[str, str], where: str) -> Any:
    """Replace `${NAME}` in every string; an unset variable is an error naming it."""
    if isinstance(value, str):
        def lookup(match: re.Match) -> str:
            name = match.group(1)
            if name not in environ:
                raise ConfigError(f"{where}: environment variable {name} is not set")
            return environ[name]
        return _ENV_REF.sub(lookup, value)
    if isinstance(value, dict):
        return {k: expand_env(v, environ, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, environ, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # PyYAML's own message quotes the offending line, which may hold a
    # credential: say where and what is wrong, never the text itself.
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return type(exc).__name__
    what = "; ".join(p for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p)
    return f"{what or 'invalid YAML'} (line {mark.line + 1}, column {mark.column + 1})"


def load(path: Path, providers: dict[str, Provider], environ: Mapping[str, str], keeper: auth.Keeper,
         previous: Connections | None = None) -> Connections:
    """The connections file, compiled; `previous`: the connections it replaces on a reload."""
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=SafeLoader)
    except OSError as exc:
        raise ConfigError(f"connections file {path}: cannot read YAML: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"connections file {path}: cannot read YAML: {_yaml_problem(exc)}") from None
    if isinstance(raw, dict) and "connections" in raw:
        raw = raw["connections"]
    if not isinstance(raw, list):
        raise ConfigError(f"connections file {path}: expected a list of connections")
    connections: dict[str, Connection] = {}
    for i, item in enumerate(raw):
        where = f"{path}: connections[{i}]"
        try:
            entry = msgspec.convert(expand_env(item, environ, where), ConnectionEntry)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        provider = providers.get(entry.provider)
        if provider is None:
            raise ConfigError(f"{where}: unknown provider {entry.provider!r}; mapped providers: {', '.join(sorted(providers)) or 'none'}")
        if entry.token in connections:
            raise ConfigError(f"{where}: the same token is given to an earlier connection")
        connections[entry.token] = Connection(entry, provider, where, keeper,
                                              previous.resolve(entry.token) if previous else None)
    return Connections(connections)

