"""One unified request as the handlers read it: its path's parts, the few
headers they read, and Panora's query parameters, parsed once from the ASGI scope."""

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from .errors import bad_request
from .logs import UNMATCHED
from .models import OBJECTS

PREFIX = "/accounting/"
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
# Each unified path as logs, metrics and traces name it (a collection's, a record's): never an id.
_TEMPLATES = {name: (f"{PREFIX}{name}", f"{PREFIX}{name}/{{id}}") for name in OBJECTS}


class Call:
    """`path` is percent-decoded, so an id sent with %2F holds '/': everything
    after the object's segment is the id. `nested`: the raw path has segments
    beyond the id, which no unified path has."""

    __slots__ = ("method", "path", "object", "id", "nested", "_headers", "query", "receive")

    def __init__(self, scope: dict, receive: Callable[[], Awaitable[dict]]):
        self.method = scope["method"]
        self.path = scope["path"]
        self.object, _, self.id = self.path[len(PREFIX):].partition("/")
        raw = scope["raw_path"][len(PREFIX):]
        if raw.endswith(b"/"):  # /accounting/contacts/ID/ is /accounting/contacts/ID (an encoded %2F stays)
            raw = raw[:-1]
            self.id = self.id[:-1] if self.id.endswith("/") else self.id
        self.nested = raw.count(b"/") > 1
        # Kept as bytes: the handlers read four headers of the many a client sends.
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name not in headers:  # the first of repeats, as Starlette
                headers[name] = value
        self._headers = headers
        query = scope["query_string"]
        # The last of repeated parameters, as Starlette's query_params.
        self.query = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)) if query else {}
        self.receive = receive

    def template(self) -> str:
        """The path as logs and traces name it; a path no route has is one word, never
        as sent: it may hold anything (a newline, a secret, a new word a request)."""
        found = None if self.nested else _TEMPLATES.get(self.object)
        return found[self.id != ""] if found else UNMATCHED

    def header(self, name: bytes) -> str | None:
        value = self._headers.get(name)
        return None if value is None else value.decode("latin-1")

    def flag(self, name: str) -> bool:
        value = self.query.get(name)
        if value is None:
            return False
        lowered = value.lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0", ""):
            return False
        raise bad_request("invalid_query", f"{name} must be true or false, not {value!r}", parameter=name)

    def limit(self) -> int:
        value = self.query.get("limit")
        if value is None or value == "":
            return DEFAULT_LIMIT
        try:
            number = float(value)
        except ValueError:
            number = 0.0
        if not number.is_integer() or not 1 <= number <= MAX_LIMIT:
            raise bad_request("invalid_query", f"limit must be a whole number from 1 to {MAX_LIMIT}, not {value!r}",
                              parameter="limit")
        return int(number)
