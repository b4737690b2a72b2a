"""Shared fixtures: ../shared, free loopback ports, and real server processes."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MAPPINGS = ROOT / "mappings"


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


class Server:
    """A real process serving HTTP on a loopback port, stopped at teardown."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, health: str = "/health"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = ""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args, "--port", str(self.port)],
            cwd=ROOT, env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log = self.process.stdout.read()
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
        if self.process.stdout and not self.process.stdout.closed:
            self.log = self.process.stdout.read()
            self.process.stdout.close()
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
