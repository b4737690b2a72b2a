#!/usr/bin/env python3
"""Benchmark the gateway against a fast fake Formation and an nginx reference.

One command, loopback only, bounded in time and request count:

    python bench/run.py            # full: 10 s per run, writes bench/results.md
    python bench/run.py --quick    # 3 s per run
    python bench/run.py --soak 100000   # memory soak: RSS every 10k requests

It starts four servers, each its own process on 127.0.0.1:

- upstream: nginx answering Formation's contract (POST /contacts,
  GET /contacts?company_id&skip&limit, GET /contacts/{id}) with static,
  correct envelopes; it checks X-API-KEY and company_id like Formation does;
- nginx: a plain pass-through `proxy_pass` to the upstream, as shipped (the
  reference the targets were set against);
- bare: bench/bare.py, the gateway's own server and upstream client passing
  the native call through untranslated (Python's counterpart of `nginx`);
- gateway: `gateway serve` (one process, as shipped) configured with
  GATEWAY_API_KEYS and a GATEWAY_CONNECTIONS file whose base_url is the upstream;
- nginx2 and gateway2: the same two with two worker processes
  (`worker_processes 2`, `gateway serve --workers 2`), to use both cores;

then drives each scenario (create, list, retrieve) through each path (direct
to the upstream, nginx, bare, gateway) with wrk at concurrency 32 and 1, after one
checked request per path proving the answers are the right ones. It does so in
several rounds, every path in each, and reports each figure's median over the
rounds: a VM's speed drifts over minutes, and paths measured side by side, round
after round, drift together.

Nothing here asserts a timing: it measures and reports.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import http.client
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WRK_SCRIPT = BENCH / "wrk.lua"
SOAK_SCRIPT = BENCH / "soak.lua"
HOST = "127.0.0.1"

# What the fake Formation accepts, and what the gateway is configured with.
FORMATION_KEY = "bench-formation-key"
COMPANY_ID = "6650f1a2e4b0c8d9f0aa0001"
GATEWAY_KEY = "bench-api-key"
CONNECTION_TOKEN = "bench-formation"
CONTACT_ID = "64b8f1a2e4b0c8d9f0123456"
CREATED_AT = 1640995200

SCENARIOS = ("create", "list", "retrieve")
PATHS = ("direct", "nginx", "bare", "gateway", "nginx2", "gateway2")
# Whose throughput a path's is compared with: the nginx of as many worker processes.
GATEWAYS = ("gateway", "gateway2")  # the paths that answer /metrics
REFERENCE = {"bare": "nginx", "gateway": "nginx", "gateway2": "nginx2"}
WORKERS = {"nginx2": 2, "gateway2": 2}

# The unified create body (README's example) and the Formation body the
# gateway's mapping turns it into: the same call through every path.
UNIFIED_CREATE = {"name": "John Doe", "is_supplier": True, "email_address": "john.doe@example.com",
                  "tax_number": "123456789"}
FORMATION_CREATE = {"full_name": "John Doe", "email": "john.doe@example.com", "type": "vendor",
                    "company_id": COMPANY_ID, "billing": {"tax_id": "123456789"}}


# -- the fake Formation's answers ----------------------------------------------------

def contact(contact_id: str, **overrides) -> dict:
    """A Formation contact as its docs show one (every field, full billing)."""
    record = {
        "id": contact_id, "created_at": CREATED_AT, "updated_at": CREATED_AT,
        "type": "customer", "status": "active", "full_name": "John Doe", "email": "john@example.com",
        "description": "Primary contact for the company", "cc_emails": ["a@example.com"], "bcc_emails": [],
        "billing": {"email": "billing@example.com", "phone": "1234567890", "phone_code": "+1", "iso_code": "US",
                    "country": "United States", "address_1": "123 Main Street", "address_2": "Suite 100",
                    "postal_code": "12345", "district": "Downtown", "state": "CA", "province": "California",
                    "tax_id": "12-3456789"},
    }
    record.update(overrides)
    return record


def ok(data, message: str) -> str:
    return json.dumps({"success": True, "message": message, "data": data}, separators=(",", ":"))


def fail(code: str, details: str, message: str) -> str:
    return json.dumps({"success": False, "message": message, "data": None,
                       "error": {"code": code, "details": details}}, separators=(",", ":"))


def nginx_string(text: str) -> str:
    """A single-quoted nginx string; `$` would start a variable, so only `$1` may be used on purpose."""
    if "'" in text or "\\" in text:
        raise ValueError("payload needs no nginx escaping by construction")
    return "'" + text + "'"


def upstream_conf(prefix: Path, port: int, page_size: int) -> str:
    created = ok(contact(CONTACT_ID, type="vendor", email="john.doe@example.com", description="", cc_emails=[],
                         billing={"tax_id": "123456789"}), "Contact created successfully")
    # nginx caps one config token at 4 KiB: the list page is a file served by the static module.
    page = [contact(f"{0x64B8F1A2E4B0C8D9F0000001 + i:024x}") for i in range(page_size)]
    (prefix / "list.json").write_text(ok({"contacts": page, "total": page_size * 3}, "Contacts retrieved successfully"))
    (prefix / "list.json").chmod(0o644)
    # The record's id is the one asked for ($1), so a retrieve answers the right record.
    retrieved = ok(contact("ID"), "Contact retrieved successfully").replace('"id":"ID"', '"id":"$1"')
    if retrieved.count("$") != 1:
        raise ValueError("the retrieve payload must hold no `$` but the id")
    return server_conf(prefix, port, f"""
        if ($http_x_api_key = "") {{
            return 401 {nginx_string(fail("API_KEY_REQUIRED", "the X-API-KEY header is required", "Unauthorized"))};
        }}
        if ($http_x_api_key != "{FORMATION_KEY}") {{
            return 401 {nginx_string(fail("INVALID_API_KEY", "the API key is not valid", "Unauthorized"))};
        }}
        location = /contacts {{
            if ($request_method = POST) {{
                return 201 {nginx_string(created)};
            }}
            if ($arg_company_id = "") {{
                return 400 {nginx_string(fail("INVALID_REQUEST", "company_id is required", "Invalid request"))};
            }}
            if ($arg_company_id != "{COMPANY_ID}") {{
                return 404 {nginx_string(fail("COMPANY_NOT_FOUND", "company not found", "Company not found"))};
            }}
            if ($request_method != GET) {{
                return 405 {nginx_string(fail("INVALID_REQUEST", "method not allowed", "Invalid request"))};
            }}
            alias {prefix}/list.json;
        }}
        location ~ "^/contacts/([0-9a-f]{{24}})$" {{
            limit_except GET {{ deny all; }}
            return 200 {nginx_string(retrieved)};
        }}
        location / {{
            return 404 {nginx_string(fail("CONTACT_NOT_FOUND", "contact not found", "Contact not found"))};
        }}""")


def proxy_conf(prefix: Path, port: int, upstream_port: int) -> str:
    # nginx's plain `proxy_pass`, as shipped: HTTP/1.0 and a new connection per
    # request upstream. The reference the targets were set against; a keepalive
    # pool (proxy_http_version 1.1 + `keepalive`) makes nginx about 3x faster again.
    return server_conf(prefix, port, f"""
        location / {{
            proxy_pass http://{HOST}:{upstream_port};
        }}""")


def server_conf(prefix: Path, port: int, directives: str) -> str:
    """One nginx server on the port, with these directives inside it."""
    return f"""
events {{ worker_connections 4096; }}
http {{
    {common_http(prefix)}
    server {{
        listen {HOST}:{port} backlog=4096;{directives}
    }}
}}
"""


def common_http(prefix: Path) -> str:
    # Every path nginx would write is inside the prefix: no root-owned default is touched.
    return f"""
    access_log off;
    server_tokens off;
    default_type application/json;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
"""


# -- processes ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def get(port: int, path: str, headers: dict | None = None, method: str = "GET", body: bytes | None = None,
        timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Process:
    """A server process we started; stopped by its own pid only."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict | None = None, cwd: Path | None = None):
        self.name = name
        self.log = log
        self.started = time.perf_counter()
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=env, cwd=cwd)
        self.pid = self.popen.pid

    def wait_ready(self, probe, timeout: float = 20.0, interval: float = 0.005) -> float:
        """Seconds from process start until probe() is true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log.read_text()[-4000:]}")
            try:
                if probe():
                    return time.perf_counter() - self.started
            except OSError:
                pass
            time.sleep(interval)
        raise RuntimeError(f"{self.name} was not ready within {timeout} s:\n{self.log.read_text()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, wait: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(wait)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def start_nginx(name: str, nginx: str, prefix: Path, conf: str, port: int, workers: int = 1) -> Process:
    # A root master hands the workers to `nobody`; they must be able to read the prefix.
    prefix.chmod(0o755)
    path = prefix / "nginx.conf"
    path.write_text(f"daemon off;\nmaster_process on;\nworker_processes {workers};\npid {prefix}/nginx.pid;\n"
                    f"error_log {prefix}/error.log warn;\n" + conf)
    test = subprocess.run([nginx, "-t", "-q", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(path)],
                          capture_output=True, text=True, timeout=30)
    if test.returncode != 0:
        raise RuntimeError(f"{name}: nginx -t failed:\n{test.stderr}\n{conf}")
    proc = Process(name, [nginx, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(path)],
                   prefix / "stdout.log")
    proc.wait_ready(lambda: get(port, f"/contacts/{CONTACT_ID}", {"X-API-KEY": FORMATION_KEY})[0] == 200)
    return proc


def gateway_command() -> list[str]:
    script = Path(sys.executable).parent / "gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


def start_gateway(workdir: Path, port: int, upstream_port: int, wrapper: tuple[str, ...] = (),
                  timeout: float = 20.0, workers: int = 1) -> tuple[Process, float]:
    """`gateway serve` on the port, its connection's base_url the upstream; `wrapper` runs it (valgrind)."""
    connections = workdir / "connections.yaml"
    connections.write_text(f"""\
connections:
  - token: {CONNECTION_TOKEN}
    provider: formation
    name: bench-formation
    base_url: http://{HOST}:{upstream_port}
    credentials:
      api_key: ${{BENCH_FORMATION_API_KEY}}
    context:
      company_id: "{COMPANY_ID}"
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_API_KEYS=GATEWAY_KEY, GATEWAY_CONNECTIONS=str(connections),
               GATEWAY_CURSOR_SECRET="bench-cursor-secret", BENCH_FORMATION_API_KEY=FORMATION_KEY)
    proc = Process("gateway", [*wrapper, *gateway_command(), "serve", "--host", HOST, "--port", str(port),
                               "--workers", str(workers)], workdir / f"gateway{workers}.log", env=env, cwd=ROOT)
    ready = proc.wait_ready(lambda: get(port, "/health", timeout=1.0)[0] == 200, timeout=timeout)
    return proc, ready


def start_bare(workdir: Path, port: int, upstream_port: int, wrapper: tuple[str, ...] = (),
               timeout: float = 20.0) -> Process:
    proc = Process("bare", [*wrapper, sys.executable, str(BENCH / "bare.py"), str(port), str(upstream_port)],
                   workdir / "bare.log", cwd=ROOT)
    proc.wait_ready(lambda: get(port, f"/contacts/{CONTACT_ID}", {"X-API-KEY": FORMATION_KEY}, timeout=1.0)[0] == 200,
                    timeout=timeout)
    return proc


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0])
    return out


def cpu_ticks(pid: int) -> int:
    """utime + stime of pid and its children (nginx: master and workers)."""
    pids = [pid] + [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == pid]
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def busy_ticks() -> int:
    """CPU time all processes of the machine used, from /proc/stat. Not irq and softirq time:
    the kernel's loopback networking, which this benchmark itself causes, lands there."""
    user, nice, system = map(int, Path("/proc/stat").read_text().split()[1:4])
    return user + nice + system


def steal_ticks() -> tuple[int, int]:
    """Time the hypervisor ran other guests while this machine wanted the CPU, and all CPU time, from /proc/stat."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks[:8])


def own_ticks(pids: list[int]) -> int:
    """CPU time of the servers started here, the processes this one ran (wrk) and this one."""
    clk = os.sysconf("SC_CLK_TCK")
    children, me = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    used = children.ru_utime + children.ru_stime + me.ru_utime + me.ru_stime
    return sum(cpu_ticks(pid) for pid in pids) + round(used * clk)


def _ppid(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


# -- tools --------------------------------------------------------------------------------

def find_tool(name: str) -> str | None:
    return shutil.which(name) or next((p for d in ("/usr/sbin", "/usr/bin", "/sbin")
                                       if os.access(p := f"{d}/{name}", os.X_OK)), None)


def ensure_commands(packages: dict[str, str]) -> list[str]:
    """The paths of these commands (name -> the Debian package holding it); as root, apt-get installs those missing."""
    found = [find_tool(name) for name in packages]
    missing = [package for package, path in zip(packages.values(), found) if not path]
    if not missing:
        return found
    if os.geteuid() != 0:
        sys.exit(f"bench: {', '.join(packages)} are needed: apt-get install -y {' '.join(missing)} (as root)")
    print(f"bench: installing {' '.join(missing)} with apt-get", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, timeout=600,
                   stdout=subprocess.DEVNULL)
    found = [find_tool(name) for name in packages]
    if not all(found):
        sys.exit(f"bench: {', '.join(packages)} still missing after apt-get install")
    return found


def ensure_tools() -> tuple[str, str]:
    nginx, wrk = ensure_commands({"nginx": "nginx-light", "wrk": "wrk"})
    return nginx, wrk


# -- the calls ----------------------------------------------------------------------------

@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None = None


def calls(page_size: int) -> dict[tuple[str, str], Call]:
    formation = {"X-API-KEY": FORMATION_KEY}
    unified = {"x-api-key": GATEWAY_KEY, "x-connection-token": CONNECTION_TOKEN}
    json_body = {"Content-Type": "application/json"}
    native = {
        "create": Call("POST", "/contacts", {**formation, **json_body}, json.dumps(FORMATION_CREATE).encode()),
        "list": Call("GET", f"/contacts?company_id={COMPANY_ID}&skip=0&limit={page_size}", formation),
        "retrieve": Call("GET", f"/contacts/{CONTACT_ID}", formation),
    }
    gateway = {
        "create": Call("POST", "/accounting/contacts", {**unified, **json_body}, json.dumps(UNIFIED_CREATE).encode()),
        "list": Call("GET", f"/accounting/contacts?limit={page_size}", unified),
        "retrieve": Call("GET", f"/accounting/contacts/{CONTACT_ID}", unified),
    }
    out = {}
    for scenario in SCENARIOS:
        for path in PATHS:
            out[scenario, path] = gateway[scenario] if path.startswith("gateway") else native[scenario]
    return out


def check_answer(scenario: str, path: str, status: int, raw: bytes, page_size: int) -> None:
    """One request per scenario and path before timing it: the answer must be the right one."""
    expected = 201 if scenario == "create" else 200
    where = f"{scenario} via {path}"
    if status != expected:
        raise RuntimeError(f"{where}: status {status}, expected {expected}: {raw[:500]!r}")
    body = json.loads(raw)
    if not path.startswith("gateway"):
        if body.get("success") is not True:
            raise RuntimeError(f"{where}: not a Formation success envelope: {raw[:300]!r}")
        if scenario == "list":
            assert len(body["data"]["contacts"]) == page_size, where
        else:
            assert body["data"]["id"] == CONTACT_ID, where
        return
    if scenario == "create":
        assert body["id"] == CONTACT_ID and body["name"] == "John Doe" and body["is_supplier"] is True, (where, body)
        assert body["tax_number"] == "123456789" and body["company_info_id"] == COMPANY_ID, (where, body)
    elif scenario == "list":
        assert len(body["data"]) == page_size and body["next_cursor"], (where, body)
        assert body["data"][0]["email_address"] == "john@example.com", (where, body["data"][0])
    else:
        assert body["id"] == CONTACT_ID and body["created_at"] == "2022-01-01T00:00:00Z", (where, body)


# -- wrk ----------------------------------------------------------------------------------

@dataclass
class Run:
    requests: int
    seconds: float
    errors: dict[str, int]
    latency_us: dict[str, float]
    cpu_percent: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def run_wrk(wrk: str, workdir: Path, port: int, call: Call, connections: int, threads: int, seconds: float,
            cpu_pid: int | None = None) -> Run:
    env = {**os.environ, "BENCH_METHOD": call.method,
           "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in call.headers.items()), "BENCH_BODY_FILE": ""}
    if call.body is not None:
        body_file = workdir / "body.json"
        body_file.write_bytes(call.body)
        env["BENCH_BODY_FILE"] = str(body_file)
    args = [wrk, "--latency", "--timeout", "10s", "-t", str(min(threads, connections)), "-c", str(connections),
            "-d", f"{max(1, round(seconds))}s", "-s", str(WRK_SCRIPT), f"http://{HOST}:{port}{call.path}"]
    ticks = cpu_ticks(cpu_pid) if cpu_pid else 0
    wall = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=seconds + 60)
    wall = time.perf_counter() - wall
    cpu = None
    if cpu_pid:
        cpu = 100.0 * (cpu_ticks(cpu_pid) - ticks) / os.sysconf("SC_CLK_TCK") / wall
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {' '.join(args)}\n{done.stdout}\n{done.stderr}")
    data = json.loads(line.split(" ", 1)[1])
    return Run(data["requests"], data["duration_us"] / 1e6, data["errors"], data["latency_us"], cpu)


# -- the report ---------------------------------------------------------------------------

def ms(us: float) -> str:
    value = us / 1000
    return f"{value:.3f} ms" if abs(value) < 10 else f"{value:.1f} ms"


def plus_ms(us: float) -> str:
    return ("+" if us >= 0 else "−") + ms(abs(us))


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def machine() -> str:
    model = "unknown CPU"
    try:
        model = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        kib = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")))
        mem = f", {kib / 1048576:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores ({model}){mem}, Linux {platform.release()}"


def versions(nginx: str, wrk: str) -> str:
    def version(args: list[str], pattern: str) -> str:
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=10)
            found = re.search(pattern, done.stdout + done.stderr)
            return found.group(1) if found else "?"
        except OSError:
            return "?"

    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as pkg

    def dist(name: str) -> str:
        try:
            return pkg(name)
        except PackageNotFoundError:
            return "-"

    nginx_version, wrk_version = version([nginx, "-v"], r"nginx/(\S+)"), version([wrk, "-v"], r"wrk (\S+)")
    return (f"Python {platform.python_version()}, starlette {dist('starlette')}, "
            f"httpx {dist('httpx')}, uvloop {dist('uvloop')}, httptools {dist('httptools')}; "
            f"nginx {nginx_version}, wrk {wrk_version}")


def gateway_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "gateway", "mappings"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev or "?") + (" + uncommitted changes in gateway/ or mappings/" if dirty else "")
    except OSError:
        return "?"


@dataclass
class Results:
    runs: dict[tuple[str, str, int], list[Run]] = field(default_factory=dict)  # one run per round
    ready_seconds: float = 0.0
    other_cores: float = 0.0  # CPU that processes not started here used meanwhile, in cores
    steal: float = 0.0  # share of the machine's CPU time the hypervisor gave to other guests
    load: tuple[str, str] = ("?", "?")  # 1-minute load average before and after
    rss_ready_kib: int = 0
    rss_after_kib: int = 0
    peak_kib: int = 0
    gateway_requests: int = 0
    # Answers wrk counted from each gateway path, and what its /metrics counted meanwhile.
    answered: dict[str, int] = field(default_factory=dict)
    counted: dict[str, float] = field(default_factory=dict)


def median(runs: list[Run], value) -> float:
    return statistics.median(value(run) for run in runs)


def paired(runs: list[Run], reference: list[Run], value) -> float:
    """The median over rounds of value(run, the reference's run in the same round)."""
    return statistics.median(value(run, ref) for run, ref in zip(runs, reference))


def table(results: Results, high: int) -> str:
    rows = [f"| scenario | path | req/s (c={high}) | p50 (c={high}) | p99 (c={high}) | server CPU (c={high}) "
            f"| req/s (c=1) | p50 (c=1) | p99 (c=1) | req/s vs nginx (c={high}) | added p50 over direct (c=1) "
            f"| added p99 over direct (c={high}) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    p50, p99 = (lambda r: r.latency_us["p50"]), (lambda r: r.latency_us["p99"])
    for scenario in SCENARIOS:
        for path in PATHS:
            hi, one = results.runs[scenario, path, high], results.runs[scenario, path, 1]
            direct_hi, direct_one = results.runs[scenario, "direct", high], results.runs[scenario, "direct", 1]
            ratio = added_p50 = added_p99 = "—"
            if path != "direct":
                added_p50 = plus_ms(paired(one, direct_one, lambda r, d: p50(r) - p50(d)))
                added_p99 = plus_ms(paired(hi, direct_hi, lambda r, d: p99(r) - p99(d)))
            nginx_hi = results.runs[scenario, REFERENCE[path], high] if path in REFERENCE else []
            if nginx_hi and all(n.rps for n in nginx_hi):
                ratio = f"{paired(hi, nginx_hi, lambda r, n: r.rps / n.rps):.3f}"
            cpus = [r.cpu_percent for r in hi if r.cpu_percent is not None]
            cpu = f"{statistics.median(cpus):.0f} %" if cpus else "—"
            flag = " ⚠" if any(r.error_count for r in hi + one) else ""
            rows.append(f"| {scenario} | {path}{flag} | {median(hi, lambda r: r.rps):,.0f} | {ms(median(hi, p50))} | "
                        f"{ms(median(hi, p99))} | {cpu} | {median(one, lambda r: r.rps):,.0f} | {ms(median(one, p50))} | "
                        f"{ms(median(one, p99))} | {ratio} | {added_p50} | {added_p99} |")
    return "\n".join(rows)


def metrics_requests(port: int) -> float:
    """The gateway's own count of unified calls answered: gateway_requests_total over every series."""
    status, raw = get(port, "/metrics")
    if status != 200:
        raise SystemExit(f"bench: /metrics answered {status}")
    return sum(float(line.rsplit(" ", 1)[1]) for line in raw.decode().splitlines()
               if line.startswith("gateway_requests_total{"))


def metrics_line(results: Results) -> str:
    return ("`/metrics` under this load (gateway_requests_total, every series): " + "; ".join(
        f"`{path}` {results.counted[path]:,.0f}, wrk counted {results.answered[path]:,} answers"
        + (" (summed over its two workers)" if path == "gateway2" else "") for path in GATEWAYS) +
        ". A run's last calls under way when wrk stops are answered but not counted by wrk.")


def process_table(results: Results) -> str:
    return "\n".join([
        "| gateway start to ready | RSS when ready | RSS after "
        f"{results.gateway_requests:,} requests | peak RSS (VmHWM) |",
        "|---:|---:|---:|---:|",
        f"| {results.ready_seconds:.2f} s | {mib(results.rss_ready_kib)} | {mib(results.rss_after_kib)} "
        f"| {mib(results.peak_kib)} |",
    ])


# -- modes ----------------------------------------------------------------------------------

def benchmark(args, wrk: str, workdir: Path, ports: dict[str, int], gateway: Process, results: Results,
              pids: dict[str, int]) -> None:
    every = calls(args.page_size)
    before = (time.perf_counter(), busy_ticks(), own_ticks(list(pids.values())), steal_ticks())
    load_before = Path("/proc/loadavg").read_text().split()[0]
    for scenario in SCENARIOS:
        for path in PATHS:
            call = every[scenario, path]
            status, raw = get(ports[path], call.path, call.headers, call.method, call.body)
            check_answer(scenario, path, status, raw, args.page_size)
            if path in GATEWAYS:
                results.answered[path] = results.answered.get(path, 0) + 1
    for round_ in range(1, args.rounds + 1):
        for scenario in SCENARIOS:
            for path in PATHS:
                call = every[scenario, path]
                if args.warmup > 0 and round_ == 1:
                    warm = run_wrk(wrk, workdir, ports[path], call, args.connections, args.threads, args.warmup)
                    if path == "gateway":
                        results.gateway_requests += warm.requests
                    if path in GATEWAYS:
                        results.answered[path] += warm.requests
                for conns in (args.connections, 1):
                    run = run_wrk(wrk, workdir, ports[path], call, conns, args.threads, args.duration, pids[path])
                    results.runs.setdefault((scenario, path, conns), []).append(run)
                    if path == "gateway":
                        results.gateway_requests += run.requests
                    if path in GATEWAYS:
                        results.answered[path] += run.requests
                    print(f"  {round_}/{args.rounds} {scenario:8} {path:7} c={conns:<3} {run.rps:>9,.0f} req/s  "
                          f"p50 {ms(run.latency_us['p50']):>10}  p99 {ms(run.latency_us['p99']):>10}"
                          + (f"  errors {run.errors}" if run.error_count else ""), file=sys.stderr, flush=True)
    status = proc_status(gateway.pid)
    results.rss_after_kib, results.peak_kib = status["VmRSS"], status["VmHWM"]
    # Workers share their figures every second (gateway/metrics.py's SHARE_SECONDS): wait for the last share.
    time.sleep(1.5)
    results.counted = {path: metrics_requests(ports[path]) for path in GATEWAYS}
    wall = time.perf_counter() - before[0]
    other = (busy_ticks() - before[1]) - (own_ticks(list(pids.values())) - before[2])
    results.other_cores = max(0.0, other / os.sysconf("SC_CLK_TCK") / wall)
    stolen, total = (now - then for now, then in zip(steal_ticks(), before[3]))
    results.steal = stolen / total if total else 0.0
    results.load = (load_before, Path("/proc/loadavg").read_text().split()[0])


def run_until_quota(cmd: list[str], env: dict, threads: int, deadline: float) -> tuple[str, int]:
    """Run soak.lua's wrk until each thread said it reached its quota, then end it with SIGINT."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        reached, buffer, end = 0, b"", time.monotonic() + deadline
        while reached < threads and time.monotonic() < end and proc.poll() is None:
            ready, _, _ = select.select([proc.stderr], [], [], 0.5)
            if ready:
                chunk = os.read(proc.stderr.fileno(), 4096)
                if not chunk:
                    break
                buffer += chunk
                reached = buffer.count(b"BENCH_QUOTA_REACHED")
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        return stdout.decode() + (buffer + stderr).decode(), proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def soak(args, wrk: str, workdir: Path, port: int, gateway: Process) -> int:
    """Print the gateway's RSS after every --soak-every requests; return how many answers were not 200/201."""
    every = calls(args.page_size)
    body = workdir / "create.json"
    body.write_bytes(every["create", "gateway"].body)
    headers = every["list", "gateway"].headers
    status = proc_status(gateway.pid)
    print("| requests | RSS | peak RSS (VmHWM) | RSS change since the first mark | unexpected statuses |\n"
          "|---:|---:|---:|---:|---:|\n"
          f"| 0 (ready) | {mib(status['VmRSS'])} | {mib(status['VmHWM'])} | | |", flush=True)
    done, unexpected, first, first_done, last = 0, 0, None, 0, 0
    threads = min(args.threads, args.connections)
    for start in range(0, args.soak, args.soak_every):
        # Each wrk thread answers for its share; the marks show the counts wrk really saw.
        chunk = min(args.soak_every, args.soak - start)
        env = {**os.environ, "BENCH_QUOTA": str(-(-chunk // threads)), "BENCH_BODY_FILE": str(body),
               "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in headers.items()),
               "BENCH_CREATE_PATH": every["create", "gateway"].path, "BENCH_LIST_PATH": every["list", "gateway"].path,
               "BENCH_RETRIEVE_PATH": every["retrieve", "gateway"].path}
        cmd = [wrk, "--timeout", "10s", "-t", str(threads), "-c", str(args.connections), "-d", "600s",
               "-s", str(SOAK_SCRIPT), f"http://{HOST}:{port}/"]
        stdout, returncode = run_until_quota(cmd, env, threads, deadline=600)
        line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCH_SOAK ")), None)
        if returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({returncode}): {stdout}")
        data = json.loads(line.split(" ", 1)[1])
        done += data["responses"]
        unexpected += data["unexpected"]
        status = proc_status(gateway.pid)
        if first is None:
            first, first_done = status["VmRSS"], done
        delta = status["VmRSS"] - first
        row = (f"| {done:,} | {mib(status['VmRSS'])} | {mib(status['VmHWM'])} | "
               f"{'+' if delta >= 0 else '−'}{mib(abs(delta))} | {data['unexpected']} |")
        print(row, flush=True)
        last = status["VmRSS"]
    if first is not None and done > first_done:
        growth = last - first  # KiB
        verdict = (f"\nRSS from the first mark to the last: {'+' if growth >= 0 else '−'}{mib(abs(growth))} over "
                   f"{done - first_done:,} requests ({growth * args.soak_every / (done - first_done):+.0f} KiB "
                   f"per {args.soak_every:,}).")
        print(verdict, flush=True)
    return unexpected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured wrk run (default 5)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of unmeasured load before each path's first run (default 1)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of every run; the report gives medians over them (default 3)")
    parser.add_argument("--quick", action="store_true", help="one round of 3 s runs")
    parser.add_argument("--connections", type=int, default=32, help="the high concurrency (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads at the high concurrency (default 2)")
    parser.add_argument("--page-size", type=int, default=50,
                        help="records per list page (default 50, the gateway's default limit)")
    parser.add_argument("--output", type=Path, default=BENCH / "results.md", help="markdown report (default bench/results.md)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers as JSON here")
    parser.add_argument("--soak", type=int, metavar="N", help="memory soak instead: N requests (create, list, "
                        "retrieve in turn) through the gateway, RSS printed every --soak-every")
    parser.add_argument("--soak-every", type=int, default=10_000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.rounds = 3, 1, 1
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds is 1 to 20")
    if args.duration < 1 or args.warmup < 0:
        parser.error("--duration is at least 1 second and --warmup at least 0 (wrk counts whole seconds)")
    if args.soak is not None and not 0 < args.soak <= 10_000_000:
        parser.error("--soak takes 1 to 10,000,000 requests")
    if args.soak_every < 1:
        parser.error("--soak-every must be at least 1")
    if not 1 <= args.page_size <= 100:
        parser.error("--page-size is 1 to 100 (Formation's and the mapping's max_limit)")
    if not 1 <= args.connections <= 1024:
        parser.error("--connections is 1 to 1024")

    nginx, wrk = ensure_tools()
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    workdir.chmod(0o755)
    started: list[Process] = []
    # A SIGTERM (e.g. a test timeout) still stops every server started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        ports = {path: free_port() for path in PATHS}
        for prefix in ("upstream", "proxy", "proxy2"):
            (workdir / prefix).mkdir()
        upstream = start_nginx("upstream", nginx, workdir / "upstream",
                               upstream_conf(workdir / "upstream", ports["direct"], args.page_size), ports["direct"])
        started.append(upstream)
        proxy = start_nginx("nginx", nginx, workdir / "proxy",
                            proxy_conf(workdir / "proxy", ports["nginx"], ports["direct"]), ports["nginx"])
        started.append(proxy)
        proxy2 = start_nginx("nginx2", nginx, workdir / "proxy2",
                             proxy_conf(workdir / "proxy2", ports["nginx2"], ports["direct"]), ports["nginx2"],
                             WORKERS["nginx2"])
        started.append(proxy2)
        bare = start_bare(workdir, ports["bare"], ports["direct"])
        started.append(bare)
        gateway, ready = start_gateway(workdir, ports["gateway"], ports["direct"])
        started.append(gateway)
        gateway2, _ = start_gateway(workdir, ports["gateway2"], ports["direct"], workers=WORKERS["gateway2"])
        started.append(gateway2)
        results = Results(ready_seconds=ready, rss_ready_kib=proc_status(gateway.pid)["VmRSS"])
        when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")

        if args.soak is not None:
            print(f"# Gateway memory soak: {args.soak:,} requests, concurrency {args.connections}\n", flush=True)
            unexpected = soak(args, wrk, workdir, ports["gateway"], gateway)
            print(f"\n{when}; {machine()}; gateway {gateway_revision()}")
            return 1 if unexpected else 0

        print(f"bench: {args.rounds} round(s) of {args.duration:g} s runs, {args.warmup:g} s warm-up, "
              f"concurrency {args.connections} and 1", file=sys.stderr, flush=True)
        pids = {"direct": upstream.pid, "nginx": proxy.pid, "bare": bare.pid, "gateway": gateway.pid,
                "nginx2": proxy2.pid, "gateway2": gateway2.pid}
        benchmark(args, wrk, workdir, ports, gateway, results, pids)

        high = args.connections
        warnings = []
        for scenario in SCENARIOS:
            direct = median(results.runs[scenario, "direct", high], lambda r: r.rps)
            gw = median(results.runs[scenario, "gateway", high], lambda r: r.rps)
            if gw and direct < 5 * gw:
                warnings.append(f"- the upstream answered {scenario} only {direct / gw:.1f}x faster than "
                                f"the gateway: the gateway's numbers may be bounded by the upstream")
        erred = [f"{s} via {p} at c={c}: {r.errors}" for (s, p, c), runs in results.runs.items()
                 for r in runs if r.error_count]
        warnings += [f"- wrk errors, {e}" for e in erred]
        if results.other_cores > 0.2:
            warnings.append(f"- other processes kept {results.other_cores:.2f} cores busy during the runs: "
                            "the numbers are disturbed; rerun on a quiet machine")
        report = "\n".join([
            "# Gateway benchmark",
            "",
            f"{when}; {machine()}.",
            f"{versions(nginx, wrk)}.",
            f"Gateway {gateway_revision()}; `gateway serve` with its defaults (a JSON access line a request), one process, "
            "and two workers for `gateway2`.",
            f"wrk: {args.rounds} round(s), each running every scenario through every path for {args.duration:g} s "
            f"at each concurrency (after {args.warmup:g} s of warm-up per path before the first); c={high} with "
            f"{min(args.threads, high)} threads, c=1 with 1; list pages of {args.page_size} records. Each figure is "
            "the median over the rounds; a ratio or an added latency is the median of each round's own.",
            "Paths: `direct` = wrk to the fake Formation (nginx serving static envelopes); `nginx` = an nginx "
            "plain `proxy_pass` in front of it; `bare` = the gateway's own server and upstream client passing "
            "the native call through untranslated (bench/bare.py); `gateway` = the unified API, translated to "
            "that upstream; `nginx2` and `gateway2` = nginx and the gateway with two worker processes "
            "(`worker_processes 2`, `gateway serve --workers 2`), compared with each other. wrk runs on the same "
            "two cores.",
            f"Machine noise: processes other than this benchmark's used {results.other_cores:.2f} of "
            f"{os.cpu_count()} cores on average during the runs (1-minute load average {results.load[0]} before, "
            f"{results.load[1]} after); the hypervisor kept {results.steal:.1%} of the CPU time (steal).",
            "Server CPU: the processes answering wrk (for nginx, the proxy's master and workers; for gateway2, the "
            "supervisor and its workers), 100 % = one core. Added latency: "
            "that path's percentile minus direct's.",
            "",
            table(results, high),
            "",
            process_table(results),
            "",
            metrics_line(results),
            *([""] + warnings if warnings else []),
            "",
        ])
        print(report)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report, encoding="utf-8")
        print(f"bench: wrote {args.output}", file=sys.stderr)
        if args.json:
            args.json.write_text(json.dumps({
                "date": when, "machine": machine(), "gateway": gateway_revision(),
                "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "runs": [{"scenario": s, "path": p, "connections": c, "round": i, "rps": r.rps,
                          "requests": r.requests, "seconds": r.seconds, "errors": r.errors,
                          "latency_us": r.latency_us, "server_cpu_percent": r.cpu_percent}
                         for (s, p, c), runs in results.runs.items() for i, r in enumerate(runs, 1)],
                "gateway_process": {"ready_seconds": results.ready_seconds, "rss_ready_kib": results.rss_ready_kib,
                                    "rss_after_kib": results.rss_after_kib, "peak_rss_kib": results.peak_kib,
                                    "requests": results.gateway_requests},
                "metrics": {path: {"counted": results.counted[path], "wrk_answers": results.answered[path]}
                            for path in GATEWAYS},
            }, indent=2), encoding="utf-8")
        return 1 if erred else 0
    finally:
        for proc in reversed(started):
            proc.stop()
        if args.keep:
            print(f"bench: kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
