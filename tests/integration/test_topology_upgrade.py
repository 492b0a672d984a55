"""Declaring the topology on a broker an earlier release set up removes the bindings
this release retired (shared/topology.py RETIRED_BINDINGS): a broker keeps a binding
until it is removed, so without it sla.events would still get every case_registered."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlparse

import httpx
import pytest

from shared import topology
from shared.amqpclient import connection

pytestmark = pytest.mark.integration


def bindings_of(mgmt_api: httpx.Client, uri: str, queue: str) -> set[tuple[str, str]]:
    vhost = quote(unquote(urlparse(uri).path[1:]), safe="")
    rows = mgmt_api.get(f"/api/queues/{vhost}/{quote(queue, safe='')}/bindings").raise_for_status().json()
    return {(b["source"], b["routing_key"]) for b in rows if b["source"]}


def test_retired_bindings_are_removed_and_others_kept(vhost_factory, mgmt_api: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    uri = vhost_factory.make("upgrade")
    try:
        now = topology.default_topology()
        with connection(uri) as conn:
            ch = conn.channel()
            topology.declare(ch, now)
            for b in topology.RETIRED_BINDINGS:  # as the earlier release left them
                ch.queue_bind(b.queue, b.exchange, routing_key=b.routing_key)
        retired = {(b.queue, b.exchange, b.routing_key) for b in topology.RETIRED_BINDINGS}
        assert retired and all(
            (ex, key) in bindings_of(mgmt_api, uri, q) for q, ex, key in retired
        )  # the old state is really there
        topology.apply(uri, now)  # what every service does at start
        for q, ex, key in retired:
            assert (ex, key) not in bindings_of(mgmt_api, uri, q)
        wanted = {(b.exchange, b.routing_key) for b in now.bindings if b.queue == topology.Q_SLA_EVENTS}
        assert wanted <= bindings_of(mgmt_api, uri, topology.Q_SLA_EVENTS)
        topology.apply(uri, now)  # again: removing what is already gone is fine
    finally:
        vhost_factory.drop(uri)
