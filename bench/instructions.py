#!/usr/bin/env python3
"""Instructions per request, counted by valgrind's callgrind: a measure that
holds still on a machine whose speed drifts, where wrk's timings do not.

    python bench/instructions.py                  # 100 requests per scenario and path
    python bench/instructions.py --requests 300   # slower, a little steadier

For each scenario (create, list, retrieve) and path (`gateway`, and `bare`,
the same server and upstream client with no translation; see bench/run.py)
it serves N and then 2N sequential keep-alive requests under callgrind, each
time in a fresh process, and divides the difference of the two totals by N:
start-up and shutdown cancel out. The count is the process's own instructions
(Python, uvloop, httptools, msgspec, libc), not the kernel's, and one request
at a time: what a change to the code costs, not how the machine schedules it.
The upstream is bench/run.py's fake Formation (nginx). Every process gets
the same PYTHONHASHSEED: with a random one, each lays its dicts out
differently, and two counts of the same code differed by 10 % and more.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from run import (HOST, SCENARIOS, Process, calls, check_answer, ensure_commands, ensure_tools, free_port, start_bare,
                 start_gateway, start_nginx, upstream_conf)

PATHS = ("gateway", "bare")
WARM = 20  # requests before the counted ones, in both runs: they cancel out too
PAGE_SIZE = 50


def serve_and_count(valgrind: str, workdir: Path, path: str, scenario: str, requests: int, upstream_port: int) -> int:
    """Total instructions of one server process that answered WARM + `requests` calls, then exited."""
    out = workdir / f"callgrind.{path}.{scenario}.{requests}"
    wrapper = (valgrind, "--tool=callgrind", f"--callgrind-out-file={out}")
    port = free_port()
    if path == "gateway":
        proc, _ = start_gateway(workdir, port, upstream_port, wrapper, timeout=300)
    else:
        proc = start_bare(workdir, port, upstream_port, wrapper, timeout=300)
    try:
        call = calls(PAGE_SIZE)[scenario, path]
        conn = http.client.HTTPConnection(HOST, port, timeout=120)
        for _ in range(WARM + requests):
            conn.request(call.method, call.path, body=call.body, headers=call.headers)
            response = conn.getresponse()
            check_answer(scenario, "gateway" if path == "gateway" else "direct", response.status, response.read(),
                         PAGE_SIZE)
        conn.close()
    finally:
        proc.stop(signal.SIGTERM, wait=300)  # callgrind writes its counts as the process exits
    if proc.popen.returncode != 0:
        raise RuntimeError(f"{path} exited with {proc.popen.returncode}: {proc.log.read_text()[-2000:]}")
    found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
    if not found:
        raise RuntimeError(f"no instruction total in {out}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="N: requests in the shorter run (default 100)")
    args = parser.parse_args(argv)
    if not 10 <= args.requests <= 100_000:
        parser.error("--requests is 10 to 100,000")
    os.environ.setdefault("PYTHONHASHSEED", "0")  # the processes started here inherit it
    nginx, _ = ensure_tools()
    (valgrind,) = ensure_commands({"valgrind": "valgrind"})
    workdir = Path(tempfile.mkdtemp(prefix="gateway-instructions-"))
    workdir.chmod(0o755)  # nginx's workers (nobody) read the list page from here
    (workdir / "upstream").mkdir()
    upstream_port = free_port()
    upstream: Process | None = None
    try:
        upstream = start_nginx("upstream", nginx, workdir / "upstream",
                               upstream_conf(workdir / "upstream", upstream_port, PAGE_SIZE), upstream_port)
        rows = ["| scenario | gateway | bare | gateway − bare |", "|---|---:|---:|---:|"]
        for scenario in SCENARIOS:
            per_request = {}
            for path in PATHS:
                counts = [serve_and_count(valgrind, workdir, path, scenario, n, upstream_port)
                          for n in (args.requests, 2 * args.requests)]
                per_request[path] = (counts[1] - counts[0]) / args.requests
                print(f"  {scenario:8} {path:7} {per_request[path]:>12,.0f} instructions a request", file=sys.stderr,
                      flush=True)
            gateway, bare = per_request["gateway"], per_request["bare"]
            rows.append(f"| {scenario} | {gateway:,.0f} | {bare:,.0f} | {gateway - bare:,.0f} |")
        print(f"Instructions per request (callgrind; N = {args.requests}, page of {PAGE_SIZE} for list):\n")
        print("\n".join(rows))
        return 0
    finally:
        if upstream is not None:
            upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
