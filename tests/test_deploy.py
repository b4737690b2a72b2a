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

import base64
import copy
import fnmatch
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


def dockerignored(path: Path) -> bool:
    """Whether .dockerignore keeps path out of the build context: the last pattern
    matching it or a directory above it decides, `!` letting it back in."""
    ignored = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        keep = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        if any(fnmatch.fnmatchcase(str(p), pattern) for p in (path, *list(path.parents)[:-1])):
            ignored = not keep
    return ignored


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
        self._pattern = re.compile(r"(?<![\w.-])(" + "|".join(map(re.escape, self.paths)) + r")(?![\w.-])")

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


def declared_volumes(stage: Stage) -> list[str]:
    volume = stage.one("VOLUME")
    return exec_form(volume) if volume.args.startswith("[") else volume.args.split()


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
    volumes = declared_volumes(final)
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
    try:
        yield _built_image(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _built_image(base: Path) -> Image:
    # Readable and searchable by the image's user, as / is in the image.
    base.chmod(0o755)
    builder, final = next(s for s in STAGES if s.name), STAGES[-1]
    carried = [c.args.split() for c in final.all("COPY")]
    assert all(len(words) == 2 and words[0] == words[1] for words in carried), \
        f"a virtualenv is not relocatable: copy it to the same path ({carried})"
    moved = Moved(base, [builder.one("WORKDIR").args, *(w[0] for w in carried), *declared_volumes(final)])

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
                # What the build context holds: the checkout less what .dockerignore leaves out.
                files = [f for f in ([ROOT / source] if (ROOT / source).is_file() else (ROOT / source).rglob("*"))
                         if f.is_file() and not dockerignored(f.relative_to(ROOT))]
                assert files, f"COPY {source}: nothing in the build context (.dockerignore?)"
                to = workdir / target if not target.endswith("/") else workdir / target / Path(source).name
                for file in files:
                    copied = to if file == ROOT / source else to / file.relative_to(ROOT / source)
                    copied.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, copied)
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
    return Image(moved, final_env, exec_form(final.one("CMD")), check)


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


# -- Kubernetes ----------------------------------------------------------------------


def manifests() -> list[tuple[Path, dict]]:
    found = [(path, doc) for path in sorted(KUBERNETES.glob("*.yaml"))
             for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert found, f"no manifests in {KUBERNETES}"
    return found


class Cluster:
    """The example's objects by kind and name, and the lookups a kubelet would make."""

    def __init__(self, docs: list[dict]):
        self.objects: dict[tuple[str, str], dict] = {}
        for doc in docs:
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in self.objects, f"{key} defined twice"
            self.objects[key] = doc

    def get(self, kind: str, name: str) -> dict:
        assert (kind, name) in self.objects, f"{kind} {name} is referenced but not defined"
        return self.objects[(kind, name)]

    def values(self, kind: str, name: str) -> dict[str, str]:
        found = self.get(kind, name)
        data = found.get("data", {})
        if kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        return {**data, **found.get("stringData", {})}

    def workloads(self) -> list[dict]:
        return [o for (kind, _), o in self.objects.items() if kind in ("Deployment", "StatefulSet", "DaemonSet")]


def containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def container_env(cluster: Cluster, container: dict) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom first, then env in order,
    $(VAR) expanded from what is defined before; every Secret and ConfigMap key it reads must exist."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            if field in source:
                values = cluster.values(kind, source[field]["name"])
                env.update({source.get("prefix", "") + key: value for key, value in values.items()})
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(var["value"], env, f"{container['name']}: {var['name']}")
            continue
        ref = var["valueFrom"]
        for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            if field in ref:
                values = cluster.values(kind, ref[field]["name"])
                key = ref[field]["key"]
                assert key in values, \
                    f"{container['name']}: {var['name']} reads {kind} {ref[field]['name']} key {key}, which it lacks"
                env[var["name"]] = values[key]
    return env


def expand(value: str, env: dict[str, str], where: str) -> str:
    def lookup(match: re.Match) -> str:
        assert match[1] in env, f"{where} reads $({match[1]}), not defined before it"
        return env[match[1]]
    return re.sub(r"\$\((\w+)\)", lookup, value)


def port_number(container: dict, port: int | str) -> int | None:
    """A port by number, or by the name of one of the container's ports (None: it has none of that name)."""
    if isinstance(port, int):
        return port
    return next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == port), None)


def gateway_pod(cluster: Cluster) -> tuple[dict, dict, dict]:
    """The Deployment that runs the gateway as a sidecar, its pod spec, and the gateway's container."""
    found = [(w, w["spec"]["template"]["spec"], c) for w in cluster.workloads()
             for c in containers(w["spec"]["template"]["spec"]) if c["name"] == "gateway"]
    assert len(found) == 1, "one gateway sidecar"
    return found[0]


def test_every_manifest_is_valid_for_kubernetes():
    for path, doc in manifests():
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path.name}: {doc['kind']} {doc['metadata']['name']} is not valid in Kubernetes {version}: "
                            f"{exc.message} at {'.'.join(map(str, exc.path))}")


def test_the_validator_refuses_what_kubernetes_would():
    """The schemas are no formality: a misspelt field or a wrong type is refused."""
    deployment, _, _ = gateway_pod(Cluster([doc for _, doc in manifests()]))
    misspelt = copy.deepcopy(deployment)
    pod = misspelt["spec"]["template"]["spec"]
    [gateway] = [c for c in containers(pod) if c["name"] == "gateway"]
    gateway["livenesProbe"] = gateway.pop("livenessProbe")
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_the_gateway_sidecar_is_probed_where_it_serves():
    cluster = Cluster([doc for _, doc in manifests()])
    deployment, pod, gateway = gateway_pod(cluster)
    # A native sidecar: up before the app, stopped after it.
    assert gateway in pod.get("initContainers", []) and gateway.get("restartPolicy") == "Always"
    assert "command" not in gateway, "the image's own command (gateway serve), its arguments at most"
    command = gateway.get("args") or exec_form(STAGES[-1].one("CMD"))
    assert command[:2] == ["gateway", "serve"], command
    served = int(option(command, "--port"))
    # The kubelet probes the pod's address, not its loopback.
    assert option(command, "--host") == "0.0.0.0"
    probes = {kind: gateway[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe") if kind in gateway}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for kind, probe in probes.items():
        assert probe["path"] in ("/healthz", "/readyz"), kind
        assert port_number(gateway, probe["port"]) == served, kind
        assert probe.get("scheme", "HTTP") == "HTTP", kind
    # The app reaches it on the pod's loopback, at the port it serves.
    app_urls = [v["value"] for c in pod["containers"] for v in c.get("env", []) if v.get("value", "").startswith("http")]
    assert app_urls and all(urlsplit(u).hostname == "127.0.0.1" and urlsplit(u).port == served for u in app_urls)
    # The scrape annotations name the port that serves /metrics.
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == served and annotations["prometheus.io/path"] == "/metrics"
    assert gateway["resources"]["requests"]["memory"] and gateway["resources"]["limits"]["memory"]
    # The app stops first, then the gateway finishes the calls under way: both within the pod's grace period.
    assert pod["terminationGracePeriodSeconds"] > float(option(command, "--graceful-timeout"))


def test_every_container_runs_as_non_root_on_a_read_only_root_filesystem():
    uid = int(STAGES[-1].one("USER").args.partition(":")[0])
    for workload in Cluster([doc for _, doc in manifests()]).workloads():
        pod = workload["spec"]["template"]["spec"]
        for container in containers(pod):
            where = f"{workload['metadata']['name']}/{container['name']}"
            context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True, where
            assert context.get("runAsUser", 1) != 0, where
            assert container["securityContext"].get("readOnlyRootFilesystem") is True, where
            assert container["securityContext"].get("allowPrivilegeEscalation") is False, where
            assert "ALL" in container["securityContext"].get("capabilities", {}).get("drop", []), where
            if container["name"] == "gateway":
                assert context.get("runAsUser", uid) == uid, f"{where}: the image's user is {uid}"


def test_every_reference_resolves():
    cluster = Cluster([doc for _, doc in manifests()])
    for workload in cluster.workloads():
        template = workload["spec"]["template"]
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= template["metadata"]["labels"].items(), workload["metadata"]["name"]
        pod = template["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for volume in volumes.values():
            for kind, field, name in (("ConfigMap", "configMap", "name"), ("Secret", "secret", "secretName"),
                                      ("PersistentVolumeClaim", "persistentVolumeClaim", "claimName")):
                if field in volume:
                    cluster.get(kind, volume[field][name])
        for container in containers(pod):
            env = container_env(cluster, container)  # every Secret and ConfigMap key it reads exists
            for word in [*container.get("command", []), *container.get("args", [])]:
                expand(word, env, f"{container['name']}'s command")
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{container['name']}: no volume {mount['name']}"
    for (kind, name), service in cluster.objects.items():
        if kind == "Service":
            [target] = [w for w in cluster.workloads()
                        if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()]
            pod = target["spec"]["template"]["spec"]
            for port in service["spec"]["ports"]:
                assert any(port_number(c, port.get("targetPort", port["port"])) for c in pod["containers"]), (name, port)


def test_the_gateway_reads_its_mounted_configuration_and_shares_state_when_replicated():
    cluster = Cluster([doc for _, doc in manifests()])
    deployment, pod, gateway = gateway_pod(cluster)
    env = container_env(cluster, gateway)
    mounts = {m["mountPath"]: pod_volume(pod, m["name"]) for m in gateway["volumeMounts"]}
    for directory in env["GATEWAY_MAPPINGS"].split(":"):
        assert "configMap" in mounts[directory], directory
    connections = Path(env["GATEWAY_CONNECTIONS"])
    configmap = cluster.get("ConfigMap", mounts[str(connections.parent)]["configMap"]["name"])
    text = configmap["data"][connections.name]
    missing = set(re.findall(r"\$\{(\w+)\}", text)) - set(env)
    assert not missing, f"the connections file reads {sorted(missing)}, which the gateway's environment lacks"
    if deployment["spec"].get("replicas", 1) > 1:
        # Tokens as they rotate, idempotency and refresh locks: one store for every replica.
        state = urlsplit(env["GATEWAY_STATE_URL"])
        assert state.scheme == "redis", env["GATEWAY_STATE_URL"]
        service = cluster.get("Service", state.hostname)
        assert any(p["port"] == (state.port or 6379) for p in service["spec"]["ports"])


def pod_volume(pod: dict, name: str) -> dict:
    [volume] = [v for v in pod["volumes"] if v["name"] == name]
    return volume


def configmap_files(cluster: Cluster, pod: dict, gateway: dict, variable: str, directory: Path) -> Path:
    """What the kubelet would mount at the path an environment variable names, written under directory."""
    target = Path(container_env(cluster, gateway)[variable])
    for mount in gateway["volumeMounts"]:
        mounted = Path(mount["mountPath"])
        if target == mounted or mounted in target.parents:
            configmap = cluster.get("ConfigMap", pod_volume(pod, mount["name"])["configMap"]["name"])
            local = directory / mounted.relative_to("/")
            local.mkdir(parents=True)
            for key, text in configmap["data"].items():
                (local / key).write_text(text)
            return local / target.relative_to(mounted)
    pytest.fail(f"{variable}={target}: no volume mounted there")


def test_the_mappings_configmap_passes_gateway_check(tmp_path):
    cluster = Cluster([doc for _, doc in manifests()])
    _, pod, gateway = gateway_pod(cluster)
    mappings = configmap_files(cluster, pod, gateway, "GATEWAY_MAPPINGS", tmp_path)
    files = sorted(mappings.glob("*.yaml"))
    assert files
    done = subprocess.run([sys.executable, "-m", "gateway", "check", "--examples", str(mappings)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [line.split()[1].rstrip(":") for line in done.stdout.splitlines() if line.startswith("ok ")] == \
        [str(f) for f in files]


@pytest.fixture(scope="module")
def redis_with_password() -> Iterator[tuple[int, str]]:
    """A redis-server asking for the password of the example's Secret, as its Redis does."""
    cluster = Cluster([doc for _, doc in manifests()])
    [redis] = [c for w in cluster.workloads() for c in w["spec"]["template"]["spec"]["containers"] if c["name"] == "redis"]
    env = container_env(cluster, redis)
    args = [expand(word, env, "redis' command") for word in redis["command"][1:]]
    password = option(args, "--requirepass")
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        args = with_option(args, "--dir", data)
        process = subprocess.Popen(["redis-server", *args, "--port", str(port), "--bind", "127.0.0.1"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 10
            while subprocess.run(["redis-cli", "-p", str(port), "--no-auth-warning", "-a", password, "ping"],
                                 capture_output=True, text=True).stdout.strip() != "PONG":
                assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.1)
            yield port, password
        finally:
            process.terminate()
            process.wait(10)
            process.stdout.close()


def test_the_kubernetes_configuration_starts_a_ready_gateway(tmp_path, redis_with_password):
    """The ConfigMaps as mounted, the Secret's values in the environment, and the
    state store URL as the manifest writes it (password and all), against a
    real redis-server asking for that password."""
    redis_port, _ = redis_with_password
    cluster = Cluster([doc for _, doc in manifests()])
    _, pod, gateway = gateway_pod(cluster)
    values = container_env(cluster, gateway)
    state = urlsplit(values["GATEWAY_STATE_URL"])
    values["GATEWAY_STATE_URL"] = state._replace(netloc=state.netloc.replace(f"{state.hostname}:{state.port}",
                                                                              f"127.0.0.1:{redis_port}")).geturl()
    values["GATEWAY_MAPPINGS"] = str(configmap_files(cluster, pod, gateway, "GATEWAY_MAPPINGS", tmp_path))
    values["GATEWAY_CONNECTIONS"] = str(configmap_files(cluster, pod, gateway, "GATEWAY_CONNECTIONS", tmp_path))
    server = clean_server(["serve"], values, health="/healthz")
    try:
        ready = httpx.get(server.url + "/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["state_store"] == "ok"
        assert body["connections"] == len(yaml.safe_load(Path(values["GATEWAY_CONNECTIONS"]).read_text())["connections"])
        mapped = {yaml.safe_load(f.read_text())["provider"] for f in Path(values["GATEWAY_MAPPINGS"]).glob("*.yaml")}
        assert mapped <= set(body["providers"])
        # The app's key, as the app container gets it, is one the gateway takes.
        [app] = pod["containers"]
        key = container_env(cluster, app)["PANORA_API_KEY"]
        for sent, code in ((key, "invalid_connection_token"), (key + "x", "invalid_api_key")):
            refused = httpx.get(server.url + "/accounting/contacts", headers={"x-api-key": sent, "x-connection-token": "none"})
            assert refused.status_code == 401 and refused.json()["code"] == code, refused.text
    finally:
        log = server.stop()
    secrets = [v for (kind, name), _ in cluster.objects.items() if kind == "Secret" for v in cluster.values(kind, name).values()]
    assert not [s for s in secrets if s in log]


# -- Compose -------------------------------------------------------------------------

COMPOSE = DEPLOY / "compose.yaml"


def dotenv(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation of every value: $$, $VAR, ${VAR}, ${VAR:?error}, ${VAR:-default}."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        if match[0] == "$$":
            return "$"
        name, how, fallback = match["braced"] or match["bare"], match["how"], match["fallback"]
        if name in env and (env[name] or not (how or "").startswith(":")):
            return env[name]
        assert how and how.endswith("-"), f"{COMPOSE.name} needs {name}, which {COMPOSE.parent.name}/example.env lacks"
        return fallback
    return re.sub(r"\$\$|\$\{(?P<braced>\w+)(?:(?P<how>:?[-?])(?P<fallback>[^}]*))?\}|\$(?P<bare>\w+)", one, value)


def compose() -> dict:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), dotenv(DEPLOY / "example.env"))


def check_compose(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_the_compose_file_is_valid_for_the_compose_specification(tmp_path):
    done = check_compose(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr
    # The schema refuses what Compose would: a misspelt key.
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("depends_on:", "depend_on:"))
    assert check_compose(broken).returncode != 0


def test_the_compose_services_fit_together():
    services = compose()["services"]
    gateway, redis, app = services["gateway"], services["redis"], services["app"]
    assert (COMPOSE.parent / gateway["build"]["context"]).resolve() == ROOT
    assert (ROOT / gateway["build"].get("dockerfile", "Dockerfile")).exists()
    image_port = int(option(exec_form(STAGES[-1].one("CMD")), "--port"))
    uid = STAGES[-1].one("USER").args.partition(":")[0]
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on {needed}, which is not a service"
    for service in (gateway, redis):
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert service["user"].partition(":")[0] != "0"
    assert gateway["user"].partition(":")[0] == uid
    # The app waits for the image's HEALTHCHECK, and calls the gateway where it serves.
    assert app["depends_on"]["gateway"]["condition"] == "service_healthy"
    server = urlsplit(app["environment"]["PANORA_SERVER_URL"])
    assert (server.hostname, server.port) == ("gateway", image_port)
    assert app["environment"]["PANORA_API_KEY"] in gateway["environment"]["GATEWAY_API_KEYS"].split(",")
    # One state store, on a volume: the refresh tokens rotate.
    state = urlsplit(gateway["environment"]["GATEWAY_STATE_URL"])
    assert state.scheme == "redis" and state.hostname == "redis" and state.port == 6379
    assert any(v.endswith(":/data") for v in redis["volumes"]) and "--appendonly" in redis["command"]
    # The connections file is mounted where GATEWAY_CONNECTIONS says, and reads only what the gateway is given.
    [config] = gateway["configs"]
    assert config["target"] == gateway["environment"]["GATEWAY_CONNECTIONS"]
    content = compose()["configs"][config["source"]]["content"]
    missing = set(re.findall(r"\$\{(\w+)\}", content)) - set(gateway["environment"])
    assert not missing, f"the connections file reads {sorted(missing)}, which the gateway's environment lacks"


def test_the_compose_configuration_starts_a_ready_gateway(tmp_path, redis_url):
    spec = compose()
    gateway = spec["services"]["gateway"]
    env = {k: str(v) for k, v in gateway["environment"].items()}
    [config] = gateway["configs"]
    connections = tmp_path / Path(config["target"]).name
    connections.write_text(spec["configs"][config["source"]]["content"])
    env["GATEWAY_CONNECTIONS"] = str(connections)
    env["GATEWAY_STATE_URL"] = redis_url  # the compose network's redis, here on loopback
    server = clean_server(["serve"], env, health="/healthz")
    try:
        ready = httpx.get(server.url + "/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["connections"] == 1, ready.text
        app = spec["services"]["app"]["environment"]
        refused = httpx.get(server.url + "/accounting/contacts",
                            headers={"x-api-key": app["PANORA_API_KEY"], "x-connection-token": "none"})
        assert refused.status_code == 401 and refused.json()["code"] == "invalid_connection_token", refused.text
    finally:
        server.stop()
