"""The upstream call: send an `UpstreamRequest` to a connection's provider.

The one place that does network I/O to providers. Transport failures and
provider errors leave here as `GatewayError`s; success as decoded JSON.
"""

import logging
from typing import Any

import httpx
import msgspec

from .connections import Connection
from .errors import GatewayError, bad_gateway, from_provider
from .operation import UpstreamRequest

log = logging.getLogger("gateway.upstream")

_json = msgspec.json.Decoder()
_encode = msgspec.json.encode


class Upstream:
    def __init__(self, mounts: dict[str, httpx.AsyncBaseTransport] | None = None):
        # Redirects are not followed: a provider's Location must not take the
        # gateway, and the connection's credentials, to another host.
        self.client = httpx.AsyncClient(
            mounts=mounts,
            timeout=httpx.Timeout(30.0, connect=5.0),
            follow_redirects=False,
            headers={"accept": "application/json", "user-agent": "panora-gateway"},
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def send(self, conn: Connection, request: UpstreamRequest) -> Any:
        provider = conn.provider.name
        url = conn.base_url + request.path
        headers = {**request.headers, **conn.headers}
        content = None
        if request.body is not None:
            content = _encode(request.body)
            headers["content-type"] = "application/json"
        try:
            response = await self.client.request(request.method, url, params=request.query or None,
                                                 headers=headers, content=content)
        except httpx.TimeoutException:
            raise GatewayError(504, "upstream_timeout", f"{provider} did not answer in time", provider=provider) from None
        except httpx.TransportError as exc:
            log.warning("%s: %s %s failed: %s", conn.name, request.method, request.path, type(exc).__name__)
            raise bad_gateway("upstream_unreachable", f"cannot reach {provider}: {type(exc).__name__}",
                              provider=provider) from None
        data = _decode(response)
        if 200 <= response.status_code < 300:
            if data is _INVALID:
                raise bad_gateway("upstream_invalid_response", f"{provider} answered {response.status_code} with a body that is not JSON",
                                  provider=provider, provider_status=response.status_code)
            return data
        raise provider_error(conn, response.status_code, data, response.headers.get("retry-after"))


_INVALID = object()


def _decode(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return _json.decode(response.content)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deeply
        return _INVALID


def provider_error(conn: Connection, status: int, data: Any, retry_after: str | None) -> GatewayError:
    provider = conn.provider
    message = code = None
    if isinstance(data, (dict, list)):
        message = _text(provider.error_message.search(data, options=conn.options))
        if provider.error_code is not None:
            code = _text(provider.error_code.search(data, options=conn.options))
    return from_provider(provider.name, status, message, code, provider.error_status.get(code or ""), retry_after)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()
