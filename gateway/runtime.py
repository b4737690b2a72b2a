"""What the gateway serves with, and live reload.

A `Snapshot` is the compiled mappings and the connections, built whole and
never changed. `Runtime.current` is swapped for a new one atomically (one
assignment) when a mapping file or the connections file changes, or on
SIGHUP; a request keeps the connection, and so the mapping, it resolved when
it arrived. A new set is validated in full before it serves: a broken edit is
refused with the file, key and reason, and the last good set keeps serving.
Connections that did not change keep their state (tokens, breaker, calls
under way), handed over by connections.load.
"""

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from . import logs
from .connections import Connections
from .mapping import MappingError, Provider
from .settings import ConfigError

log = logging.getLogger("gateway")

POLL_SECONDS = 0.5  # how often the files are looked at: an edit serves within a second


class Snapshot:
    __slots__ = ("providers", "connections")

    def __init__(self, providers: dict[str, Provider], connections: Connections):
        self.providers = providers
        self.connections = connections


# Builds a snapshot, handing over the state of the previous one's unchanged connections.
Build = Callable[[Snapshot | None], Snapshot]


class Runtime:
    def __init__(self, build: Build, watched: Callable[[], list[Path]]):
        self.build = build
        self.watched = watched  # the files a change of which is a reload: mapping files, the connections file
        self.current = build(None)
        self.seen = self._stamps()
        self.reloads = self.refused = 0
        self._asked: asyncio.Event | None = None

    def _stamps(self) -> dict[Path, tuple[int, int]]:
        stamps = {}
        for path in self.watched():
            try:
                stat = path.stat()
            except OSError:
                continue  # removed: its absence is the change
            stamps[path] = (stat.st_mtime_ns, stat.st_size)
        return stamps

    def reload(self, why: str) -> bool:
        """Build a new snapshot and swap it in; on any mistake keep the current one."""
        self.seen = self._stamps()
        try:
            fresh = self.build(self.current)
        except (ConfigError, MappingError) as exc:
            self.refused += 1
            log.error("reload (%s) refused, the last good configuration keeps serving: %s", why, exc,
                      extra=logs.event("reload_refused"))
            return False
        self.current = fresh
        self.reloads += 1
        log.info("reloaded (%s): %d provider mapping(s) (%s), %d connection(s)", why, len(fresh.providers),
                 ", ".join(sorted(fresh.providers)), len(fresh.connections), extra=logs.event("reloaded"))
        return True

    async def watch(self) -> None:
        """Reload when a watched file changes, or on SIGHUP, until cancelled."""
        self._asked = asyncio.Event()
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, self._asked.set)
        except (ValueError, RuntimeError, NotImplementedError):
            pass  # not the main thread (an app served in a test's thread): the files are still watched
        try:
            while True:
                try:
                    await asyncio.wait_for(self._asked.wait(), POLL_SECONDS)
                except TimeoutError:
                    pass
                if self._asked.is_set():
                    self._asked.clear()
                    self.reload("SIGHUP")
                elif self._stamps() != self.seen:
                    self.reload("files changed")
        finally:
            try:
                loop.remove_signal_handler(signal.SIGHUP)
            except (ValueError, RuntimeError, NotImplementedError):
                pass


def mapping_files(directories: list[Path]) -> list[Path]:
    files = []
    for directory in directories:
        try:
            files += sorted(p for p in directory.iterdir() if p.suffix == ".yaml")
        except OSError:
            files.append(directory)  # gone: watched as a path whose absence is the change
    return files
