"""Queue depths for the metrics timers over one kept connection, on the real broker
(issue 16: an idle stack opened a new AMQP connection every few seconds for them)."""

from __future__ import annotations

import socket

from shared import amqpclient
from tests.conftest import Vhosts, wait_for


def test_depths_are_read_over_one_connection_opened_again_after_the_broker_dropped_it(
    vhost_factory: Vhosts,
) -> None:
    uri = vhost_factory.make("depths")
    try:
        with amqpclient.connection(uri) as conn:
            ch = amqpclient.channel(conn)
            ch.queue_declare("work", durable=True, auto_delete=False)
            for i in range(3):
                ch.basic_publish(amqpclient.message(f"m{i}".encode()), "", "work")
            ch.close()
        depths = amqpclient.QueueDepths(uri)
        try:
            assert wait_for(lambda: depths.read(["work", "missing"]) == {"work": 3, "missing": None}, 10)
            port = depths._conn.sock.getsockname()[1]  # type: ignore[union-attr]
            for _ in range(5):
                depths.read(["work"])
            assert depths._conn.sock.getsockname()[1] == port  # type: ignore[union-attr]  # the same connection
            # the connection breaks under it (as when the broker restarts): the next reading
            # opens a new one and answers
            depths._conn.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
            assert depths.read(["work"]) == {"work": 3}
            assert depths._conn.sock.getsockname()[1] != port  # type: ignore[union-attr]
        finally:
            depths.close()
    finally:
        vhost_factory.drop(uri)
