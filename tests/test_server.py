"""The HTTP/1.1 server of `gateway serve` (gateway/server.py), spoken to over
raw sockets: keep-alive, pipelining, framing, limits, timeouts and refusals.
Every refusal is the gateway's JSON error; no input gets a bare 500."""

import json
import socket
import time

import pytest
from conftest import Server

from gateway.server import MAX_HEADER_FIELDS

HEADERS = "x-api-key: gateway-demo-key\r\nx-connection-token: sandbox-formation\r\n"
CREATE = json.dumps({"name": "Server Test", "email_address": "server@example.com"}).encode()


@pytest.fixture(scope="module")
def server():
    # The embedded sandbox: no provider process needed.
    process = Server(["serve", "--keep-alive", "1", "--request-timeout", "1", "--send-timeout", "1"],
                     {"GATEWAY_MAX_BODY_BYTES": "2048"})
    yield process
    log = process.stop()
    assert "Traceback" not in log, log


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response off the socket (Content-Length framed); the rest stays in `buffer`."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a whole head: {bytes(buffer)!r}"
        buffer += chunk
    head, _, _ = bytes(buffer).partition(b"\r\n\r\n")
    del buffer[:len(head) + 4]
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers["content-length"])
    while len(buffer) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        buffer += chunk
    body = bytes(buffer[:length])
    del buffer[:length]
    return status, headers, body


def closed(sock: socket.socket, within: float = 5.0) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def refusal(status: int, headers: dict, body: bytes, expected: int, code: str) -> None:
    assert status == expected, body
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert json.loads(body)["code"] == code


def post(body: bytes, extra: str = "") -> bytes:
    return (f"POST /accounting/contacts HTTP/1.1\r\nhost: t\r\n{HEADERS}content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}\r\n").encode() + body


def test_one_connection_carries_many_requests(server):
    with connect(server) as sock:
        buffer = bytearray()
        for _ in range(3):
            sock.sendall(post(CREATE))
            status, headers, body = read_response(sock, buffer)
            assert status == 201 and json.loads(body)["name"] == "Server Test"
            assert headers["date"].endswith("GMT")
            assert "connection" not in headers


def test_pipelined_requests_are_answered_in_order(server):
    requests = b"".join([
        b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n",
        post(CREATE),
        f"GET /accounting/contacts?limit=1 HTTP/1.1\r\nhost: t\r\n{HEADERS}\r\n".encode(),
        b"GET /nowhere HTTP/1.1\r\nhost: t\r\n\r\n",
    ])
    with connect(server) as sock:
        sock.sendall(requests)
        buffer = bytearray()
        answers = [read_response(sock, buffer) for _ in range(4)]
    assert [a[0] for a in answers] == [200, 201, 200, 404]
    assert json.loads(answers[1][2])["name"] == "Server Test"
    assert len(json.loads(answers[2][2])["data"]) == 1


def test_http_1_0_and_connection_close_end_the_connection(server):
    for request in (b"GET /health HTTP/1.0\r\n\r\n", b"GET /health HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"):
        with connect(server) as sock:
            sock.sendall(request)
            status, headers, _ = read_response(sock, bytearray())
            assert status == 200 and headers["connection"] == "close"
            assert closed(sock)


def test_a_chunked_request_body_is_read_whole(server):
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(CREATE[i:i + 10]), CREATE[i:i + 10]) for i in range(0, len(CREATE), 10))
    request = (f"POST /accounting/contacts HTTP/1.1\r\nhost: t\r\n{HEADERS}content-type: application/json\r\n"
               "transfer-encoding: chunked\r\n\r\n").encode() + chunks + b"0\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(request)
        status, _, body = read_response(sock, bytearray())
    assert status == 201 and json.loads(body)["email_address"] == "server@example.com"


def test_expect_100_continue_is_answered_before_the_body(server):
    with connect(server) as sock:
        head = post(CREATE, "expect: 100-continue\r\n")[:-len(CREATE)]
        sock.sendall(head)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(CREATE)
        assert read_response(sock, bytearray())[0] == 201


def test_a_body_over_the_cap_is_refused_before_it_is_read(server):
    with connect(server) as sock:
        sock.sendall((f"POST /accounting/contacts HTTP/1.1\r\nhost: t\r\n{HEADERS}"
                      "content-length: 999999\r\nexpect: 100-continue\r\n\r\n").encode())
        refusal(*read_response(sock, bytearray()), 413, "body_too_large")
        assert closed(sock)


def test_a_chunked_body_over_the_cap_is_refused(server):
    with connect(server) as sock:
        sock.sendall((f"POST /accounting/contacts HTTP/1.1\r\nhost: t\r\n{HEADERS}transfer-encoding: chunked\r\n\r\n"
                      "1000\r\n").encode() + b"x" * 4096 + b"\r\n")
        refusal(*read_response(sock, bytearray()), 413, "body_too_large")
        assert closed(sock)


def test_malformed_requests_get_a_json_400(server):
    for garbage in (b"NOT HTTP AT ALL\r\n\r\n", b"GET /health HTTP/1.1\r\nbad header line\r\n\r\n",
                    b"GET /health HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"):
        with connect(server) as sock:
            sock.sendall(garbage)
            refusal(*read_response(sock, bytearray()), 400, "malformed_request")
            assert closed(sock)


def test_trailer_fields_never_become_headers(server):
    """RFC 9112 7.1.2: the gateway's credentials and Idempotency-Key in a chunked
    body's trailer section are dropped, as nginx does, never read as headers."""
    body = b"%x\r\n%s\r\n0\r\n" % (len(CREATE), CREATE)
    head = "POST /accounting/contacts HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n"
    with connect(server) as sock:
        sock.sendall(f"{head}\r\n".encode() + body + HEADERS.encode() + b"\r\n")
        status, _, answer = read_response(sock, bytearray())
    assert status == 401 and json.loads(answer)["code"] == "missing_api_key", answer
    with connect(server) as sock:  # an Idempotency-Key in the trailer: two creates, neither replayed
        buffer = bytearray()
        ids = []
        for _ in range(2):
            sock.sendall(f"{head}{HEADERS}\r\n".encode() + body + b"idempotency-key: trailer-key-0001\r\n\r\n")
            status, headers, answer = read_response(sock, buffer)
            assert status == 201 and "idempotent-replayed" not in headers, answer
            ids.append(json.loads(answer)["id"])
    assert ids[0] != ids[1]


def test_a_trailer_section_over_the_cap_gets_a_json_431(server):
    with connect(server) as sock:
        sock.sendall((f"POST /accounting/contacts HTTP/1.1\r\nhost: t\r\n{HEADERS}transfer-encoding: chunked\r\n\r\n"
                      "2\r\n{}\r\n0\r\nx-filler: ").encode())
        for _ in range(20):  # one field, in pieces: the parser holds them until the field ends
            sock.sendall(b"a" * 5000)
            time.sleep(0.002)  # separate reads
        refusal(*read_response(sock, bytearray()), 431, "headers_too_large")


def test_headers_over_the_cap_get_a_json_431(server):
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: t\r\n" + b"x-filler: " + b"a" * 70_000 + b"\r\n\r\n")
        refusal(*read_response(sock, bytearray()), 431, "headers_too_large")


def test_empty_header_fields_count_as_their_bytes_on_the_wire(server):
    """60,000 fields of `a:` are 240 kB on the wire, though their names and values are 60 kB."""
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: t\r\n" + b"a:\r\n" * 60_000 + b"\r\n")
        refusal(*read_response(sock, bytearray()), 431, "headers_too_large")


def test_more_header_fields_than_the_cap_get_a_json_431(server):
    fields = "".join(f"x-field-{n}: {n}\r\n" for n in range(MAX_HEADER_FIELDS))  # and host: one too many
    with connect(server) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nhost: t\r\n{fields}\r\n".encode())
        status, headers, body = read_response(sock, bytearray())
        refusal(status, headers, body, 431, "headers_too_large")
        assert str(MAX_HEADER_FIELDS) in json.loads(body)["message"]
    with connect(server) as sock:  # at the cap: served
        sock.sendall(f"GET /health HTTP/1.1\r\n{fields}\r\n".encode())
        assert read_response(sock, bytearray())[0] == 200


def test_a_header_arriving_in_many_pieces_is_capped_on_the_wire(server):
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: t\r\nx-filler: ")
        for _ in range(40):
            sock.sendall(b"b" * 4000)
            time.sleep(0.002)  # separate reads
        refusal(*read_response(sock, bytearray()), 431, "headers_too_large")


def test_a_refusal_before_the_body_reaches_a_client_that_writes_its_whole_body_first(server):
    """urllib sends the whole body before it reads: the 413 must reach it, not a reset."""
    import urllib.error
    import urllib.request

    big = json.dumps({"name": "x" * 12_000_000}).encode()  # more than the sockets buffer
    request = urllib.request.Request(f"{server.url}/accounting/contacts", data=big, method="POST",
                                     headers={"x-api-key": "gateway-demo-key", "x-connection-token": "sandbox-formation",
                                              "content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["code"] == "body_too_large"


def test_a_client_that_never_reads_its_answers_is_let_go(server):
    """Pipelined requests whose answers are never read: after --send-timeout
    (1 s here) the connection is closed, not held with its answers for ever."""
    import threading

    from fake_provider import sockets

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # little room for unread answers
    sock.connect(("127.0.0.1", server.port))
    local_port = sock.getsockname()[1]
    request = f"GET /{'p' * 16_000} HTTP/1.1\r\nhost: t\r\n\r\n".encode()  # a 404 that names its 16 kB path
    ended = threading.Event()

    def write_for_ever() -> None:
        try:
            for _ in range(5_000):
                sock.sendall(request)
        except OSError:
            pass
        ended.set()

    threading.Thread(target=write_for_ever, daemon=True).start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        held = [s for s in sockets(server.process.pid)[1] if s.remote_port == local_port]
        if not held:
            break
        time.sleep(0.2)
    assert not held, held
    assert ended.wait(5)
    sock.close()


def test_http_1_0_gets_no_100_continue(server):
    """RFC 9110 10.1.1: a 1.0 client's Expect: 100-continue is ignored."""
    with connect(server) as sock:
        sock.sendall(b"POST /accounting/contacts HTTP/1.0\r\n" + HEADERS.encode() +
                     b"content-type: application/json\r\nexpect: 100-continue\r\n" +
                     f"content-length: {len(CREATE)}\r\n\r\n".encode())
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(100)
        sock.settimeout(5)
        sock.sendall(CREATE)
        buffer = bytearray()
        status, _, _ = read_response(sock, buffer)
        assert status == 201 and not buffer.startswith(b"HTTP/1.1 100")


def test_a_trailing_slash_on_health_is_answered_without_a_redirect(server):
    with connect(server) as sock:
        sock.sendall(b"GET /health/ HTTP/1.1\r\nhost: evil.example\r\n\r\n")
        status, headers, body = read_response(sock, bytearray())
    assert status == 200 and "location" not in headers and json.loads(body) == {"status": "ok"}


def test_a_request_that_never_arrives_whole_gets_a_408(server):
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: t\r\n")  # and nothing more
        started = time.monotonic()
        refusal(*read_response(sock, bytearray()), 408, "request_timeout")
        assert time.monotonic() - started < 3


def test_an_idle_connection_is_closed_after_the_keep_alive(server):
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n")
        assert read_response(sock, bytearray())[0] == 200
        started = time.monotonic()
        assert closed(sock)
        assert 0.9 < time.monotonic() - started < 3


def test_head_answers_the_headers_alone(server):
    with connect(server) as sock:
        sock.sendall(b"HEAD /health HTTP/1.1\r\nhost: t\r\n\r\nGET /health HTTP/1.1\r\nhost: t\r\n\r\n")
        buffer = bytearray()
        while buffer.count(b"\r\n\r\n") < 2 or not buffer.endswith(b"}"):
            buffer += sock.recv(65536)
    first, second = bytes(buffer).split(b"HTTP/1.1 200 OK")[1:]
    assert b"content-length: 15" in first and first.endswith(b"\r\n\r\n")  # no body after the HEAD's headers
    assert second.endswith(b'{"status":"ok"}')


def test_an_upgrade_request_is_answered_as_http_1_1(server):
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n")
        status, headers, body = read_response(sock, bytearray())
        assert status == 200 and json.loads(body) == {"status": "ok"}


def test_a_client_that_leaves_mid_request_does_not_disturb_the_others(server):
    for _ in range(20):
        with connect(server) as sock:
            sock.sendall(post(CREATE)[:-5])  # and hang up
    with connect(server) as sock:
        sock.sendall(post(CREATE))
        assert read_response(sock, bytearray())[0] == 201


def test_a_bad_request_behind_good_ones_is_refused_after_they_are_answered(server):
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n" + post(CREATE) + b"NOT HTTP\r\n\r\n")
        buffer = bytearray()
        assert read_response(sock, buffer)[0] == 200
        assert read_response(sock, buffer)[0] == 201
        refusal(*read_response(sock, buffer), 400, "malformed_request")
        assert closed(sock)


def test_a_request_line_over_the_cap_gets_a_json_431(server):
    with connect(server) as sock:
        sock.sendall(b"GET /health?" + b"q" * 70_000 + b" HTTP/1.1\r\nhost: t\r\n\r\n")
        refusal(*read_response(sock, bytearray()), 431, "headers_too_large")


def test_an_app_that_fails_gets_a_json_500_never_a_bare_one():
    # In process, with an app that misbehaves in both ways the server guards.
    import asyncio

    from conftest import free_port

    from gateway.server import Server

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/raise":
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-bad", b"a\r\nx-injected: 1")]})
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()

    async def main() -> list:
        stop = asyncio.Event()
        serving = asyncio.create_task(Server(app, "127.0.0.1", port, max_body_bytes=1024).serve(1.0, stop))
        await asyncio.sleep(0.2)
        answers = []
        for path in ("/raise", "/inject"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.1\r\nhost: t\r\n\r\n".encode())
            answers.append(await reader.read())  # the server closes after a 500
            writer.close()
        stop.set()
        await serving
        return answers

    for raw in asyncio.run(main()):
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 500 ") and b"x-injected" not in head, raw
        assert json.loads(body)["code"] == "internal_error"


# -- in process, with an app of the test's own ----------------------------------------

async def _sized(scope, receive, send):
    """Answers /big?N with N bytes, /slow?S after S seconds, anything else with the body's length."""
    if scope["type"] != "http":
        return
    message = await receive()
    query = scope["query_string"].decode()
    if scope["path"] == "/big":
        body = b"x" * int(query)
    elif scope["path"] == "/slow":
        import asyncio
        await asyncio.sleep(float(query))
        body = b"slow"
    else:
        body = str(len(message["body"])).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def served(app, client, **options):
    """Run `client(sock)` in a thread against gateway.server.Server serving `app`
    in process (in the main thread, where it may take its signals)."""
    import asyncio

    from conftest import free_port

    from gateway.server import Server as HttpServer

    port = free_port()

    def connected() -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        with sock:
            client(sock)

    async def main() -> None:
        stop = asyncio.Event()
        server = HttpServer(app, "127.0.0.1", port, max_body_bytes=options.pop("max_body_bytes", 1 << 20), **options)
        serving = asyncio.create_task(server.serve(1.0, stop))
        while not server.connections and not serving.done():  # listening once a probe connects
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.02)
        try:
            await asyncio.to_thread(connected)
        finally:
            stop.set()
            await serving

    asyncio.run(main())


def test_a_slow_reader_is_not_mistaken_for_one_that_reads_nothing():
    """--send-timeout bounds a client that takes nothing, not one that takes its answer slowly."""
    size = 4_000_000

    def client(sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(f"GET /big?{size} HTTP/1.1\r\nhost: t\r\n\r\n".encode())
        received = 0
        while received < size:  # about 1.5 MB/s: some 3 s, three times the send timeout
            chunk = sock.recv(16384)
            assert chunk, f"closed after {received} bytes"
            received += len(chunk)
            time.sleep(0.01)

    served(_sized, client, send_timeout=1.0)


def test_a_chunked_body_read_after_its_size_lines_is_no_head():
    """Reads that end right after a chunk's size line carry body, not head: no 431 for 128 KiB."""
    def client(sock: socket.socket) -> None:
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n8000\r\n")
        for _ in range(3):
            time.sleep(0.1)
            sock.sendall(b"d" * 0x8000 + b"\r\n8000\r\n")
        time.sleep(0.1)
        sock.sendall(b"d" * 0x8000 + b"\r\n0\r\n\r\n")
        assert read_response(sock, bytearray())[::2] == (200, b"131072")

    served(_sized, client)


def test_a_request_waiting_behind_pipelined_ones_has_its_own_time_to_arrive():
    """Its first bytes came with the requests before it; the 408 clock starts when it is read."""
    def client(sock: socket.socket) -> None:
        sock.sendall(b"GET /slow?1.5 HTTP/1.1\r\nhost: t\r\n\r\nGET /echo HTTP/1.1\r\nhost: t\r\n\r\nGET /echo HTTP/1.1\r\nho")
        time.sleep(0.3)
        sock.sendall(b"st: t\r\n\r\n")
        buffer = bytearray()
        assert [read_response(sock, buffer)[0] for _ in range(3)] == [200, 200, 200]

    served(_sized, client, request_timeout=1.0)
