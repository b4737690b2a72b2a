"""The opaque unified cursor: where the next page starts, signed so that it
cannot be forged, edited or replayed on another connection or object.

A cursor holds positions only (a source index, an offset, a page number or a
provider token), never a URL, so no cursor can steer the gateway elsewhere.
"""

import base64
import hashlib
import hmac

import msgspec


class Position(msgspec.Struct, array_like=True, frozen=True):
    source: int = 0  # which of the list's upstream sources
    offset: int = 0  # records of that source already served: page paging derives its page number from it
    token: str | None = None  # the provider's page token or link query (token, link paging)
    skip: int = 0  # records of the provider's page (that token's, or `page`) already served
    # Page paging, once the provider answered a page longer than asked: its own
    # page (0-based) of the next record, which `offset` no longer tells.
    page: int | None = None


class CursorError(ValueError):
    pass


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Position)
_MAC_BYTES = 16


class Cursors:
    def __init__(self, secret: bytes):
        self._secret = secret

    def _mac(self, payload: bytes, scope: bytes) -> bytes:
        return hmac.new(self._secret, scope + b"\0" + payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, position: Position, scope: bytes) -> str:
        payload = _encoder.encode(position)
        return base64.urlsafe_b64encode(self._mac(payload, scope) + payload).decode().rstrip("=")

    def decode(self, cursor: str, scope: bytes) -> Position:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except ValueError:
            raise CursorError("the cursor is not one this gateway issued") from None
        mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if len(mac) < _MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload, scope)):
            raise CursorError("the cursor is not one this gateway issued for this connection and object")
        try:
            return _decoder.decode(payload)
        except msgspec.DecodeError:
            raise CursorError("the cursor is not one this gateway issued") from None
