"""A service with two reliable consumers whose handlers do nothing (tests/integration/
test_consumer_setup.py): a message is settled within microseconds of its delivery, which
is what a fast handler (a duplicate recognised with one Redis look-up) does in the stack."""

from __future__ import annotations

from typing import Any

from shared import topology
from shared.nameko_ext import GridbusService, consume_reliably

QUEUES = (topology.Q_ROUTER_CASES, topology.Q_SLA_EVENTS)


class TwoQueueService(GridbusService):
    name = "router"

    @consume_reliably(QUEUES[0])
    def first(self, body: Any) -> None:
        return None

    @consume_reliably(QUEUES[1])
    def second(self, body: Any) -> None:
        return None
