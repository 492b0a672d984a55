"""router: the nameko shell around dispatch.py."""

from __future__ import annotations

from typing import Any

import structlog
from nameko.extensions import DependencyProvider
from nameko.timer import timer

from services.router.compiler import load_routing_tree
from services.router.dispatch import Dispatcher, withdrawal_routing_key
from services.router.reload import TreeReloader
from shared import metrics, topology
from shared.bus import Outgoing
from shared.catalog import load_catalog
from shared.config import get_settings
from shared.departments import GRID_STATION
from shared.models import DispatchWithdrawn
from shared.nameko_ext import GridbusService, Rejected, consume_reliably, event_or_reject
from shared.policies import load_policies
from shared.worktime import load_calendar

log = structlog.get_logger("gridbus.router")


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
        event = event_or_reject(body)
        if isinstance(event, DispatchWithdrawn):
            # intake closed the order; the department hears it on its own queue
            self.bus.publish_batch(
                [
                    Outgoing(
                        topology.EX_DISPATCH,
                        withdrawal_routing_key(event),
                        event,
                        event.message_id,
                        event.correlation_id,
                        kind="dispatch_withdrawn",
                    )
                ]
            )
            log.info(
                "order_withdrawn", case_id=event.case_id, order_id=event.order_id, dept=event.dept, round=event.round_no
            )
            return
        plan = self.routing.dispatcher.plan_event(event, max_rejections=get_settings().max_rejections)
        if plan is None:
            raise Rejected(f"router does not handle {type(event).__name__}", "invalid_event")
        # Orders first (one channel keeps the order): once case_dispatched is out, deadlines
        # run, so the orders must be queued. One confirm round trip for the whole batch.
        batch = [Outgoing(topology.EX_DISPATCH, key, order, kind="dispatch_order") for key, order in plan.orders]
        batch.append(Outgoing.event(plan.dispatched))
        if plan.unroutable is not None:
            batch.append(Outgoing.event(plan.unroutable))
        self.bus.publish_batch(batch)
        for _, order in plan.orders:
            metrics.CASES_DISPATCHED.labels(order.dept, order.street).inc()
        if plan.unroutable is not None:
            metrics.CASES_UNROUTABLE.labels(event.case.street).inc()
        log.info(
            "case_routed",
            case_id=event.case_id,
            round=plan.dispatched.round_no,
            disputed=plan.dispatched.disputed,
            receivers=[f"{o.dept}@L{o.level}:{o.route}" for _, o in plan.orders],
            triage=any(o.dept == GRID_STATION for _, o in plan.orders),
        )
