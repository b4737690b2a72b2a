"""A fake OAuth2 token endpoint (RFC 6749) as strict as the providers we map:
access tokens that live a few seconds, refresh tokens that are single-use and
rotate on every refresh (freee refuses a reused one outright; so does this),
client authentication by Basic header or by form body.

A real HTTP/1.1 server on loopback in a thread of the test process. It keeps
score: every grant asked for, every refresh token spent twice (the failure
the gateway must never cause), and `valid(headers)`, the bearer check a fake
provider calls.
"""

import asyncio
import base64
import itertools
import json
import threading
import time
from urllib.parse import parse_qsl, unquote

CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret-7b1c"
ISSUED: set[str] = {CLIENT_SECRET}  # every token any FakeTokens gave out: conftest greps all logs for them


class FakeTokens:
    def __init__(self, lifetime: float = 3.0, client_auth: str = "basic"):
        self.lifetime = lifetime
        self.client_auth = client_auth
        self.url = ""
        self.grants: list[str] = []  # grant_type of each request
        self.reused: list[str] = []  # refresh tokens presented after they were spent
        self.refused_clients = 0
        self.revoked_all = False
        self._numbers = itertools.count(1)
        self._refresh: dict[str, bool] = {}  # refresh token -> still good
        self._revoked: set[str] = set()
        self._access: dict[str, float] = {}  # access token -> expires (monotonic)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the test's side ---------------------------------------------------------

    def start(self) -> "FakeTokens":
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="fake-tokens", daemon=True).start()
        server = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop).result(5)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/oauth/token"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)

    def issue_refresh_token(self) -> str:
        """A refresh token as an authorization would give the customer."""
        with self._lock:
            token = f"rt-{next(self._numbers)}-seed"
            self._refresh[token] = True
            ISSUED.add(token)
            return token

    def issue_access_token(self, lifetime: float) -> str:
        with self._lock:
            token = f"at-{next(self._numbers)}-given"
            self._access[token] = time.monotonic() + lifetime
            ISSUED.add(token)
            return token

    def revoke(self, access_token: str) -> None:
        with self._lock:
            self._access.pop(access_token, None)

    def revoke_all_grants(self) -> None:
        """The customer disconnected the app: every refresh token is refused, now and later."""
        with self._lock:
            self.revoked_all = True

    def disconnect(self) -> None:
        """The customer disconnected the app: the refresh tokens given so far are refused."""
        with self._lock:
            self._revoked.update(token for token, good in self._refresh.items() if good)

    def valid(self, headers: dict[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        with self._lock:
            return scheme == "Bearer" and self._access.get(token, 0) > time.monotonic()

    def count(self, grant: str = "refresh_token") -> int:
        with self._lock:
            return self.grants.count(grant)

    # -- the endpoint ---------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, answer = self._grant(headers, dict(parse_qsl(body.decode())))
                payload = json.dumps(answer).encode()
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                             f"content-length: {len(payload)}\r\n\r\n".encode() + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _client(self, headers: dict[str, str], form: dict[str, str]) -> bool:
        if self.client_auth == "basic":
            scheme, _, encoded = headers.get("authorization", "").partition(" ")
            if scheme != "Basic":
                return False
            user, _, password = base64.b64decode(encoded).decode().partition(":")
            return (unquote(user), unquote(password)) == (CLIENT_ID, CLIENT_SECRET) and "client_secret" not in form
        return (form.get("client_id"), form.get("client_secret")) == (CLIENT_ID, CLIENT_SECRET)

    def _grant(self, headers: dict[str, str], form: dict[str, str]) -> tuple[int, dict]:
        with self._lock:
            grant = form.get("grant_type", "")
            self.grants.append(grant)
            if not self._client(headers, form):
                self.refused_clients += 1
                return 401, {"error": "invalid_client"}
            answer = {"token_type": "bearer", "expires_in": self.lifetime}
            if grant == "refresh_token":
                presented = form.get("refresh_token", "")
                if self._refresh.get(presented) is False:
                    self.reused.append(presented)
                if self.revoked_all or presented in self._revoked or not self._refresh.get(presented):
                    return 400, {"error": "invalid_grant", "error_description": "refresh token is invalid"}
                self._refresh[presented] = False  # spent
                answer["refresh_token"] = rotated = f"rt-{next(self._numbers)}-rotated"
                self._refresh[rotated] = True
                ISSUED.add(rotated)
            elif grant != "client_credentials":
                return 400, {"error": "unsupported_grant_type"}
            answer["access_token"] = access = f"at-{next(self._numbers)}-issued"
            self._access[access] = time.monotonic() + self.lifetime
            ISSUED.add(access)
            return 200, answer
