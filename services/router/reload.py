"""Live reload of the routing tree: on SIGHUP or when routes.yaml changes on disk.

The new file is loaded and validated completely before it replaces the tree in one
assignment, so a route decision sees either the old tree or the new one, never a mix.
An invalid file keeps the old tree, is logged with file, line and field, and shows as
`gridbus_routes_config_valid 0` until a valid file is loaded.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

import structlog

from services.router.tree import RoutingTree
from shared import metrics
from shared.configfiles import ConfigError

log = structlog.get_logger("gridbus.router.reload")

_requested = threading.Event()


def request_reload() -> None:
    """Called from the SIGHUP handler: only sets a flag (no work in a signal handler)."""
    _requested.set()


class TreeReloader:
    def __init__(self, path: Path, load: Callable[[Path], RoutingTree], install: Callable[[RoutingTree], None]) -> None:
        self.path = path
        self.load = load
        self.install = install
        self._seen = self._stamp()

    def _stamp(self) -> tuple[float, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_mtime, st.st_size

    def check(self) -> str | None:
        """Reload if asked to or if the file changed; returns the outcome, None if idle."""
        stamp = self._stamp()
        if not _requested.is_set() and stamp == self._seen:
            return None
        _requested.clear()
        self._seen = stamp
        try:
            tree = self.load(self.path)
        except (ConfigError, OSError, ValueError) as exc:
            log.error("routes_reload_failed", file=str(self.path), error=str(exc))
            metrics.ROUTES_RELOADS.labels("invalid").inc()
            metrics.ROUTES_CONFIG_VALID.set(0)
            return "invalid"
        self.install(tree)
        metrics.ROUTES_RELOADS.labels("loaded").inc()
        metrics.ROUTES_CONFIG_VALID.set(1)
        log.info("routes_reloaded", file=str(self.path))
        return "loaded"
