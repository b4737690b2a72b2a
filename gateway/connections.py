"""Who is calling, and through which connection.

The connections file maps each connection token to a provider, its
credentials, an optional base URL and a context the mapping reads. Any string
in it may be `${ENV_VAR}`, so the file need hold no secret. Keys and tokens
are looked up by their SHA-256 digest and compared in constant time.
"""

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import yaml
from jmespath import Options

from .functions import Functions
from .mapping import Provider, SafeLoader
from .settings import ConfigError


class ConnectionEntry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    token: str
    provider: str
    name: str | None = None  # for logs: tokens never appear there
    base_url: str | None = None  # e.g. a sandbox; the mapping's base_url otherwise
    credentials: dict[str, str] = {}
    context: dict[str, Any] = {}


class Connection:
    __slots__ = ("name", "provider", "base_url", "headers", "context", "options", "scope", "in_flight")

    def __init__(self, entry: ConnectionEntry, provider: Provider, where: str):
        self.name = entry.name or where
        self.provider = provider
        self.base_url = (entry.base_url or provider.base_url).rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # Checked here, at start: the upstream client would refuse it on every call.
            raise ConfigError(f"{where}: base_url must be an http:// or https:// URL with a host")
        self.context = entry.context
        self.options = Options(custom_functions=Functions(provider.values, entry.context))
        self.headers = _auth_headers(provider, entry.credentials, where)
        for name, expression in provider.headers.items():
            value = expression.search({"context": entry.context}, options=self.options)
            if value is None:
                raise ConfigError(f"{where}: {provider.source} sends header {name} from the context, "
                                  f"which gives nothing; set it in this connection's context")
            self.headers[name] = str(value)
        # Cursors are signed for this scope, so they do not work on another connection.
        self.scope = hashlib.sha256(entry.token.encode()).digest()
        self.in_flight = 0  # calls under way upstream, against limits.max_in_flight


def _credential(credentials: dict[str, str], name: str, where: str) -> str:
    if not credentials.get(name):
        raise ConfigError(f"{where}: credentials.{name} is required by its provider's auth")
    return credentials[name]


def _auth_headers(provider: Provider, credentials: dict[str, str], where: str) -> dict[str, str]:
    auth = provider.auth
    if auth.type == "api_key":
        return {auth.header: _credential(credentials, auth.credential, where)}
    if auth.type == "bearer":
        return {"Authorization": "Bearer " + _credential(credentials, auth.credential, where)}
    if auth.type == "basic":
        pair = f"{_credential(credentials, 'username', where)}:{_credential(credentials, 'password', where)}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    return {}


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Connections:
    def __init__(self, connections: dict[str, Connection]):
        self._by_digest = {_digest(token): conn for token, conn in connections.items()}

    def __len__(self) -> int:
        return len(self._by_digest)

    def resolve(self, token: str) -> Connection | None:
        # A dict lookup on the digest leaks no timing about the token itself.
        return self._by_digest.get(_digest(token))


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


def load(path: Path, providers: dict[str, Provider], environ: Mapping[str, str]) -> Connections:
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
        connections[entry.token] = Connection(entry, provider, where)
    return Connections(connections)

