"""Every error the gateway answers, as one JSON shape.

`statusCode`, `error` and `message` are the fields Panora (NestJS) clients
already read; `code` is stable for programs, and `provider`, `provider_status`,
`provider_code` and `provider_message` keep what the provider said.
"""

import difflib
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

import msgspec
from starlette.responses import Response


class GatewayError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 maybe_done: bool = False, **extra: Any):
        super().__init__(message)
        # The provider may have acted on the request (a timeout after sending,
        # a 5xx): an idempotent create keeps this answer rather than run again.
        self.maybe_done = maybe_done
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = {k: v for k, v in extra.items() if v is not None}

    def response(self) -> Response:
        body = {
            "statusCode": self.status,
            "error": HTTPStatus(self.status).phrase,
            "code": self.code,
            "message": self.message,
            **self.extra,
        }
        return Response(msgspec.json.encode(body), self.status, self.headers, media_type="application/json")


def bad_request(code: str, message: str, **extra: Any) -> GatewayError:
    return GatewayError(400, code, message, **extra)


def unprocessable(code: str, message: str, **extra: Any) -> GatewayError:
    return GatewayError(422, code, message, **extra)


def unauthorized(code: str, message: str) -> GatewayError:
    return GatewayError(401, code, message)


def not_implemented(provider: str, operation: str) -> GatewayError:
    return GatewayError(501, "operation_not_mapped",
                        f"provider {provider!r} does not support {operation}: its mapping file does not map it",
                        provider=provider, operation=operation)


def internal_error() -> GatewayError:
    # The details are in the log, never in the answer.
    return GatewayError(500, "internal_error", "the gateway failed unexpectedly; the error is logged")


def shutting_down() -> GatewayError:
    # The call was cancelled midway: a create may have reached the provider.
    return GatewayError(503, "shutting_down", "the gateway shut down before this call finished; a create may have happened",
                        {"Retry-After": "1", "Connection": "close"}, maybe_done=True)


def bad_gateway(code: str, message: str, maybe_done: bool = False, **extra: Any) -> GatewayError:
    return GatewayError(502, code, message, maybe_done=maybe_done, **extra)


# The provider's status -> ours. A provider's own client errors (bad input,
# missing record) are the caller's to fix and keep their meaning; its auth and
# server failures are the gateway's upstream failing, hence 502.
_STATUS = {400: 400, 404: 404, 409: 409, 410: 404, 422: 422, 429: 429}


def from_provider(provider: str, status: int, message: str | None, code: str | None,
                  mapped_status: int | None, retry_after: str | None) -> GatewayError:
    extra = {"provider": provider, "provider_status": status, "provider_code": code, "provider_message": message}
    said = f": {message}" if message else ""
    if mapped_status is None:
        mapped_status = _STATUS.get(status)
    if mapped_status is None and 400 <= status < 500 and status not in (401, 403, 407):
        mapped_status = 400
    if mapped_status == 429:
        # Passed on only when it can be: an odd provider header must not fail our response.
        usable = retry_after and retry_after.isascii() and retry_after.isprintable()
        headers = {"Retry-After": retry_after} if usable else None
        return GatewayError(429, "upstream_rate_limited", f"{provider} is rate limiting this connection{said}", headers, **extra)
    if mapped_status == 404:
        return GatewayError(404, "not_found", f"{provider} has no such record{said}", **extra)
    if mapped_status is not None and 400 <= mapped_status < 500:
        return GatewayError(mapped_status, "upstream_rejected", f"{provider} rejected the request{said}", **extra)
    if status in (401, 403, 407):
        return bad_gateway("upstream_auth_failed", f"{provider} refused this connection's credentials{said}", **extra)
    return bad_gateway("upstream_error", f"{provider} failed with HTTP {status}{said}", **extra)


def did_you_mean(name: str, known: Iterable[str], listing: str = "known") -> str:
    """A message's hint at the name meant: the nearest known one, else all of them (none: nothing)."""
    known = list(known)
    if not known:
        return ""
    near = difflib.get_close_matches(name, known, 1)
    return f"; did you mean {near[0]!r}?" if near else f"; {listing}: {', '.join(sorted(known))}"
