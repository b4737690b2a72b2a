"""The container image and the deploy/ examples.

No container engine here: the Dockerfile is parsed, its builder stage's steps
run in a fresh virtualenv (paths moved under a temporary directory), and the
final stage's command serves from it as the image would: as PID 1 of its own
PID namespace, under the image's user, with only the state volume writable.
The Kubernetes manifests are validated against Kubernetes' own schemas
(kubernetes-validate bundles them), the compose file against the Compose
Specification's (check-jsonschema bundles it); what no schema can see (probes
on the port served, every reference resolving, the mapping files loading, the
configuration starting a gateway) is checked here.
"""

import copy
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx
import kubernetes_validate
import pytest
import yaml

from conftest import ROOT, clean_server, free_port

DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
# Native sidecars (restartable init containers) are on by default from 1.29.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


# -- the Dockerfile ----------------------------------------------------------------


class Instruction(NamedTuple):
    keyword: str
    flags: dict[str, str]
    args: str


class Stage(NamedTuple):
    image: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"stage {self.name or self.image}: {len(found)} {keyword} instructions"
        return found[0]


def dockerfile_stages(path: Path) -> list[Stage]:
    """The stages of a Dockerfile: comments dropped, continued lines joined, ARGs before FROM applied."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#"):
            continue  # a comment, also between continued lines
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        if (pending + raw).strip():
            lines.append((pending + raw).strip())
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags = {}
        while rest.lstrip().startswith("--"):
            flag, _, rest = rest.lstrip().partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
        rest = rest.strip()
        if keyword == "FROM":
            words = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], rest).split()
            assert len(words) in (1, 3), f"FROM {rest}"
            stages.append(Stage(words[0], words[2] if len(words) == 3 else None, []))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, flags, rest))
    return stages


def env_of(instruction: Instruction, env: dict[str, str]) -> dict[str, str]:
    """ENV A=1 B=$A: the stage's environment after it, $VAR and ${VAR} expanded as the builder does."""
    env = dict(env)
    for word in shlex.split(instruction.args):
        name, sep, value = word.partition("=")
        assert sep, f"ENV {instruction.args}: write ENV NAME=value"
        env[name] = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), value)
    return env


def exec_form(instruction: Instruction) -> list[str]:
    """CMD ["a", "b"]: the JSON array, which runs without a shell (the process is PID 1 itself)."""
    try:
        command = json.loads(instruction.args)
    except json.JSONDecodeError:
        pytest.fail(f"{instruction.keyword} {instruction.args}: not exec form (a JSON array)")
    assert isinstance(command, list) and all(isinstance(w, str) for w in command), instruction.args
    return command


class Moved:
    """The image's absolute paths, moved under a directory of this machine."""

    def __init__(self, base: Path, paths: list[str]):
        self.base = base
        # Longest first, so that /opt/gateway/bin is not taken for /opt/gateway.
        self.paths = sorted(set(paths), key=len, reverse=True)
        self._pattern = re.compile(r"(?<![\w.-])(" + "|".join(map(re.escape, self.paths)) + r")(?=/|\b|$)")

    def __call__(self, text: str) -> str:
        return self._pattern.sub(lambda m: str(self.base) + m.group(1), text)

    def path(self, image_path: str) -> Path:
        return Path(self(image_path))


def option(command: list[str], name: str) -> str:
    assert name in command, f"{command} does not say {name}"
    return command[command.index(name) + 1]


def with_option(command: list[str], name: str, value: str) -> list[str]:
    command = list(command)
    command[command.index(name) + 1] = value
    return command


def sqlite_file(url: str) -> Path:
    assert url.startswith("sqlite:////"), f"{url}: expected sqlite:////absolute/path"
    return Path(url.removeprefix("sqlite:///"))


def tree(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """Every file and directory under root with its size and modification time."""
    found = {}
    for path in [root, *root.rglob("*")]:
        if skip is not None and (path == skip or skip in path.parents):
            continue
        stat = path.lstat()
        found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return found


STAGES = dockerfile_stages(ROOT / "Dockerfile")


def test_the_image_is_built_in_one_stage_and_runs_from_another():
    assert len(STAGES) >= 2, "a multi-stage build"
    builder, final = next(s for s in STAGES if s.name), STAGES[-1]
    # The virtualenv copied across links to the builder's interpreter.
    assert final.image == builder.image
    # The final stage holds what the builder made, never the build context (no sources, no tests).
    copies = final.all("COPY") + final.all("ADD")
    assert copies and all(c.flags.get("from") == builder.name for c in copies), copies
    env: dict[str, str] = {}
    for instruction in final.all("ENV"):
        env = env_of(instruction, env)
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    # A numeric, non-root user: Kubernetes' runAsNonRoot can verify only a number.
    uid, _, gid = final.one("USER").args.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit()), final.one("USER").args
    # The state store's default file is on the declared volume.
    volumes = exec_form(final.one("VOLUME")) if final.one("VOLUME").args.startswith("[") else final.one("VOLUME").args.split()
    state = sqlite_file(env["GATEWAY_STATE_URL"])
    assert any(state.is_relative_to(v) for v in volumes), (state, volumes)
    # Served on the exposed port, on every interface of the container; probed there.
    command = exec_form(final.one("CMD"))
    assert command[:2] == ["gateway", "serve"] and not final.all("ENTRYPOINT"), command
    port = option(command, "--port")
    assert option(command, "--host") == "0.0.0.0"
    assert final.one("EXPOSE").args.split() == [port]
    check = final.one("HEALTHCHECK")
    assert check.args.startswith("CMD ")
    assert f"http://127.0.0.1:{port}/healthz" in check.args


class Image(NamedTuple):
    moved: Moved  # where its paths are on this machine
    env: dict[str, str]  # the final stage's environment, moved
    command: list[str]  # its CMD, moved
    healthcheck: list[str]  # its HEALTHCHECK command


def base_interpreter(image: str) -> str:
    """The Python of the base image's version, one that the image's user may run (not under /root)."""
    version = re.fullmatch(r"python:(\d+\.\d+)[-.\w]*", image)
    assert version, f"FROM {image}: expected an official python:X.Y image"
    for candidate in (shutil.which(f"python{version[1]}", path="/usr/local/bin:/usr/bin:/bin"),
                      getattr(sys, "_base_executable", sys.executable)):
        if candidate is None:
            continue
        probe = subprocess.run([candidate, "-I", "-c", "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == version[1]:
            return candidate
    pytest.fail(f"no Python {version[1]} with venv and ensurepip here, as {image} has")


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    """The builder stage's steps, run in a fresh directory; the final stage's environment and commands, moved there."""
    base = Path(tempfile.mkdtemp(prefix="gateway-image-"))
    # Readable and searchable by the image's user, as / is in the image.
    base.chmod(0o755)
    builder, final = next(s for s in STAGES if s.name), STAGES[-1]
    carried = [c.args.split() for c in final.all("COPY")]
    assert all(len(words) == 2 and words[0] == words[1] for words in carried), \
        f"a virtualenv is not relocatable: copy it to the same path ({carried})"
    volumes = final.one("VOLUME").args.split()
    moved = Moved(base, [builder.one("WORKDIR").args, *(w[0] for w in carried), *volumes])

    # The base image's `python`, alone on a PATH of its own (not the tests' virtualenv).
    bin_dir = base / "base-image-bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(base_interpreter(builder.image))
    image_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LANG": "C.UTF-8"}

    env, workdir = dict(image_env), base
    for step in builder.instructions:
        if step.keyword == "ENV":
            env = env_of(step, env)
        elif step.keyword == "WORKDIR":
            workdir = moved.path(step.args)
            workdir.mkdir(parents=True, exist_ok=True)
        elif step.keyword == "COPY":
            *sources, target = step.args.split()
            assert not step.flags, step
            for source in sources:
                to = workdir / target if not target.endswith("/") else workdir / target / Path(source).name
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, to, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    to.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / source, to)
        elif step.keyword == "RUN":
            command = exec_form(step) if step.args.startswith("[") else ["/bin/sh", "-c", step.args]
            done = subprocess.run([moved(word) for word in command], cwd=workdir, env=env,
                                  capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"RUN {step.args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        else:
            assert step.keyword == "ARG", f"the builder's {step.keyword} is not emulated here: teach this test"

    final_env = dict(image_env)
    for step in final.all("ENV"):
        final_env = {k: moved(v) for k, v in env_of(step, final_env).items()}
    check = exec_form(Instruction("CMD", {}, final.one("HEALTHCHECK").args.removeprefix("CMD ")))
    yield Image(moved, final_env, exec_form(final.one("CMD")), check)
    shutil.rmtree(base, ignore_errors=True)


def test_the_installed_package_carries_its_bytecode_and_mappings(image):
    found = shutil.which(image.command[0], path=image.env["PATH"])
    assert found and Path(found).is_relative_to(image.moved.base), f"{image.command[0]} is {found}, not the image's"
    [package] = Path(found).parent.parent.glob("lib/python*/site-packages/gateway")
    # Nothing left to compile when it runs on a read-only root filesystem.
    tag = sys.implementation.cache_tag
    uncompiled = [p.name for p in package.glob("*.py") if not (package / "__pycache__" / f"{p.stem}.{tag}.pyc").exists()]
    assert not uncompiled
    # The bundled mappings are inside the installed package, not read from a source tree.
    assert sorted(p.name for p in (package / "mappings").glob("*.yaml")) == \
        sorted(p.name for p in (ROOT / "mappings").glob("*.yaml"))


def _ids(status: str, field: str) -> list[int]:
    line = next(line for line in status.splitlines() if line.startswith(field + ":"))
    return [int(n) for n in line.split()[1:]]


def test_the_image_command_serves_as_pid_1_writes_only_its_volume_and_stops_cleanly(image):
    uid, _, gid = STAGES[-1].one("USER").args.partition(":")
    uid, gid = int(uid), int(gid or uid)
    image_port, port = option(image.command, "--port"), str(free_port())
    command = with_option(with_option(image.command, "--port", port), "--host", "127.0.0.1")
    volume = sqlite_file(image.env["GATEWAY_STATE_URL"]).parent
    volume.mkdir(parents=True, exist_ok=True)
    # HOME where nothing is: the process must not need one.
    env = {**image.env, "HOME": str(image.moved.base / "no-home")}
    as_root = os.geteuid() == 0
    if as_root:
        # As in a container: PID 1 of its own PID namespace, where the kernel
        # drops every signal PID 1 has no handler for, under the image's
        # user, who may write to the volume only (`chown` in the Dockerfile).
        os.chown(volume, uid, gid)
        command = ["unshare", "--pid", "--fork", "--kill-child",
                   "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *command]
    before = tree(image.moved.base, skip=volume)
    process = subprocess.Popen(command, env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, f"{command} exited {process.returncode}:\n{''.join(lines)}"
            try:
                health = httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, f"{command} did not serve within 20 s:\n{''.join(lines)}"
                time.sleep(0.1)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        ready = httpx.get(url + "/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["state_store"] == "ok", ready.text
        # The image's own HEALTHCHECK command, run by the image's interpreter.
        probe = subprocess.run([w.replace(f"127.0.0.1:{image_port}/", f"127.0.0.1:{port}/") for w in image.healthcheck],
                               env=env, capture_output=True, text=True, timeout=10)
        assert probe.returncode == 0, probe.stderr

        served = process.pid
        if as_root:
            [served] = map(int, Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split())
            status = Path(f"/proc/{served}/status").read_text()
            assert _ids(status, "NSpid")[-1] == 1 and set(_ids(status, "Uid")) == {uid}, status
        os.kill(served, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not any("reloaded (SIGHUP)" in line for line in lines):
            assert time.monotonic() < deadline, f"no reload on SIGHUP:\n{''.join(lines)}"
            time.sleep(0.05)
        os.kill(served, signal.SIGTERM)
        assert process.wait(20) == 0, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(5)
    assert "shutting down" in "".join(lines)
    # Written: the state store, on the volume. Nothing else: not the
    # virtualenv (no bytecode), not the sources, not a HOME.
    assert (volume / "state.sqlite3").exists(), sorted(p.name for p in volume.iterdir())
    after = tree(image.moved.base, skip=volume)
    assert not sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
