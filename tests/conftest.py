"""Shared fixtures: ../shared, free loopback ports, real server processes, a real redis-server."""

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MAPPINGS = ROOT / "mappings"


@pytest.fixture(scope="session", autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The state store's default file (XDG_STATE_HOME) in this run's own directory,
    for the gateways the tests start and create in process: tokens and
    idempotency keys of one run never meet another's, nor the user's."""
    home = tmp_path_factory.mktemp("state-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", str(home))
        yield home


# -- no secret in any log: every gateway log of the run is grepped at its end ------------

# The embedded demo's key and token are public by design, and its start says them out loud.
PUBLIC = {"gateway-demo-key", "sandbox-formation"}
SECRETS: set[str] = set()  # every value the run handed a gateway as a secret
LOGS: list[str] = []  # every gateway's output: processes when they stop, in-process gateways as they log
_SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)


def note_secrets(env: dict[str, str]) -> None:
    """The secrets in a gateway's environment: keys, tokens and passwords, and the
    connections file's tokens and credentials, `${ENV}` references resolved."""
    import yaml

    found = [v for name, value in env.items() if _SECRET_NAME.search(name) for v in value.split(",")]
    if path := env.get("GATEWAY_CONNECTIONS"):
        try:
            document = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            document = {}
        for connection in document.get("connections") or () if isinstance(document, dict) else ():
            if isinstance(connection, dict):
                credentials = connection.get("credentials")
                found += [connection.get("token"), *(credentials.values() if isinstance(credentials, dict) else ())]
        found = [re.sub(r"\$\{(\w+)\}", lambda m: {**os.environ, **env}.get(m[1], ""), str(v)) for v in found if v]
    # Short values ("x", "k1") would match by chance in any log.
    SECRETS.update(value.strip() for value in found if len(value.strip()) >= 8 and value.strip() not in PUBLIC)


class _Keep(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        LOGS.append(self.format(record) + repr(getattr(record, "fields", "")))


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log() -> Iterator[None]:
    """Fails the run (an error at the last teardown) if a secret any test used reached
    any gateway's log: API keys, connection tokens, credentials, OAuth2 client
    secrets and every access and refresh token the fake token endpoint issued."""
    from fake_oauth import ISSUED

    keep = _Keep()
    logging.getLogger("gateway").addHandler(keep)  # survives logs.configure's root reset
    yield
    logging.getLogger("gateway").removeHandler(keep)
    secrets = SECRETS | ISSUED
    leaks = sorted({secret for secret in secrets for log in LOGS if secret in log})
    assert not leaks, f"secrets in gateway logs: {leaks}"
    assert secrets and LOGS or not LOGS, "no secrets noted: the leak check would pass for nothing"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "reference").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED} is missing: CI must check out shared/ beside the project")
        pytest.skip(f"{SHARED} is not beside this checkout; the tests reading it skip")
    return SHARED


def seed(shared: Path, prefix: str) -> str:
    return next((shared / "seeds").glob(f"{prefix}_*.txt")).read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(process: subprocess.Popen) -> str:
    """Terminate (then kill) a helper process; its output, once."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is None or process.stdout.closed:
        return ""
    log = process.stdout.read()
    process.stdout.close()
    return log


def answer(response: httpx.Response, status: int) -> dict:
    """The JSON body of a response that must have `status`; never a 500, never anything but JSON."""
    assert response.status_code != 500, response.text
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return response.json()


class Server:
    """A real process serving HTTP on a loopback port, stopped at teardown.

    Its output is read as it comes, as a container runtime would: a log line
    per request fills a pipe nobody reads, and then the process blocks on it."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, health: str = "/health"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = ""
        note_secrets(env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args, "--port", str(self.port)],
            cwd=ROOT, env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self._lines.extend(self.process.stdout), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"{args} exited with {self.process.returncode}:\n{self.log}")
            try:
                httpx.get(self.url + health, timeout=0.5)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{args} did not start in time:\n{self.log}")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(10)
        if not self.log:
            LOGS.append("".join(self._lines))
        self.log = "".join(self._lines)
        return self.log


@pytest.fixture
def start_server() -> Iterator:
    servers: list[Server] = []

    def start(args: list[str], env: dict[str, str] | None = None, health: str = "/health") -> Server:
        server = Server(args, env, health)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def formation_sandbox() -> Iterator[Server]:
    """The fake Formation API as its own process, reached over real HTTP."""
    server = Server(["sandbox"], health="/contacts")
    yield server
    server.stop()


# -- end-to-end helpers: clean environments, the seed contact, configured gateways --

E2E_API_KEYS = ("e2e-key-primary", "e2e-key-secondary")
E2E_TOKEN = "e2e-connection-token-5d2c"
E2E_BAD_CREDENTIAL_TOKEN = "e2e-connection-token-bad-credential-9e1f"


def without_gateway_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment less every GATEWAY_* variable: what the embedded default starts from."""
    return {k: v for k, v in (os.environ if environ is None else environ).items() if not k.startswith("GATEWAY_")}


def clean_server(args: list[str], env: dict[str, str] | None = None, health: str = "/health") -> Server:
    """A `Server` whose process inherits no GATEWAY_* variable but those given in env."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("GATEWAY_")]:
            patch.delenv(name)
        return Server(args, env, health)


def seed_contact(shared: Path) -> dict:
    """The unified contact of seeds/000: the first JSON object after the SDK snippet."""
    import json

    text = seed(shared, "000")
    start = text.index("{", text.index("run();"))
    contact, _ = json.JSONDecoder().raw_decode(text, start)
    return contact


def openapi(shared: Path) -> dict:
    import yaml

    return yaml.safe_load((shared / "reference" / "panora-accounting-openapi.yaml").read_text(encoding="utf-8"))


def contact_input(shared: Path) -> dict:
    """The seed contact's fields that the contract's UnifiedAccountingContactInput defines."""
    fields = openapi(shared)["components"]["schemas"]["UnifiedAccountingContactInput"]["properties"]
    return {k: v for k, v in seed_contact(shared).items() if k in fields}


def write_connections(directory: Path, base_url: str) -> Path:
    """A connections file for the Formation sandbox at base_url; the credentials come from the environment."""
    from gateway import sandbox

    path = directory / "connections.yaml"
    path.write_text(f"""\
connections:
  - token: {E2E_TOKEN}
    provider: formation
    name: e2e-formation
    base_url: {base_url}
    credentials:
      api_key: ${{E2E_FORMATION_API_KEY}}
    context:
      company_id: "{sandbox.COMPANY_ID}"
  - token: {E2E_BAD_CREDENTIAL_TOKEN}
    provider: formation
    name: e2e-formation-bad-credential
    base_url: {base_url}
    credentials:
      api_key: ${{E2E_FORMATION_WRONG_KEY}}
    context:
      company_id: "{sandbox.COMPANY_ID}"
""", encoding="utf-8")
    return path


def configured_gateway(directory: Path, sandbox_url: str) -> Server:
    """`gateway serve` configured through GATEWAY_API_KEYS and GATEWAY_CONNECTIONS."""
    from gateway import sandbox

    return clean_server(["serve"], {
        "GATEWAY_API_KEYS": ", ".join(E2E_API_KEYS),
        "GATEWAY_CONNECTIONS": str(write_connections(directory, sandbox_url)),
        "E2E_FORMATION_API_KEY": sandbox.API_KEY,
        "E2E_FORMATION_WRONG_KEY": "not-the-formation-key",
    })


# -- Prism: a provider's OpenAPI spec as a validating mock --------------------------------

PRISM_DIR = ROOT / ".cache" / "prism"


@pytest.fixture(scope="session")
def prism_bin() -> Path:
    """Prism 5 from npm, installed once under .cache/ (as `.ci/run` does)."""
    binary = PRISM_DIR / "node_modules" / ".bin" / "prism"
    if not binary.exists():
        PRISM_DIR.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["npm", "install", "--prefix", str(PRISM_DIR), "--no-audit", "--no-fund",
                               "@stoplight/prism-cli@5"], capture_output=True, text=True)
        if done.returncode != 0 or not binary.exists():
            pytest.fail(f"cannot install @stoplight/prism-cli@5 with npm:\n{done.stdout}\n{done.stderr}")
    return binary


class Prism:
    """`prism mock` of one spec on a loopback port, validating every request."""

    def __init__(self, binary: Path, spec: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([str(binary), "mock", "-h", "127.0.0.1", "-p", str(self.port), str(spec)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120  # large specs take Prism a while to load
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prism exited with {self.process.returncode}:\n{self.process.stdout.read()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prism did not start within 120 s on {spec}")

    def stop(self) -> str:
        return stop_process(self.process)


@pytest.fixture(scope="session")
def start_prism(prism_bin) -> Iterator:
    """Start Prism on a spec; one process per spec per test session."""
    running: dict[Path, Prism] = {}

    def start(spec: Path) -> Prism:
        if spec not in running:
            running[spec] = Prism(prism_bin, spec)
        return running[spec]

    yield start
    for prism in running.values():
        prism.stop()


# -- the real Panora SDK (PyPI `panora-sdk`), in a virtualenv of its own ---------------
# panora-sdk 0.7.0 needs httpx<0.28 and pydantic<2.9, which the gateway's own
# environment does not have: its virtualenv is built once under .cache/ and reused.

SDK = "panora-sdk"
SDK_VERSION = "0.7.0"
SDK_VENV = ROOT / ".cache" / "panora-sdk-venv"


def child_env() -> dict[str, str]:
    # The SDK's interpreter must see nothing of the gateway's environment.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _venv_python(root: Path) -> Path:
    return root / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _installed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    probe = subprocess.run([str(python), "-I", "-c",
                            f"import importlib.metadata as m, panora_sdk; print(m.version({SDK!r}))"],
                           capture_output=True, text=True, env=child_env(), timeout=120)
    return probe.stdout.strip() if probe.returncode == 0 else None


@pytest.fixture(scope="session")
def sdk_python() -> Path:
    """The SDK venv's interpreter; the venv is built on first use and kept under .cache/."""
    python = _venv_python(SDK_VENV)
    if _installed_version(python) == SDK_VERSION:
        return python
    shutil.rmtree(SDK_VENV, ignore_errors=True)
    SDK_VENV.parent.mkdir(parents=True, exist_ok=True)
    made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(SDK_VENV)], capture_output=True, text=True,
                          env=child_env(), timeout=300)
    if made.returncode != 0:
        pytest.fail(f"python -m venv {SDK_VENV} failed:\n{made.stdout}{made.stderr}")
    try:
        install = subprocess.run(
            [str(python), "-I", "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
             f"{SDK}=={SDK_VERSION}"],
            capture_output=True, text=True, env=child_env(), timeout=900)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(SDK_VENV, ignore_errors=True)
        pytest.fail(f"pip install {SDK}=={SDK_VERSION} into {SDK_VENV} timed out after {exc.timeout}s: "
                    "is PyPI reachable from this machine?")
    if install.returncode != 0:
        shutil.rmtree(SDK_VENV, ignore_errors=True)
        pytest.fail(f"cannot install {SDK}=={SDK_VERSION} from PyPI into {SDK_VENV} (pip exited {install.returncode}); "
                    f"these tests need PyPI. pip said:\n{install.stdout[-3000:]}\n{install.stderr[-3000:]}")
    found = _installed_version(python)
    if found != SDK_VERSION:
        shutil.rmtree(SDK_VENV, ignore_errors=True)
        pytest.fail(f"{SDK} installed into {SDK_VENV} but does not import as version {SDK_VERSION} (found {found})")
    return python


def run_sdk_client(python: Path, script: Path, job: dict, cwd: Path) -> dict:
    """Run a client script with the SDK's interpreter: a JSON job on stdin, a JSON report on stdout."""
    done = subprocess.run([str(python), "-I", str(script)], input=json.dumps(job), capture_output=True, text=True,
                          env=child_env(), cwd=cwd, timeout=120)
    assert done.returncode == 0, f"the SDK client failed:\n{done.stderr}"
    return json.loads(done.stdout)


# -- a real redis-server -----------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if binary is None:
        pytest.fail("redis-server is not installed, and the Redis idempotency tests need it: "
                    "install it (apt-get install redis-server; .ci/run does)")
    try:
        import redis
    except ImportError:
        pytest.fail("redis-py is not installed: pip install -e '.[test]'")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                "--dir", str(tmp_path_factory.mktemp("redis"))],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = redis.Redis(port=port, socket_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"redis-server did not start on port {port}:\n{process.communicate()[0]}")
            time.sleep(0.05)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
    process.stdout.close()


def in_process(directory: Path, connections: str, mappings: dict[str, str] | None = None, **environ: str):
    """The gateway in process (Starlette's TestClient, to enter with `with`): this
    connections file, mapping files beside the bundled ones, providers reached
    through httpx's own transport (so pytest-httpx answers for them)."""
    from starlette.testclient import TestClient

    from gateway.app import create_app
    from gateway.settings import from_environ

    (directory / "connections.yaml").write_text(connections)
    environ = {"GATEWAY_API_KEYS": environ.pop("api_key", "k"), "GATEWAY_CONNECTIONS": str(directory / "connections.yaml"),
               **environ}
    if mappings:
        (directory / "mappings").mkdir(exist_ok=True)
        for name, text in mappings.items():
            (directory / "mappings" / f"{name}.yaml").write_text(text)
        environ["GATEWAY_MAPPINGS"] = str(directory / "mappings")
    return TestClient(create_app(from_environ(environ), environ=environ, transport=httpx.AsyncHTTPTransport()))


@pytest.fixture(scope="module")
def fake():
    """The fake Formation (tests/fake_provider.py), one for a module's tests; a module
    that fakes another provider defines its own `fake`."""
    from fake_provider import FakeFormation

    provider = FakeFormation().start()
    yield provider
    provider.stop()
