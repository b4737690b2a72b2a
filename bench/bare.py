"""The `bare` path of the benchmark: the gateway's own HTTP server and upstream
client passing the provider's native call through, with no translation.

It is to the gateway what nginx's plain `proxy_pass` is to nginx: the gap from
`bare` to `gateway` is what routing, translation and unifying cost; the gap
from `direct` to `bare` is what a Python process in the path costs at all.

    python bench/bare.py PORT UPSTREAM_PORT
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import server, transport  # noqa: E402

# Forwarded as received; everything else the client sent is left behind, as
# the gateway leaves it.
_FORWARDED = {b"x-api-key", b"content-type"}
_JSON = [(b"content-type", b"application/json")]


def proxy(upstream: str):
    client = transport.Client()
    timeouts = transport.Timeouts(connect=5, read=30, total=60)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return  # no lifespan to run
        message = await receive()
        target = upstream + scope["raw_path"].decode() + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k in _FORWARDED}
        answer = await client.send(scope["method"], target, [], headers, message["body"] or None,
                                   cap=10_000_000, pool_size=100, timeouts=timeouts)
        await send({"type": "http.response.start", "status": answer.status, "headers": _JSON})
        await send({"type": "http.response.body", "body": answer.body})

    return app


if __name__ == "__main__":
    port, upstream_port = int(sys.argv[1]), int(sys.argv[2])
    server.run(proxy(f"http://127.0.0.1:{upstream_port}"), "127.0.0.1", port, graceful_timeout=1,
               max_body_bytes=1_000_000)
