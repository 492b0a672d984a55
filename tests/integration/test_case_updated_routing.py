"""`case_updated` is published as `case.updated.<to_status>` (shared/topology.py): on the
real broker, with the whole topology (bridge on), the notifier's queue gets only the
updates notify.yaml can subscribe, and every other consumer of updates still gets all."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from shared import topology
from shared.amqpclient import body_bytes, channel, connection
from shared.audit import read_audit
from shared.bus import Bus
from shared.departments import load_department_codes
from shared.models import CaseStatus, CaseUpdated

CASE = "450305-20261201-000777"


def _drain(ch: Any, queue: str) -> list[dict[str, Any]]:
    out = []
    while (msg := ch.basic_get(queue, no_ack=True)) is not None:
        body = json.loads(body_bytes(msg))
        if body.get("case_id") == CASE:
            out.append({"key": msg.delivery_info["routing_key"], **body})
    return out


def test_only_notified_statuses_reach_the_notifier_and_every_update_reaches_the_rest(vhost_factory: Any) -> None:
    uri = vhost_factory.make("routing")
    try:
        topology.apply(uri, topology.build_topology(load_department_codes(), bridge=True))
        bus = Bus(uri, service="intake")
        for status in CaseStatus:
            bus.publish_event(
                CaseUpdated(
                    case_id=CASE, correlation_id="r", from_status=None, to_status=status, actor="test", action="x"
                )
            )
        every = {s.value for s in CaseStatus}
        with connection(uri) as conn:
            ch = channel(conn)
            got = {q: _drain(ch, q) for q in (topology.Q_NOTIFIER_EVENTS, topology.Q_SLA_EVENTS)}
            got[topology.Q_BRIDGE_EVENTS] = _drain(ch, topology.Q_BRIDGE_EVENTS)
        for queue, messages in got.items():
            assert all(m["key"] == topology.case_updated_routing_key(m["to_status"]) for m in messages), queue
        notified = Counter(m["to_status"] for m in got[topology.Q_NOTIFIER_EVENTS])
        # resolved / closed / reopened still tell people; acknowledged, in_progress … no longer reach the notifier
        assert notified == Counter({"resolved": 1, "closed": 1, "reopened": 1})
        assert "in_progress" not in notified and "acknowledged" not in notified
        for queue in (topology.Q_SLA_EVENTS, topology.Q_BRIDGE_EVENTS):
            assert Counter(m["to_status"] for m in got[queue]) == Counter(every), queue
        # the archive's record is the stream (the archiver reads it)
        audited = [e for e in read_audit(uri, "first", CASE, idle_timeout=1.5) if e.get("event") == "case_updated"]
        assert {e["to_status"] for e in audited} == every and len(audited) == len(every)
    finally:
        vhost_factory.drop(uri)
