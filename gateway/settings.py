"""Settings, read once from the environment at start."""

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import msgspec

class ConfigError(Exception):
    """The gateway cannot start as configured; the message says what to fix."""


# Used only by the embedded default (no connections file, no GATEWAY_API_KEYS).
DEMO_API_KEY = "gateway-demo-key"
SANDBOX_TOKEN = "sandbox-formation"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


def bundled_mappings() -> Path:
    packaged = Path(__file__).parent / "mappings"  # inside a built wheel
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "mappings"


class Settings(msgspec.Struct, kw_only=True):
    api_keys: list[str]
    connections_file: Path | None
    # The bundled mappings, then the operator's directories: a provider mapped
    # there replaces the bundled mapping of the same name.
    mappings_dirs: list[Path]
    # Signs cursors; set it when several instances serve the same clients,
    # or cursors issued by one are refused by the others (and after a restart).
    cursor_secret: bytes
    cursor_secret_is_random: bool = False
    # The state store (Idempotency-Key answers, OAuth2 tokens): redis://... for
    # several instances, sqlite:///path for one host; unset, gateway/store.py's default file.
    state_url: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    @property
    def embedded(self) -> bool:
        return self.connections_file is None


def from_environ(environ: Mapping[str, str] = os.environ) -> Settings:
    keys = [k.strip() for k in environ.get("GATEWAY_API_KEYS", "").split(",") if k.strip()]
    connections = environ.get("GATEWAY_CONNECTIONS") or None
    mappings = environ.get("GATEWAY_MAPPINGS") or None
    secret = environ.get("GATEWAY_CURSOR_SECRET") or None
    return Settings(
        api_keys=keys,
        connections_file=Path(connections) if connections else None,
        mappings_dirs=[bundled_mappings(), *(Path(d) for d in (mappings or "").split(":") if d)],
        cursor_secret=secret.encode() if secret else secrets.token_bytes(32),
        cursor_secret_is_random=secret is None,
        # GATEWAY_IDEMPOTENCY_URL: its name before the store held more than idempotency.
        state_url=environ.get("GATEWAY_STATE_URL") or environ.get("GATEWAY_IDEMPOTENCY_URL") or None,
        max_body_bytes=_positive_int(environ, "GATEWAY_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
    )


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    value = environ.get(name)
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{name} must be a positive whole number, not {value!r}")
    return int(value)
