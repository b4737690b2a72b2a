"""The unified HTTP surface: Panora's accounting paths, routed.

Every call under /accounting/ walks the request path: route (here) ->
connection (gateway/connections.py) -> compiled operation, auth, upstream
call and unify (gateway/steps.py) -> response. The handlers are
gateway/records.py (retrieve, create) and gateway/listing.py (list).
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect
from starlette.responses import Response

from . import logs, metrics
from .call import Call
from .connections import ApiKeys, Connection
from .errors import GatewayError, did_you_mean, internal_error, shutting_down
from .listing import Listing
from .models import OBJECTS, UnifiedObject
from .records import Records
from .runtime import Runtime

log = logging.getLogger("gateway")

Handler = Callable[[Call, Connection, UnifiedObject], Awaitable[Response]]


class Gateway:
    def __init__(self, api_keys: ApiKeys, runtime: Runtime, records: Records, listing: Listing):
        self.api_keys = api_keys
        self.runtime = runtime  # its snapshot is read once per call: a reload never changes a call under way
        # /accounting/{object}/ is the collection too, as it was when it redirected there.
        self._collection: dict[str, Handler] = {"GET": listing, "POST": records.create}
        self._record: dict[str, Handler] = {"GET": records.retrieve}

    def served(self) -> dict[str, tuple[str, ...]]:
        """The methods answered on a unified collection and on a record: what /openapi.json describes."""
        return {"collection": tuple(self._collection), "record": tuple(self._record)}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        """The ASGI app for every path under /accounting/: its own routing and
        error answers, without a framework's layers, as this is the hot path."""
        call = Call(scope, receive)
        started, conn = time.monotonic(), None
        logs.note(path=call.template())
        try:
            handler, obj = self._route(call)
            conn = self.runtime.current.connections.authorize(self.api_keys, call.header(b"x-api-key"),
                                                              call.header(b"x-connection-token"))
            logs.note(connection=conn.name, provider=conn.provider.name)
            response = await handler(call, conn, obj)
        except GatewayError as exc:
            logs.note(error=exc.code)
            response = exc.response()
        except ClientDisconnect:
            return  # nobody to answer
        except asyncio.CancelledError:
            # A shutdown whose --graceful-timeout ran out: answer, saying a create may have happened.
            log.warning("%s %s cut short by shutdown", call.method, call.path)
            response = shutting_down().response()
        except Exception:
            log.exception("unexpected error on %s %s", call.method, call.path)
            response = internal_error().response()
        await response(scope, receive, send)
        metrics.served(call, conn, response.status_code, started)

    def _route(self, call: Call) -> tuple[Handler, UnifiedObject]:
        if not call.object or call.nested:
            raise GatewayError(404, "no_such_path", f"{call.method} {call.path}: Not Found")
        obj = self._object(call)  # an unknown object is a 404 whatever the method
        method = "GET" if call.method == "HEAD" else call.method
        handlers = self._record if call.id else self._collection
        handler = handlers.get(method)
        if handler is None:
            raise GatewayError(405, "method_not_allowed", f"{call.method} {call.path}: Method Not Allowed",
                               {"Allow": ", ".join(handlers)})
        return handler, obj

    @staticmethod
    def _object(call: Call) -> UnifiedObject:
        found = OBJECTS.get(call.object)
        if found is None:
            raise GatewayError(404, "unknown_object",
                               f"no unified accounting object {call.object!r}{did_you_mean(call.object, OBJECTS)}")
        return found
