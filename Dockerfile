# The gateway's image: built in one stage, run from a slim one with nothing
# but the interpreter and a virtualenv. tests/test_deploy.py runs the builder's
# steps in a fresh virtualenv and serves from it, since CI has no container engine.

# Both stages on one image: the virtualenv links to that image's interpreter.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY mappings ./mappings
# A regular (not editable) install: the package and its bundled mappings are
# copied into the virtualenv, and pip compiles their bytecode now, since a
# read-only root filesystem leaves no place to write it at run time.
# pip and setuptools leave afterwards: the running image installs nothing.
RUN python -m venv /opt/gateway \
 && /opt/gateway/bin/pip install . \
 && /opt/gateway/bin/pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/gateway/bin:$PATH
# Compile the standard library's bytecode once here, for the same reason as
# the virtualenv's; and a user whose home is the state volume. The user is
# named by number below: Kubernetes' runAsNonRoot can verify only a numeric USER.
RUN python -m compileall -q -j 0 "$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')" \
 && groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/gateway --shell /usr/sbin/nologin gateway \
 && mkdir -p /var/lib/gateway && chown 10001:10001 /var/lib/gateway
COPY --from=builder /opt/gateway /opt/gateway

# The state store (rotated OAuth2 tokens, Idempotency-Key answers) must outlive
# the container: mount a volume here, or point GATEWAY_STATE_URL at Redis.
# Besides it, only /tmp may be written (with --workers, their shared metrics
# files): on a read-only root filesystem, give /tmp a tmpfs.
ENV GATEWAY_STATE_URL=sqlite:////var/lib/gateway/state.sqlite3
VOLUME /var/lib/gateway

USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
# Exec form, no shell and no init: the gateway is PID 1 and installs its own
# handlers (SIGTERM and SIGINT: graceful shutdown, exit 0; SIGHUP: reload), so
# the kernel's rule that PID 1 ignores signals it has no handler for does not
# bite. No init (tini) either: the gateway leaves no orphans behind (with
# --workers, its supervisor waits for every child). Only a `docker exec`'d
# command that leaves background children would orphan them to PID 1, as
# zombies until the container stops; if that is your habit, `docker run --init`.
CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]
