"""Logs a platform team's tooling reads: one JSON line per request, and every
other event (start, reload, circuit open and closed, token refusals, shutdown)
a JSON line too; `gateway serve --log-format text` for people.

A request's fields are gathered while it runs, in a context variable of its
own task: the route, connection and provider (routes.py), the upstream status
and time (upstream.py), the fields a create ignored (records.py), its error
code. The server adds the request id, status and duration and writes the line.
No credential, API key, connection token, access or refresh token, nor any
request or response body, is ever one of them.
"""

import asyncio
import contextvars
import logging
import select
import sys
import time
from typing import Any

import msgspec

# A request's path no route has is logged as this, never as sent: it may hold anything.
UNMATCHED = "(unmatched)"

_fields: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("request_log", default=None)


def begin(fields: dict[str, Any]) -> None:
    """The fields of the request the current task answers."""
    _fields.set(fields)


def note(**fields: Any) -> None:
    """Add to the current request's line (nothing outside a request)."""
    current = _fields.get()
    if current is not None:
        current.update(fields)


def event(name: str, **fields: Any) -> dict[str, Any]:
    """A lifecycle line's `extra`: its `event` names it for a collector to filter on."""
    return {"fields": {"event": name, **fields}}


def _utc(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": _utc(record.created), "level": record.levelname.lower(), "logger": record.name,
                "message": record.getMessage(), **getattr(record, "fields", {})}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line).decode()


_encode = msgspec.json.Encoder(enc_hook=str).encode


class AccessLines:
    """The access log's lines (logger `gateway.access`), written where the one
    handler `configure` set writes JSON to standard error, as it would write
    them but without the logging module: a LogRecord, a look up the stack for
    its caller and a flushed write for each line cost a quarter of the
    gateway's requests a second at concurrency 32 (measured with wrk). A
    turn's lines are written together at its end, like the outbox's answers,
    in writes of at most PIPE_BUF bytes ending at a line's end: the workers of
    `serve --workers` share one pipe, and no write of one splits another's
    line. Anywhere else (text for people, a level above info, tests' own
    handlers), and once a write has failed, a line goes through logging as any
    other."""

    __slots__ = ("direct", "stream", "held", "second", "stamp")

    def __init__(self) -> None:
        handlers = logging.getLogger().handlers
        stream = getattr(handlers[0], "stream", None) if len(handlers) == 1 else None
        self.direct = (_access.isEnabledFor(logging.INFO) and not _access.handlers and stream is sys.stderr
                       and isinstance(handlers[0].formatter, JsonLines) and hasattr(stream, "buffer"))
        self.stream = stream
        self.held: list[bytes] = []
        self.second, self.stamp = -1, ""

    def write(self, fields: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        if not self.direct:
            _access.info("request", extra={"fields": fields})
            return
        now = time.time()
        if int(now) != self.second:  # the date and time to the second, once a second
            self.second = int(now)
            self.stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.second))
        if not self.held:
            loop.call_soon(self.flush)
        self.held.append(_encode({"time": f"{self.stamp}.{int(now % 1 * 1000):03d}Z", "level": "info",
                                  "logger": "gateway.access", "message": "request", **fields}))

    def flush(self) -> None:
        if not self.held:
            return
        lines, self.held = self.held, []
        try:
            self.stream.flush()  # what logging wrote first goes first
            out, size = self.stream.buffer, 0
            for line in lines:
                if size and size + len(line) >= select.PIPE_BUF:
                    out.flush()
                    size = 0
                out.write(line + b"\n")
                size += len(line) + 1
            out.flush()
        except (OSError, ValueError):  # a closed or broken stream: no line reaches it, nor must it stop the server
            self.direct = False  # the lines after go through logging, which reports its failures itself


_access = logging.getLogger("gateway.access")


class Text(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        return text + "".join(f" {k}={v}" for k, v in fields.items() if v is not None) if fields else text


def configure(level: str, form: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if form == "json" else Text())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # httpx logs every URL it calls, query string included: no place for credentials.
    logging.getLogger("httpx").setLevel(logging.WARNING)
