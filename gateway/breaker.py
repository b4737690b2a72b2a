"""A circuit breaker: stop calling a provider that keeps failing, for a while.

One per connection (its `ConnectionState`), so one customer's failing
credentials or account never pauses another customer's calls."""

import logging
import time

from . import logs, metrics
from .mapping import BreakerSpec

log = logging.getLogger("gateway")


class Breaker:
    """Closed until `failures` failed calls in a row; then open (fail fast) for
    `reset_after` seconds; then half-open: one probe decides."""

    __slots__ = ("spec", "name", "failures", "opened_at", "probe_at")

    def __init__(self, spec: BreakerSpec, name: str):
        self.spec = spec
        self.name = name  # the connection's, for the log
        self.failures = 0
        self.opened_at: float | None = None
        self.probe_at: float | None = None  # when the half-open probe went out

    def retry_after(self) -> float | None:
        """None: the call may go. Otherwise seconds until a probe may."""
        if self.opened_at is None:
            return None
        now = time.monotonic()
        waited = now - self.opened_at
        if waited < self.spec.reset_after:
            return self.spec.reset_after - waited
        # A probe that never reported back (cancelled) must not hold the circuit open.
        if self.probe_at is not None and now - self.probe_at < self.spec.reset_after:
            return 1.0
        self.probe_at = now
        return None

    def succeeded(self) -> None:
        if self.opened_at is not None:
            log.info("%s: circuit closed, the probe succeeded", self.name, extra=logs.event("circuit_closed", connection=self.name))
        self.failures = 0
        self.opened_at = None
        self.probe_at = None

    def failed(self) -> None:
        self.failures += 1
        if self.probe_at is not None or self.failures >= self.spec.failures:
            log.warning("%s: circuit open after %d failed call(s) in a row; calls are paused for %g s",
                        self.name, self.failures, self.spec.reset_after, extra=logs.event("circuit_open", connection=self.name))
            self.opened_at = time.monotonic()
            metrics.count("gateway_circuit_openings", self.name)
        self.probe_at = None
