"""A service with two reliable consumers whose handlers do nothing (tests/integration/
test_consumer_setup.py): a message is settled within microseconds of its delivery, which
is what a fast handler (a duplicate recognised with one Redis look-up) does in the stack.
A body `{"hang": true}` hangs the first handler, `{"peer_down": true}` holds its message
for a dependency that never comes back."""

from __future__ import annotations

from typing import Any

import eventlet

from shared import topology
from shared.nameko_ext import GridbusService, consume_reliably
from shared.resilience import DependencyUnavailable

QUEUES = (topology.Q_ROUTER_CASES, topology.Q_SLA_EVENTS)


class TwoQueueService(GridbusService):
    name = "router"

    @consume_reliably(QUEUES[0])
    def first(self, body: Any) -> None:
        if isinstance(body, dict) and body.get("hang"):  # a handler that never returns
            eventlet.sleep(3600)
        if isinstance(body, dict) and body.get("peer_down"):  # a dependency that stays down
            raise DependencyUnavailable("http", "peer refuses")

    @consume_reliably(QUEUES[1])
    def second(self, body: Any) -> None:
        return None
