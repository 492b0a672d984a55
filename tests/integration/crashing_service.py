"""A service whose container dies on purpose (tests/integration/test_resilience.py): a
dependency provider that raises in `worker_setup`, which nameko answers by killing the
container while the process lives on."""

from __future__ import annotations

from typing import Any

from nameko.extensions import DependencyProvider

from shared import topology
from shared.nameko_ext import GridbusService, consume_reliably


class Boom(DependencyProvider):
    def worker_setup(self, worker_ctx: Any) -> None:
        if worker_ctx.args and isinstance(worker_ctx.args[0], dict) and worker_ctx.args[0].get("crash"):
            raise RuntimeError("worker_setup failed: the container dies")


class CrashingService(GridbusService):
    name = "router"
    boom = Boom()

    @consume_reliably(topology.Q_ROUTER_CASES)
    def route_case(self, body: Any) -> None:
        if body.get("bug"):
            raise KeyError("a bug in the handler")
