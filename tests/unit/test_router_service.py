"""The router's entrypoint without a broker (nameko.testing.worker_factory): the real
routing tree, catalog, policies and calendar; the bus records what would be published."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from nameko.testing.services import worker_factory

from services.router.compiler import load_routing_tree
from services.router.dispatch import Dispatcher
from services.router.service import RouterService
from shared.catalog import load_catalog
from shared.models import CaseRegistered, CaseSummary
from shared.policies import load_policies
from shared.worktime import load_calendar


class RecordingBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, str, Any]] = []

    def publish(self, exchange: str, routing_key: str, body: Any, **_: Any) -> None:
        self.published.append((exchange, routing_key, body))

    def publish_event(self, event: Any) -> None:
        self.published.append(("gridbus.events", event.event, event))

    def publish_batch(self, messages: list[Any]) -> None:
        for m in messages:
            self.published.append((m.exchange, m.routing_key, m.body))


@pytest.fixture(scope="module")
def routing() -> SimpleNamespace:
    catalog = load_catalog()
    return SimpleNamespace(
        dispatcher=Dispatcher(load_routing_tree(catalog=catalog), catalog, load_policies(), load_calendar())
    )


def registered(category: str, attributes: dict[str, str] | None = None) -> dict[str, Any]:
    return CaseRegistered(
        case_id="450305-20261127-000123",
        correlation_id="r-1",
        case=CaseSummary(
            category=category,
            severity="normal",
            grid="450305001001001",
            street="450305001",
            attributes=attributes or {},
            registered_at=datetime(2026, 11, 27, 2, tzinfo=timezone.utc),
        ),
    ).model_dump(mode="json")


def test_orders_go_out_before_the_dispatched_event(routing: SimpleNamespace) -> None:
    bus = RecordingBus()
    service = worker_factory(RouterService, bus=bus, routing=routing)
    service.route_case(registered("01037"))
    kinds = [(ex, key) for ex, key, _ in bus.published]
    assert kinds == [("gridbus.dispatch", "dept.lighting.450305001"), ("gridbus.events", "case.dispatched")]
    order = bus.published[0][2]
    assert order.order_id == "450305-20261127-000123/1/lighting"
    assert order.ack_due is not None and order.handle_due > order.ack_due


def test_joint_dispatch_gives_each_department_its_own_order(routing: SimpleNamespace) -> None:
    bus = RecordingBus()
    service = worker_factory(RouterService, bus=bus, routing=routing)
    service.route_case(registered("09999"))  # illegal gas sales: joint enforcement
    orders = [body for ex, _, body in bus.published if ex == "gridbus.dispatch"]
    assert {o.dept for o in orders} >= {"cityman", "market", "gas"}
    assert len({o.order_id for o in orders}) == len(orders)


def test_garbage_is_rejected_not_raised_blindly(routing: SimpleNamespace) -> None:
    from shared.nameko_ext import Rejected

    service = worker_factory(RouterService, bus=RecordingBus(), routing=routing)
    with pytest.raises(Rejected):
        service.route_case({"event": "case_registered", "case_id": 1})


def test_the_dispatch_time_comes_from_the_injected_clock() -> None:
    # a Friday morning in Guilin: the lighting policy's working-time limits fall on that day
    friday = datetime(2026, 11, 27, 1, 0, tzinfo=timezone.utc)  # 09:00 CST
    catalog, calendar, policies = load_catalog(), load_calendar(), load_policies()
    dispatcher = Dispatcher(load_routing_tree(catalog=catalog), catalog, policies, calendar, clock=lambda: friday)
    bus = RecordingBus()
    worker_factory(RouterService, bus=bus, routing=SimpleNamespace(dispatcher=dispatcher)).route_case(
        registered("01037")
    )
    order = bus.published[0][2]
    policy = policies.for_case("01037", None, "normal", order.sla_policy)
    assert order.occurred_at == friday
    assert order.ack_due == calendar.due(friday, policy.ack_limit)
    assert order.handle_due == calendar.due(friday, policy.handle_limit)
    dispatched = bus.published[-1][2]
    assert [a.dispatched_at for a in dispatched.assignments] == [friday]
