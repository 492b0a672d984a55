"""The RabbitMQ topology: every exchange, queue, binding and routing key, named once.

Services declare it at start (idempotently) before they consume or publish, so that no
event is confirmed into an exchange with nowhere to go; `gridbus topology apply` does the
same from the command line, and `deploy/rabbitmq/definitions.json` is generated from
`definitions()` below.

Long-lived queues are quorum queues with a delivery limit and at-least-once
dead-lettering into `gridbus.dead`, routed by the source queue's name to `<queue>.dead`.
A handler that keeps failing therefore ends up in a dead-letter queue rather than looping
or being dropped (nameko's default is to ack and drop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from shared.lifecycle import NOTIFIED_STATUSES

# ------------------------------------------------------------------ exchanges
EX_REPORTS = "gridbus.reports"  # grid app → intake
EX_REPLIES = "gridbus.replies"  # departments → intake
EX_EVENTS = "gridbus.events"  # lifecycle events between services
EX_DISPATCH = "gridbus.dispatch"  # router → department queues
EX_NOTIFY = "gridbus.notify"  # notifier's own work and retry queues
EX_DEAD = "gridbus.dead"  # dead letters, keyed by the queue they came from

# ------------------------------------------------------------------ routing keys
RK_REPORT = "report.submitted"
RK_CASE_REGISTERED = "case.registered"
RK_CASE_DISPATCHED = "case.dispatched"
RK_CASE_UNROUTABLE = "case.unroutable"
#: `case.updated.<to_status>` (`case_updated_routing_key`): a consumer binds to the statuses
#: it acts on, `case.updated.*` (RK_CASE_UPDATED_ANY) for all of them
RK_CASE_UPDATED = "case.updated"
RK_CASE_UPDATED_ANY = f"{RK_CASE_UPDATED}.*"
RK_CASE_REDISPATCH = "case.redispatch"
RK_DISPATCH_WITHDRAWN = "dispatch.withdrawn"  # on gridbus.events; router forwards it to the department's queue
RK_CASE_ESCALATED = "case.escalated"
RK_DEADLINE_WARNING = "deadline.warning"
RK_DEADLINE_BREACHED = "deadline.breached"
RK_NOTIFICATION_FAILED = "notification.failed"
RK_DELIVERY = "delivery"
RK_CITY_TASK = "citytask.received"  # on gridbus.reports: a city-platform task for the bridge to take in
# the record (docs/design.md §11): what the archiver needs beyond the lifecycle events
RK_CASE_RECORDED = "record.case"
RK_CLOCKS_RECORDED = "record.clocks"
RK_NOTIFICATION_SENT = "record.notification"
RK_APIKEY_RECORDED = "record.apikey"

#: event type (the `event` field of a message) → the binding key on `gridbus.events` that
#: receives every event of that type: its routing key, or for `case_updated` the pattern
#: over its statuses. Publishers use `event_routing_key`.
EVENT_ROUTING_KEYS: dict[str, str] = {
    "case_registered": RK_CASE_REGISTERED,
    "case_dispatched": RK_CASE_DISPATCHED,
    "case_unroutable": RK_CASE_UNROUTABLE,
    "case_updated": RK_CASE_UPDATED_ANY,
    "case_redispatch": RK_CASE_REDISPATCH,
    "dispatch_withdrawn": RK_DISPATCH_WITHDRAWN,
    "case_escalated": RK_CASE_ESCALATED,
    "deadline_warning": RK_DEADLINE_WARNING,
    "deadline_breached": RK_DEADLINE_BREACHED,
    "notification_failed": RK_NOTIFICATION_FAILED,
    "case_recorded": RK_CASE_RECORDED,
    "clocks_recorded": RK_CLOCKS_RECORDED,
    "notification_sent": RK_NOTIFICATION_SENT,
    "apikey_recorded": RK_APIKEY_RECORDED,
}


def case_updated_routing_key(to_status: str) -> str:
    """`case.updated.<to_status>`: the status in the key lets the notifier bind to the few
    it tells people about instead of taking (and dropping) every acknowledgement and
    progress note."""
    return f"{RK_CASE_UPDATED}.{to_status}"


def event_routing_key(event: Any) -> str:
    """The routing key an event (a shared.models envelope) is published with."""
    name = getattr(event, "event")
    if name == "case_updated":
        return case_updated_routing_key(str(getattr(event.to_status, "value", event.to_status)))
    return EVENT_ROUTING_KEYS[name]


def dispatch_routing_key(dept: str, street: str) -> str:
    """`dept.<dept_code>.<street_code>`: departments may bind narrower, per street."""
    return f"dept.{dept}.{street}"


def reply_routing_key(dept: str) -> str:
    return f"reply.{dept}"


DEPT_USER_PREFIX = "dept-"


def dept_user(dept: str) -> str:
    """The department's own RabbitMQ user (see `gridbus topology apply --users`)."""
    return f"{DEPT_USER_PREFIX}{dept}"


def dept_of_user(user: str | None) -> str | None:
    if user and user.startswith(DEPT_USER_PREFIX):
        return user[len(DEPT_USER_PREFIX) :]
    return None


def dept_queue(dept: str) -> str:
    return f"dept.{dept}"


def dead_queue(queue: str) -> str:
    return f"{queue}.dead"


# ------------------------------------------------------------------ queues
Q_INTAKE_REPORTS = "intake.reports"
Q_INTAKE_REPLIES = "intake.replies"
Q_INTAKE_EVENTS = "intake.events"
Q_ROUTER_CASES = "router.cases"
Q_SLA_EVENTS = "sla.events"
Q_NOTIFIER_EVENTS = "notifier.events"
Q_NOTIFIER_DELIVERIES = "notifier.deliveries"
Q_AUDIT = "gridbus.audit"
AUDIT_MAX_AGE = "400D"  # the stream's retention: longer than any archiver outage may last
Q_BRIDGE_EVENTS = "bridge.events"  # case events for the city platform (only when the bridge is enabled)
Q_BRIDGE_INBOUND = "bridge.inbound"  # city-platform tasks (CloudEvents) to take in as reports
#: the case events the bridge forwards to the city platform
BRIDGE_EVENT_KEYS: tuple[str, ...] = (
    RK_CASE_REGISTERED,
    RK_CASE_DISPATCHED,
    RK_CASE_UNROUTABLE,
    RK_CASE_UPDATED_ANY,
    RK_CASE_ESCALATED,
)
#: queues of earlier versions that nothing reads any more, deleted by `declare` (a bound
#: queue nobody reads grows for ever): (name, only when empty). `archiver.record` held
#: the same messages as the stream the archiver now reads; dead letters are kept until
#: someone has looked at them.
RETIRED_QUEUES: tuple[tuple[str, bool], ...] = (("archiver.record", False), ("archiver.record.dead", True))

#: back-off of failed notifications: delay queues whose TTL dead-letters back to work
NOTIFIER_RETRY_DELAYS_S: tuple[int, ...] = (10, 60, 300, 1800)


def retry_queue(delay_s: int) -> str:
    return f"notifier.retry.{delay_s}s"


def retry_routing_key(delay_s: int) -> str:
    return f"retry.{delay_s}s"


DELIVERY_LIMIT = 5  # redeliveries of a failing message before it is dead-lettered


@dataclass(frozen=True)
class Exchange:
    name: str
    type: str = "topic"
    doc: str = ""


@dataclass(frozen=True)
class Queue:
    name: str
    doc: str = ""
    kind: str = "work"  # work | dead | delay | stream
    arguments: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Binding:
    exchange: str
    queue: str
    routing_key: str


@dataclass(frozen=True)
class Topology:
    exchanges: tuple[Exchange, ...]
    queues: tuple[Queue, ...]
    bindings: tuple[Binding, ...]

    def queue(self, name: str) -> Queue:
        for q in self.queues:
            if q.name == name:
                return q
        raise KeyError(name)


def _work_queue_args(name: str) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": EX_DEAD,
        "x-dead-letter-routing-key": name,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


#: Bindings an earlier release declared and this one does not want: a broker keeps a
#: binding until it is removed, so `declare` removes these (a no-op where they are absent).
#: Not retired yet: the bare `case.updated` bindings of notifier.events, sla.events and
#: bridge.events (before the status was in the key). No message of this release uses that
#: key, but an intake of the earlier release still publishing it during an upgrade must
#: reach sla (an acknowledgement that misses sla would be breached); retire them next release.
RETIRED_BINDINGS: tuple[Binding, ...] = (
    # sla counted each registration; intake now counts it in the registering script
    Binding(EX_EVENTS, Q_SLA_EVENTS, RK_CASE_REGISTERED),
)


def build_topology(department_codes: Iterable[str], bridge: bool = False) -> Topology:
    department_codes = list(department_codes)  # read twice below
    exchanges = (
        Exchange(EX_REPORTS, doc="Reports from the grid app (key `report.submitted`)."),
        Exchange(EX_REPLIES, doc="Department replies (key `reply.<dept>`, user_id checked)."),
        Exchange(EX_EVENTS, doc="Case lifecycle events (keys `case.*`, `deadline.*`)."),
        Exchange(EX_DISPATCH, doc="Dispatch orders and their withdrawals (key `dept.<dept>.<street>`)."),
        Exchange(EX_NOTIFY, type="direct", doc="Notifier deliveries and their retries."),
        Exchange(EX_DEAD, doc="Dead letters, keyed by the name of the queue they left."),
    )
    queues: list[Queue] = []
    bindings: list[Binding] = []

    def work(name: str, doc: str, binds: Iterable[tuple[str, str]]) -> None:
        queues.append(Queue(name, doc, "work", _work_queue_args(name)))
        queues.append(Queue(dead_queue(name), f"Dead letters of `{name}`.", "dead", {"x-queue-type": "quorum"}))
        bindings.append(Binding(EX_DEAD, dead_queue(name), name))
        for exchange, key in binds:
            bindings.append(Binding(exchange, name, key))

    work(Q_INTAKE_REPORTS, "Reports submitted over AMQP.", [(EX_REPORTS, RK_REPORT)])
    work(Q_INTAKE_REPLIES, "Department replies over AMQP.", [(EX_REPLIES, "reply.*")])
    work(
        Q_INTAKE_EVENTS,
        "Events that change case state, applied by intake (the only writer).",
        [(EX_EVENTS, k) for k in (RK_CASE_DISPATCHED, RK_CASE_UNROUTABLE, RK_CASE_ESCALATED)],
    )
    work(
        Q_ROUTER_CASES,
        "Cases to route or route again, and withdrawn orders to pass on to departments.",
        [(EX_EVENTS, RK_CASE_REGISTERED), (EX_EVENTS, RK_CASE_REDISPATCH), (EX_EVENTS, RK_DISPATCH_WITHDRAWN)],
    )
    work(
        Q_SLA_EVENTS,
        "Events that arm, stop or pause deadlines.",
        [(EX_EVENTS, k) for k in (RK_CASE_DISPATCHED, RK_CASE_UPDATED_ANY)],
    )
    work(
        Q_NOTIFIER_EVENTS,
        "Events people are told about.",
        [
            (EX_EVENTS, k)
            for k in (
                RK_CASE_DISPATCHED,
                RK_CASE_UNROUTABLE,
                RK_CASE_ESCALATED,
                RK_DEADLINE_WARNING,
                RK_DEADLINE_BREACHED,
                RK_DISPATCH_WITHDRAWN,
                # only the updates notify.yaml can subscribe (its validation admits no other)
                *(case_updated_routing_key(s.value) for s in sorted(NOTIFIED_STATUSES, key=lambda s: s.value)),
            )
        ],
    )
    work(Q_NOTIFIER_DELIVERIES, "One message to one recipient on one channel.", [(EX_NOTIFY, RK_DELIVERY)])
    for delay in NOTIFIER_RETRY_DELAYS_S:
        name = retry_queue(delay)
        queues.append(
            Queue(
                name,
                f"Holds a failed delivery {delay} s, then dead-letters it back to work.",
                "delay",
                {
                    "x-queue-type": "quorum",
                    "x-message-ttl": delay * 1000,
                    "x-dead-letter-exchange": EX_NOTIFY,
                    "x-dead-letter-routing-key": RK_DELIVERY,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
        )
        bindings.append(Binding(EX_NOTIFY, name, retry_routing_key(delay)))
    for dept in department_codes:
        work(
            dept_queue(dept),
            f"Dispatch orders for department `{dept}`, read by its liaison's systems.",
            [(EX_DISPATCH, f"dept.{dept}.#")],
        )
    if bridge:  # a queue nobody reads would grow for ever: only with the bridge configured
        work(
            Q_BRIDGE_EVENTS,
            "Case events for the city platform (CloudEvents out).",
            [(EX_EVENTS, k) for k in BRIDGE_EVENT_KEYS],
        )
        work(
            Q_BRIDGE_INBOUND,
            "City-platform tasks (CloudEvents, e.g. 12345 hotline) to take in as reports.",
            [(EX_REPORTS, RK_CITY_TASK)],
        )
    # The complete record: every event, the records of what intake, sla and notifier
    # stored (`record.*`) and every dispatch order, kept in one stream for audit, for
    # `gridbus rebuild` and for the archiver, which writes it to PostgreSQL from the offset
    # it stored (services/archiver/stream.py): each record message is enqueued once.
    # Orders by department key, not `#`: an order for a department without a queue must stay
    # unroutable (the publisher's mandatory flag turns that into an error).
    record = [(EX_EVENTS, "#"), *((EX_DISPATCH, f"dept.{dept}.#") for dept in department_codes)]
    queues.append(
        Queue(
            Q_AUDIT,
            "The complete record (every event, record and order), kept for audit and replay and read by the "
            "archiver into PostgreSQL. Its retention (400 days) must outlast any archiver outage.",
            "stream",
            {"x-queue-type": "stream", "x-max-age": AUDIT_MAX_AGE},
        )
    )
    bindings.extend(Binding(ex, Q_AUDIT, key) for ex, key in record)
    # a stream cannot dead-letter: the archiver publishes what it cannot archive here itself
    queues.append(
        Queue(
            dead_queue(Q_AUDIT),
            f"Messages of `{Q_AUDIT}` the archiver could not archive, with the reason.",
            "dead",
            {"x-queue-type": "quorum"},
        )
    )
    bindings.append(Binding(EX_DEAD, dead_queue(Q_AUDIT), Q_AUDIT))
    return Topology(exchanges, tuple(queues), tuple(bindings))


def default_topology() -> Topology:
    from shared.config import get_settings
    from shared.departments import load_department_codes

    return build_topology(load_department_codes(), bridge=get_settings().bridge_enabled)


def declare(channel: Any, topology: Topology) -> None:
    """Declare everything on a py-amqp channel; safe to repeat (RabbitMQ's declarations
    are idempotent)."""
    for ex in topology.exchanges:
        channel.exchange_declare(ex.name, ex.type, durable=True, auto_delete=False)
    for q in topology.queues:
        channel.queue_declare(q.name, durable=True, auto_delete=False, arguments=q.arguments)
    for b in topology.bindings:
        channel.queue_bind(b.queue, b.exchange, routing_key=b.routing_key)
    declared = {q.name for q in topology.queues}
    for b in RETIRED_BINDINGS:
        if b.queue in declared and b not in topology.bindings:
            channel.queue_unbind(b.queue, b.exchange, routing_key=b.routing_key)


def retire(conn: Any) -> None:
    """Delete RETIRED_QUEUES that exist (and, where asked, are empty). Looked at first with
    a passive declare on a channel of its own (a missing queue closes only that channel):
    quorum queues refuse `if-empty` deletes with a connection error."""
    from shared.amqpclient import channel, queue_info

    for name, only_if_empty in RETIRED_QUEUES:
        info = queue_info(conn, name)
        if info is None or (only_if_empty and info[0] > 0):
            continue
        ch = channel(conn)
        ch.queue_delete(name)
        ch.close()


def apply(amqp_uri: str, topology: Topology | None = None) -> Topology:
    from shared.amqpclient import channel, connection

    topology = topology or default_topology()
    # services start together and each declares everything: on a busy broker (quorum
    # queues are Raft groups) the handshake can be slow, which is no reason to give up
    with connection(amqp_uri, attempts=5, retry_delay=2, connect_timeout=60) as conn:
        declare(channel(conn), topology)
        retire(conn)
    return topology


def definitions(topology: Topology, vhost: str = "/") -> dict[str, Any]:
    """RabbitMQ definitions (import format) for the same topology."""
    return {
        "vhosts": [{"name": vhost}],
        "exchanges": [
            {
                "name": e.name,
                "vhost": vhost,
                "type": e.type,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
            for e in topology.exchanges
        ],
        "queues": [
            {"name": q.name, "vhost": vhost, "durable": True, "auto_delete": False, "arguments": q.arguments}
            for q in topology.queues
        ],
        "bindings": [
            {
                "source": b.exchange,
                "vhost": vhost,
                "destination": b.queue,
                "destination_type": "queue",
                "routing_key": b.routing_key,
                "arguments": {},
            }
            for b in topology.bindings
        ],
    }
