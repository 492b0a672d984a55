"""What must hold after a fault run, computed from the real system once the load drained.

- every accepted report has its dispatch order in its department's queue (`lost`);
- no accepted case is still `registered` (`stuck`), none is missing from intake's store;
- every active assignment of a dispatched case has an SLA clock armed for its order in
  sla's store (`missing_clocks`);
- no double dispatch: a report answered or ordered under two case ids, or one case
  ordered to one department under two order ids (`double_dispatch`);
- no message dead-lettered for a reason other than bad input (`dead_transient`: every
  report of the run is valid, so the delivery limit or a dependency put it there);
- every accepted case and every dispatch order reached the archive (`archive_missing`:
  a case without its row in PostgreSQL's `cases`, an order without its row in `orders`,
  or an archived case whose record lacks an order its department got);
- every killed piece came back healthy (checked by the run, `unhealthy`).
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from shared import deadletters
from shared.amqpclient import body_bytes, channel, connection, props

#: clock states that count as "armed" (a breached clock has done its job and escalated)
ARMED = ("running", "paused", "breached")


@dataclass
class Order:
    queue: str
    message_id: str | None
    order_id: str
    case_id: str
    correlation_id: str
    dept: str
    round_no: int


def parse_order(queue: str, properties: dict[str, Any], body: bytes) -> Order | None:
    """An order from its message; `properties` as `shared.amqpclient.props` gives them."""
    try:
        msg = json.loads(body)
    except ValueError:
        return None
    order_id = msg.get("order_id", "")
    parts = order_id.split("/")
    round_no = int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else 1
    return Order(
        queue,
        properties.get("message_id") or msg.get("message_id"),
        order_id,
        msg.get("case_id", ""),
        msg.get("correlation_id") or properties.get("correlation_id") or "",
        msg.get("dept", ""),
        round_no,
    )


def drain_orders(amqp_uri: str, queues: Iterable[str]) -> list[Order]:
    """Take every message off the department queues (the departments reading their orders)."""
    out: list[Order] = []
    with connection(amqp_uri) as conn:
        ch = channel(conn)
        for q in queues:
            while (m := ch.basic_get(q, no_ack=True)) is not None:
                o = parse_order(q, props(m), body_bytes(m))
                if o is not None:
                    out.append(o)
    return out


@dataclass
class Findings:
    accepted: int = 0
    dispatched: int = 0  # accepted cases with at least one order
    lost: list[str] = field(default_factory=list)  # accepted case ids without an order
    stuck: list[str] = field(default_factory=list)  # still `registered`
    missing_cases: list[str] = field(default_factory=list)  # accepted, not in intake's store
    missing_clocks: list[str] = field(default_factory=list)  # order ids without an armed clock
    double_dispatch: list[str] = field(default_factory=list)
    dead: dict[str, dict[str, int]] = field(default_factory=dict)  # queue → kind → count
    dead_transient: int = 0
    dead_total: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    duplicates_linked: int = 0  # cases intake linked as near-duplicates (not dispatched)
    orders: int = 0
    order_copies: int = 0  # orders delivered more than once (same message id)
    archive_missing: list[str] = field(default_factory=list)  # cases and orders not in PostgreSQL

    def ok(self) -> bool:
        return not (
            self.lost
            or self.stuck
            or self.missing_cases
            or self.missing_clocks
            or self.double_dispatch
            or self.dead_transient
            or self.archive_missing
        )

    def table(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "dispatched": self.dispatched,
            "lost": len(self.lost),
            "stuck": len(self.stuck),
            "missing_cases": len(self.missing_cases),
            "missing_clocks": len(self.missing_clocks),
            "double_dispatch": len(self.double_dispatch),
            "dead_transient": self.dead_transient,
            "dead_total": self.dead_total,
            "archive_missing": len(self.archive_missing),
        }

    def to_dict(self, sample: int = 10) -> dict[str, Any]:
        return {
            **self.table(),
            "ok": self.ok(),
            "statuses": self.statuses,
            "dead": self.dead,
            "duplicates_linked": self.duplicates_linked,
            "orders": self.orders,
            "order_copies": self.order_copies,
            "samples": {
                k: getattr(self, k)[:sample]
                for k in ("lost", "stuck", "missing_cases", "missing_clocks", "double_dispatch", "archive_missing")
            },
        }


def case_docs(client: Any, prefix: str, case_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """intake's stored cases (the `doc` JSON of `<prefix>:case:<id>`, shared/redis_keys.py)."""
    from shared import redis_keys

    out: dict[str, dict[str, Any] | None] = {}
    for start in range(0, len(case_ids), 500):
        chunk = case_ids[start : start + 500]
        pipe = client.pipeline(transaction=False)
        for cid in chunk:
            pipe.hget(_with_prefix(redis_keys.case(cid), prefix), "doc")
        for cid, doc in zip(chunk, pipe.execute(), strict=True):
            out[cid] = json.loads(doc) if doc else None
    return out


def _with_prefix(key: str, prefix: str) -> str:
    """A key of shared/redis_keys.py under another stack's prefix (this process's settings
    may name a different one)."""
    from shared.config import get_settings

    own = get_settings().redis_key_prefix
    return prefix + key[len(own) :] if key.startswith(own + ":") else key


def armed_orders(client: Any, prefix: str, case_id: str) -> set[str] | None:
    """Order ids with an armed clock in sla's store for the case (None: sla holds nothing)."""
    from services.sla.codec import unpack_doc
    from services.sla.store import live_shard
    from shared import redis_keys

    raw = client.hget(_with_prefix(redis_keys.sla_live(live_shard(case_id)), prefix), case_id)
    if raw is None:
        raw = client.get(_with_prefix(redis_keys.sla_case(case_id), prefix))
    if raw is None:
        return None
    doc = unpack_doc(case_id, raw)
    return {c.order_id for c in doc.clocks.values() if c.state in ARMED}


def archive_missing(dsn: str, case_ids: Iterable[str], orders: Iterable[Order]) -> list[str]:
    """What of the run is not in the archive (services/archiver, PostgreSQL): accepted cases
    without their row in `cases`, dispatch orders without theirs in `orders`, and archived
    cases whose record (`case_assignments`) lacks an order its department received."""
    import psycopg

    cases = sorted(set(case_ids))
    order_case = {o.order_id: o.case_id for o in orders}
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        have_cases = {r[0] for r in conn.execute("SELECT case_id FROM cases WHERE case_id = ANY(%s)", (cases,))}
        have_orders = {
            r[0] for r in conn.execute("SELECT order_id FROM orders WHERE order_id = ANY(%s)", (list(order_case),))
        }
        recorded = {
            r[0] for r in conn.execute("SELECT order_id FROM case_assignments WHERE case_id = ANY(%s)", (cases,))
        }
    missing = [f"case {c}" for c in cases if c not in have_cases]
    missing += [f"order {o}" for o in sorted(order_case) if o not in have_orders]
    missing += [
        f"case {order_case[o]} archived without its order {o}"
        for o in sorted(order_case)
        if o not in recorded and order_case[o] in have_cases
    ]
    return missing


def evaluate(
    accepted: dict[str, list[str]],
    orders: list[Order],
    redis_text: Any,
    redis_bin: Any,
    prefix: str,
    dead: dict[str, list[deadletters.DeadLetter]],
) -> Findings:
    """`accepted`: report id → every case id intake answered with (in order)."""
    f = Findings()
    f.accepted = len(accepted)
    case_of_report = {rid: ids[0] for rid, ids in accepted.items() if ids}
    for rid, ids in accepted.items():
        if len(set(ids)) > 1:
            f.double_dispatch.append(f"report {rid} answered with case ids {sorted(set(ids))}")

    seen_msg: set[tuple[str, str | None]] = set()
    by_case: dict[str, list[Order]] = collections.defaultdict(list)
    cases_of_corr: dict[str, set[str]] = collections.defaultdict(set)
    for o in orders:
        key = (o.queue, o.message_id)
        if key in seen_msg:
            f.order_copies += 1
            continue
        seen_msg.add(key)
        f.orders += 1
        by_case[o.case_id].append(o)
        cases_of_corr[o.correlation_id].add(o.case_id)
    for corr, cids in cases_of_corr.items():
        if len(cids) > 1:
            f.double_dispatch.append(f"report {corr} ordered under case ids {sorted(cids)}")
        elif corr in case_of_report and case_of_report[corr] not in cids:
            f.double_dispatch.append(f"report {corr}: answered {case_of_report[corr]}, ordered {sorted(cids)}")
    for cid, os_ in by_case.items():
        per_dept: dict[str, set[str]] = collections.defaultdict(set)
        for o in os_:
            per_dept[o.dept].add(o.order_id)
        for dept, order_ids in per_dept.items():
            if len(order_ids) > 1:
                f.double_dispatch.append(f"case {cid} ordered to {dept} as {sorted(order_ids)}")

    docs = case_docs(redis_text, prefix, sorted(set(case_of_report.values())))
    statuses: collections.Counter[str] = collections.Counter()
    for cid in case_of_report.values():
        doc = docs.get(cid)
        if doc is None:
            f.missing_cases.append(cid)
            if cid not in by_case:
                f.lost.append(cid)
            continue
        status = doc.get("status", "")
        statuses[status] += 1
        if status == "duplicate":  # linked to an open case: by design it gets no order
            f.duplicates_linked += 1
            continue
        if status == "registered":
            f.stuck.append(cid)
        if cid in by_case:
            f.dispatched += 1
        else:
            f.lost.append(cid)
        active = [a for a in doc.get("assignments", []) if a.get("active", True)]
        if status not in ("registered", "cancelled", "closed", "resolved") and active:
            armed = armed_orders(redis_bin, prefix, cid)
            for a in active:
                if armed is None or a["order_id"] not in armed:
                    f.missing_clocks.append(a["order_id"])
    f.statuses = dict(statuses)

    for q, letters in dead.items():
        kinds = collections.Counter(dl.kind for dl in letters)
        if kinds:
            f.dead[q] = dict(kinds)
        f.dead_total += len(letters)
        f.dead_transient += sum(1 for dl in letters if not dl.input_error)
    return f
