"""`gateway serve`, `gateway check` and `gateway sandbox`."""

import argparse
import gc
import os
import signal
import socket
import sys
from importlib.metadata import version
from pathlib import Path

from . import coverage, examples, logs, mapping
from .settings import ConfigError
from .settings import bundled_mappings


LOG_LEVELS = ["critical", "error", "warning", "info", "debug"]


def _serve(args: argparse.Namespace) -> int:
    # A reload asked for while starting would end the process (SIGHUP's default): until the
    # runtime (or the supervisor) takes SIGHUP over, the files it loads are the latest.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from . import server, workers
    from .app import create_app
    from .settings import from_environ

    if args.workers > 1 and args.listen_fd is None:
        return workers.supervise(args.workers, args.host, args.port, _worker_args(args), args.graceful_timeout)
    sock = parent = None
    if args.listen_fd is not None:  # a worker: its supervisor passes SIGHUP on
        sock, parent = socket.socket(fileno=args.listen_fd), os.getppid()
    try:
        settings = from_environ()
        app = create_app(settings, metrics_dir=args.metrics_dir)
    except (ConfigError, mapping.MappingError) as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return 2
    # The compiled mappings live as long as the process: move them out of the
    # collector's sight, and collect young objects less often. Requests make
    # few reference cycles, and the default thresholds' pauses were most of
    # the p99 at concurrency 32 (README, "Benchmark").
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    # Until the server takes SIGTERM over (graceful shutdown), it just ends the process, successfully.
    signal.signal(signal.SIGTERM, _exit_ok)
    server.run(app, args.host, args.port, max_body_bytes=settings.max_body_bytes, graceful_timeout=args.graceful_timeout,
               keep_alive=args.keep_alive, request_timeout=args.request_timeout, send_timeout=args.send_timeout,
               access_log=args.access_log, sock=sock, parent=parent)
    return 0


def _worker_args(args: argparse.Namespace) -> list[str]:
    """`gateway serve`'s options as a worker of the supervisor gets them."""
    return ["--host", args.host, "--port", str(args.port), "--log-level", args.log_level, "--log-format", args.log_format,
            "--access-log" if args.access_log else "--no-access-log", "--graceful-timeout", str(args.graceful_timeout),
            "--keep-alive", str(args.keep_alive), "--request-timeout", str(args.request_timeout),
            "--send-timeout", str(args.send_timeout)]


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default shown, and the environment's settings as written."""


def _workers(value: str) -> int:
    from .workers import count

    try:
        return count(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of at least 1, or auto, not {value!r}") from None


def _exit_ok(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _mapping_files(paths: list[str]) -> list[Path]:
    roots = [Path(p) for p in paths] or [bundled_mappings()]
    return [f for p in roots for f in (sorted(p.glob("*.yaml")) if p.is_dir() else [p])]


def _check(args: argparse.Namespace) -> int:
    files = _mapping_files(args.paths)
    if not files:
        print("gateway check: no mapping files found", file=sys.stderr)
        return 2
    failed = 0
    for path in files:
        try:
            provider = mapping.load(path)
        except mapping.MappingError as exc:
            print(f"FAIL {exc}")
            failed += 1
            continue
        ops = sum(len(o.operations) for o in provider.objects.values())
        # A translation is shown right by an example from the provider's own documentation.
        unshown = [op.key for o in provider.objects.values() for alternatives in o.operations.values()
                   for op in alternatives if not op.spec.examples]
        if unshown:
            for key in unshown:
                print(f"FAIL {path}: {key}: no worked example; add one from {provider.name}'s documentation under `examples`")
            failed += 1
            continue
        line = f"ok   {path}: provider {provider.name}, {len(provider.objects)} object(s), {ops} operation(s)"
        if args.examples:
            ran, failures = examples.check(provider)
            for failure in failures:
                print(f"FAIL {failure}")
            if failures:
                failed += 1
                continue
            line += f", {ran} example(s) passed"
        print(line)
        for warning in provider.warnings:
            print(f"warn {path}: {warning}")
    return 1 if failed else 0


def _schema(args: argparse.Namespace) -> int:
    print(mapping.json_schema())
    return 0


def _coverage(args: argparse.Namespace) -> int:
    try:
        providers = [mapping.load(path) for path in _mapping_files(args.paths)]
    except mapping.MappingError as exc:
        print(f"gateway coverage: {exc}", file=sys.stderr)
        return 1
    matrix = coverage.markdown(providers)
    if args.write is None:
        print(matrix)
        return 0
    try:
        coverage.write(args.write, matrix)
    except (OSError, ValueError) as exc:
        print(f"gateway coverage: {exc}", file=sys.stderr)
        return 1
    print(f"{args.write}: coverage matrix rewritten")
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from . import sandbox, server
    from .settings import DEFAULT_MAX_BODY_BYTES

    signal.signal(signal.SIGTERM, _exit_ok)
    server.run(sandbox.create_app(), args.host, args.port, max_body_bytes=DEFAULT_MAX_BODY_BYTES, graceful_timeout=5.0)
    return 0


_ENVIRONMENT = """\
settings from the environment:
  GATEWAY_API_KEYS        comma-separated API keys clients send as x-api-key
  GATEWAY_CONNECTIONS     the connections file (unset: the embedded demo sandbox)
  GATEWAY_MAPPINGS        directories of mapping files added to the bundled ones, ':'-separated
  GATEWAY_STATE_URL       the state store: sqlite:///path or redis://host:port/db
                          (unset: $XDG_STATE_HOME/gateway/state.sqlite3)
  GATEWAY_CURSOR_SECRET   signs list cursors; the same on every instance
  GATEWAY_MAX_BODY_BYTES  the largest request body (default 1048576)
"""


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # Output piped into `head` and the like: its reader left; nothing is wrong.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description="Panora-compatible accounting gateway")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('gateway')}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway (settings from GATEWAY_* environment variables)",
                                epilog=_ENVIRONMENT, formatter_class=_Help)
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000, help="the port to listen on")
    serve.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="the least severe log lines kept")
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                       help="a log line for every request")
    serve.add_argument("--log-format", default="json", choices=["json", "text"],
                       help="JSON lines for log collectors, or text for people")
    serve.add_argument("--graceful-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="on SIGTERM, how long calls under way may take to finish before they are cancelled")
    serve.add_argument("--keep-alive", type=float, default=5.0, metavar="SECONDS",
                       help="close a client connection idle this long (behind a load balancer, keep it above the balancer's idle timeout)")
    serve.add_argument("--request-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="answer 408 to a request that has not arrived whole this long after its first byte")
    serve.add_argument("--send-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="close a client connection that has left its answers unread this long")
    serve.add_argument("--workers", type=_workers, default=1, metavar="N",
                       help="processes serving the port, each the whole gateway; `auto`: one per core")
    # A worker's, from its supervisor (gateway/workers.py).
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--metrics-dir", type=Path, help=argparse.SUPPRESS)
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check", help="load and compile mapping files; exit non-zero on any error")
    check.add_argument("paths", nargs="*", help="mapping files or directories (default: the bundled mappings)")
    check.add_argument("--examples", action="store_true", help="also run the examples inside the mapping files")
    check.set_defaults(run=_check)

    schema = commands.add_parser("schema", help="print the JSON Schema of a mapping file (for editors)")
    schema.set_defaults(run=_schema)

    cover = commands.add_parser("coverage", help="print, per provider, the unified operations and fields mapped")
    cover.add_argument("paths", nargs="*", help="mapping files or directories (default: the bundled mappings)")
    cover.add_argument("--write", type=Path, metavar="FILE",
                       help="rewrite the matrix between FILE's coverage markers instead of printing it")
    cover.set_defaults(run=_coverage)

    box = commands.add_parser("sandbox", help="run the fake Formation API alone (for tests and benchmarks)")
    box.add_argument("--host", default="127.0.0.1")
    box.add_argument("--port", type=int, default=8100)
    box.add_argument("--log-level", default="warning", choices=LOG_LEVELS)
    box.set_defaults(run=_sandbox)

    args = parser.parse_args(argv)
    logs.configure(getattr(args, "log_level", "info"), getattr(args, "log_format", "text"))
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
