"""router: the nameko shell around dispatch.py."""

from __future__ import annotations

from typing import Any

from nameko.extensions import DependencyProvider
from nameko.timer import timer

from services.router.compiler import load_routing_tree
from services.router.dispatch import Dispatcher
from services.router.reload import TreeReloader
from services.router.routing import record, route
from shared import metrics, topology
from shared.catalog import load_catalog
from shared.config import get_settings
from shared.nameko_ext import GridbusService, consume_reliably
from shared.policies import load_policies
from shared.worktime import load_calendar


class DispatcherProvider(DependencyProvider):
    """Loads the tree, catalog, policies and calendar at start (a bad file stops
    start-up), and swaps in a new routing tree on SIGHUP or when routes.yaml changes."""

    def setup(self) -> None:
        catalog = load_catalog()
        routes = get_settings().config_dir / "routes.yaml"
        self.dispatcher = Dispatcher(
            load_routing_tree(routes, catalog=catalog), catalog, load_policies(), load_calendar()
        )
        self.reloader = TreeReloader(routes, lambda p: load_routing_tree(p, catalog=catalog), self._install)
        metrics.ROUTES_CONFIG_VALID.set(1)

    def _install(self, tree: Any) -> None:
        self.dispatcher.tree = tree  # one assignment: a decision sees the old or the new tree

    def get_dependency(self, worker_ctx: Any) -> "DispatcherProvider":
        return self


class RouterService(GridbusService):
    name = "router"

    routing: DispatcherProvider = DispatcherProvider()

    @timer(interval=1.0)
    def watch_routes(self) -> None:
        self.routing.reloader.check()

    @consume_reliably(topology.Q_ROUTER_CASES)
    def route_case(self, body: Any) -> None:
        routed = route(self.routing.dispatcher, body, get_settings().max_rejections)
        self.bus.publish_batch(routed.batch)  # one confirm round trip for the whole batch
        record(routed)
