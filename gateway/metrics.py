"""`GET /metrics`: what the gateway does, in Prometheus' exposition format
(written by the official prometheus-client).

The request path only adds to plain Python numbers, kept per label set in
dicts: a counter is `+= 1`, a histogram a `bisect` and two additions, some
7,000 instructions a request in all (callgrind). prometheus-client's own
metric objects, their labelled children bound in advance, cost 24,000 for
the same three updates (a lock each), 45,000 in its multiprocess mode (a
getpid() system call and an mmap write each). What is a state rather than an
event (calls under way, circuits, reloads) is read when scraped, at no cost
to requests.

Labels stay bounded: providers, unified objects and operations are the
mappings'; anything else a client sends counts as `other`; statuses are the
gateway's own; connection names are the connections file's.

Several workers (`gateway serve --workers N`, gateway/workers.py): each
writes its figures to a file of its own in a directory private to the
supervisor, every second and when it stops, and a scrape answered by any
worker adds up its own live figures and the others' files. Counters and
histograms of a worker that has exited stay in the sums; its gauges do not.
"""

import asyncio
import contextlib
import logging
import os
import time
from bisect import bisect_left
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from .models import OBJECTS

log = logging.getLogger("gateway")

CONTENT_TYPE = CONTENT_TYPE_LATEST
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SHARE_SECONDS = 1.0  # how often a worker writes its figures for the others' scrapes


class Family(NamedTuple):
    name: str
    kind: str  # counter, gauge, histogram
    help: str
    labels: tuple[str, ...]
    merge: str = "sum"  # over workers: sum, or max (a gauge)


FAMILIES = {f.name: f for f in (
    Family("gateway_requests", "counter", "Calls to the unified API answered, by provider, object, operation and "
           "HTTP status (provider none: refused before a connection was known)",
           ("provider", "object", "operation", "status")),
    Family("gateway_request_duration_seconds", "histogram", "Time the gateway took to answer a call to the unified API",
           ("provider", "object", "operation")),
    Family("gateway_upstream_duration_seconds", "histogram", "Time a call to a provider took, its retries included",
           ("provider",)),
    Family("gateway_upstream_retries", "counter", "Calls to providers sent again: after a timeout, an unreachable "
           "provider, a 429 or 503 (throttled), a 5xx, or a 401 (auth: new tokens)", ("provider", "reason")),
    Family("gateway_upstream_in_flight", "gauge", "Calls to providers under way, per connection",
           ("connection", "provider")),
    Family("gateway_circuit_state", "gauge", "A connection's circuit breaker: 0 closed, 1 open, 2 half-open (a probe "
           "is out); with several workers, the most open of theirs", ("connection", "provider"), "max"),
    Family("gateway_circuit_openings", "counter", "Times a connection's circuit breaker opened", ("connection",)),
    Family("gateway_token_refreshes", "counter", "OAuth2 token refreshes, by outcome: ok, refused (the customer must "
           "authorize again) or failed (the token endpoint failed)", ("connection", "provider", "outcome")),
    Family("gateway_idempotency_replays", "counter", "Creates answered from an earlier answer under the same "
           "Idempotency-Key", ()),
    Family("gateway_reloads", "counter", "Reloads of the mappings and connections: applied, or refused (the last good "
           "configuration kept serving)", ("outcome",)),
)}

# Per family: label values -> a number, or a histogram's [bucket counts, sum].
State = dict[str, dict[tuple[str, ...], Any]]


class Histogram:
    """Counts per bucket (the last: above every bound, +Inf) and their sum; the
    request path adds to them in place, as a method call would cost as much again."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0


class _Served(Histogram):
    """One (provider, object, operation): its answers by status, and their times."""

    __slots__ = ("labels", "statuses")

    def __init__(self, labels: tuple[str, str, str]):
        super().__init__()
        self.labels = labels
        self.statuses: dict[int, int] = {}


# The process's figures. Keys are bounded: see the module's docstring.
_served: dict[tuple, _Served] = {}  # (provider, object, method, with an id): each key's own series
_by_labels: dict[tuple[str, str, str], _Served] = {}
_upstream: dict[str, Histogram] = {}
_counters: dict[str, dict[tuple[str, ...], int]] = {
    "gateway_upstream_retries": {}, "gateway_circuit_openings": {}, "gateway_token_refreshes": {},
    "gateway_idempotency_replays": {},
}

_OPERATIONS = {("GET", False): "list", ("HEAD", False): "list", ("POST", False): "create", ("GET", True): "retrieve",
               ("HEAD", True): "retrieve"}


# -- the request path's hooks -------------------------------------------------------


def served(call, conn, status: int, started: float) -> None:
    """A call to the unified API answered (`conn`: None when refused before one was known)."""
    elapsed = time.monotonic() - started
    # A path deeper than a record's is no operation: `other`, like an unknown object.
    key = (conn.provider.name if conn is not None else "none", call.object, call.method,
           None if call.nested else call.id != "")
    series = _served.get(key) or _series(key)
    try:
        series.statuses[status] += 1
    except KeyError:
        series.statuses[status] = 1
    series.counts[bisect_left(BUCKETS, elapsed)] += 1
    series.sum += elapsed


def _series(key: tuple[str, str, str, bool | None]) -> _Served:
    provider, obj, method, has_id = key
    if obj not in OBJECTS:
        obj = "other"
    labels = (provider, obj, _OPERATIONS.get((method, has_id), "other"))
    series = _by_labels.get(labels) or _by_labels.setdefault(labels, _Served(labels))
    if obj == key[1]:  # an object a client made up is never a key: it counts as `other` each time
        _served[key] = series
    return series


def upstream(provider: str, elapsed: float) -> None:
    """A call to a provider ended, answered or not, after `elapsed` seconds."""
    histogram = _upstream.get(provider) or _upstream.setdefault(provider, Histogram())
    histogram.counts[bisect_left(BUCKETS, elapsed)] += 1
    histogram.sum += elapsed


def count(family: str, *labels: str) -> None:
    """An event: a call retried, a circuit opened, a token refreshed, a create replayed."""
    series = _counters[family]
    series[labels] = series.get(labels, 0) + 1


# -- scrapes --------------------------------------------------------------------------


def gather(runtime) -> State:
    """This process's figures now."""
    state: State = {name: {} for name in FAMILIES}
    requests, durations = state["gateway_requests"], state["gateway_request_duration_seconds"]
    for series in list(_by_labels.values()):
        for status, n in series.statuses.items():
            requests[(*series.labels, str(status))] = n
        durations[series.labels] = [list(series.counts), series.sum]
    state["gateway_upstream_duration_seconds"] = {(p, ): [list(h.counts), h.sum] for p, h in _upstream.items()}
    for name, series in _counters.items():
        state[name] = dict(series)
    in_flight, circuits = state["gateway_upstream_in_flight"], state["gateway_circuit_state"]
    for conn in runtime.current.connections:
        labels = (conn.name, conn.provider.name)
        in_flight[labels] = conn.state.in_flight
        breaker = conn.state.breaker
        circuits[labels] = 0 if breaker.opened_at is None else 2 if breaker.probe_at is not None else 1
    state["gateway_reloads"] = {("applied",): runtime.reloads, ("refused",): runtime.refused}
    return state


def merge(states: list[tuple[State, bool]]) -> State:
    """Workers' figures added up; each with whether its worker still runs (else its gauges drop out)."""
    total: State = {name: {} for name in FAMILIES}
    for state, alive in states:
        for name, series in state.items():
            family = FAMILIES.get(name)
            if family is None or (family.kind == "gauge" and not alive):
                continue
            into = total[name]
            for labels, value in series.items():
                labels = tuple(labels)
                held = into.get(labels)
                if held is None:
                    into[labels] = [list(value[0]), value[1]] if family.kind == "histogram" else value
                elif family.kind == "histogram":
                    held[0] = [a + b for a, b in zip(held[0], value[0])]
                    held[1] += value[1]
                else:
                    into[labels] = max(held, value) if family.merge == "max" else held + value
    return total


class _Families:
    """The prometheus-client collector of one scrape's figures."""

    def __init__(self, state: State):
        self.state = state

    def collect(self) -> list[Metric]:
        out: list[Metric] = []
        for name, family in FAMILIES.items():
            labels = list(family.labels)
            series = self.state.get(name, {})
            if family.kind == "histogram":
                metric = HistogramMetricFamily(name, family.help, labels=labels)
                for values, (counts, total) in sorted(series.items()):
                    running, buckets = 0, []
                    for bound, n in zip((*map(str, BUCKETS), "+Inf"), counts):
                        running += n
                        buckets.append((bound, running))
                    metric.add_metric(list(values), buckets, total)
            else:
                kind = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
                metric = kind(name, family.help, labels=labels)
                for values, value in sorted(series.items()):
                    metric.add_metric(list(values), value)
            out.append(metric)
        return out


_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.Decoder(dict[str, list[tuple[list[str], Any]]]).decode


class Metrics:
    """The figures of this process, and with several workers of its siblings in `shared`."""

    def __init__(self, runtime, shared: Path | None = None):
        self.runtime = runtime
        self.shared = shared
        self.mine = shared / f"{os.getpid()}.msgpack" if shared else None

    def exposition(self) -> bytes:
        state = gather(self.runtime)
        if self.shared is not None:
            state = merge([(state, True), *self._siblings()])
        return generate_latest(_Families(state))

    def _siblings(self) -> list[tuple[State, bool]]:
        found = []
        for path in self.shared.glob("*.msgpack"):
            if path == self.mine:
                continue
            with contextlib.suppress(OSError, msgspec.DecodeError, ValueError):
                raw = _decode(path.read_bytes())
                found.append(({name: {tuple(k): v for k, v in series} for name, series in raw.items()},
                              _alive(int(path.stem))))
        return found

    def write(self) -> None:
        """This worker's figures, for the other workers' scrapes (replaced whole: a reader never sees half).
        A write that fails is said, and the next tries again: the others' sums miss it meanwhile."""
        state = gather(self.runtime)
        data = _encode({name: list(series.items()) for name, series in state.items()})
        partial = self.mine.with_suffix(".partial")
        try:
            partial.write_bytes(data)
            os.replace(partial, self.mine)
        except OSError as exc:
            log.warning("metrics: cannot share this worker's figures with the others: %s", exc)

    async def share(self) -> None:
        """Write this worker's figures every SHARE_SECONDS until cancelled, and once more then."""
        if self.shared is None:
            return
        try:
            while True:
                self.write()
                await asyncio.sleep(SHARE_SECONDS)
        finally:
            self.write()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True  # PermissionError too: it is there
