"""Every Prometheus metric of gridbus, named once (docs/metrics.md describes each).

A metric is declared here with the service(s) that own it and, where its label values are
known when the service starts, the label sets to create at 0. Each service process serves
a registry of its own (`serve_metrics(service, ...)`) holding only its metrics, so that
e.g. `gridbus_routes_config_valid` exists on router alone instead of reading 0 on the
other three. Label sets created at 0 make a fresh or restarted stack show 0 rather than
"No data", and let `increase()` count the first event of a label set (a series that
appears with 1 has no earlier sample to increase from).

Adding a metric is one declaration below: `_counter/_gauge/_histogram(name, doc, labels,
owner=..., init=...)`, plus its row in docs/metrics.md (a drift test checks the docs).

Labels are bounded: service, entrypoint, department, street, category class, level,
channel, outcome, queue, reason. Never a case id.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from itertools import product
from typing import Any, Callable, Iterable, Sequence, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, start_http_server
from prometheus_client.metrics import MetricWrapperBase

# One `_created` series per counter and histogram (≈230 on a stack) that no panel or rule
# reads; the same as PROMETHEUS_DISABLE_CREATED_SERIES=True, without relying on the env.
disable_created_metrics()

EVERY = "*"  # owner: every service (the entrypoint and publishing metrics of shared/)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass(frozen=True)
class Known:
    """Label values a service knows when it starts (series are created at 0 for them)."""

    service: str
    entrypoints: tuple[str, ...] = ()
    depts: tuple[str, ...] = ()
    streets: tuple[str, ...] = ()
    category_classes: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()


Init = Callable[[Known], Iterable[Sequence[str]]]


@dataclass(frozen=True)
class _Declared:
    metric: MetricWrapperBase
    owner: tuple[str, ...]
    init: Init | None = field(default=None)

    def owned_by(self, service: str) -> bool:
        return EVERY in self.owner or service in self.owner


_DECLARED: list[_Declared] = []
M = TypeVar("M", bound=MetricWrapperBase)


def _declare(metric: M, owner: str | Sequence[str], init: Init | None) -> M:
    _DECLARED.append(_Declared(metric, (owner,) if isinstance(owner, str) else tuple(owner), init))
    return metric


def _counter(
    name: str, doc: str, labels: Sequence[str] = (), *, owner: str | Sequence[str], init: Init | None = None
) -> Counter:
    return _declare(Counter(name, doc, labels, registry=None), owner, init)


def _gauge(
    name: str, doc: str, labels: Sequence[str] = (), *, owner: str | Sequence[str], init: Init | None = None
) -> Gauge:
    return _declare(Gauge(name, doc, labels, registry=None), owner, init)


def _histogram(
    name: str,
    doc: str,
    labels: Sequence[str] = (),
    *,
    owner: str | Sequence[str],
    buckets: Sequence[float] = LATENCY_BUCKETS,
    init: Init | None = None,
) -> Histogram:
    return _declare(Histogram(name, doc, labels, registry=None, buckets=buckets), owner, init)


# -- label domains of fixed vocabularies (the code's own values) -----------------------
REPORT_CHANNELS = ("http", "amqp", "open311", "city")
REPORT_OUTCOMES = ("registered", "repeated", "invalid")
PIPELINE_STAGES = ("dispatched", "acknowledged", "resolved")
#: (action, on_time) pairs a reply can have: on time is only judged for acknowledge and resolve
REPLY_OUTCOMES = (
    ("acknowledge", "yes"),
    ("acknowledge", "no"),
    ("resolve", "yes"),
    ("resolve", "no"),
    ("progress", "n/a"),
    ("suspend", "n/a"),
    ("reject", "n/a"),
)
DEADLINES = ("acknowledge", "handle")
LEVELS = ("1", "2", "3", "4", "5")
ROUTES_OUTCOMES = ("loaded", "invalid")
ATTEMPT_OUTCOMES = ("delivered", "transient", "permanent", "no_address")
DELIVERY_OUTCOMES = ("delivered", "dead", "held", "digested", "duplicate", "fallback", "no_address")
DEAD_REASONS = ("permanent", "exhausted", "unknown_outcome")


def _per_entrypoint(k: Known) -> Iterable[Sequence[str]]:
    return [(k.service, e) for e in k.entrypoints]


# -- per entrypoint, every service --------------------------------------------------
MESSAGES_IN = _counter(
    "gridbus_messages_in_total",
    "Messages or requests taken in by an entrypoint.",
    ["service", "entrypoint"],
    owner=EVERY,
    init=_per_entrypoint,
)
MESSAGES_OUT = _counter(
    "gridbus_messages_out_total",
    "Messages published (confirmed by the broker).",
    ["service", "exchange", "kind"],
    owner=EVERY,
)
HANDLER_ERRORS = _counter(
    "gridbus_handler_errors_total",
    "Entrypoint calls that raised (not counting intentional rejections).",
    ["service", "entrypoint", "error"],
    owner=EVERY,
)
MESSAGES_REJECTED = _counter(
    "gridbus_messages_rejected_total",
    "Messages an entrypoint refused on purpose (`Rejected`: invalid, unknown case, …), dead-lettered with the "
    "reason; not handler errors.",
    ["service", "entrypoint"],
    owner=EVERY,
    init=_per_entrypoint,
)
HANDLER_LATENCY = _histogram(
    "gridbus_handler_duration_seconds",
    "Time spent in an entrypoint.",
    ["service", "entrypoint"],
    owner=EVERY,
    init=_per_entrypoint,
)
DEAD_LETTERED = _counter(
    "gridbus_dead_lettered_total",
    "Messages sent to a dead-letter queue by a service, by reason.",
    ["service", "queue", "reason"],
    owner=EVERY,
)
CONSUMER_STALLS = _counter(
    "gridbus_consumer_stalls_total",
    "Stalls of a consumer: a dependency (redis, broker, postgres, http, network) failed and its messages were "
    "held unacked, tried again with back-off, instead of being requeued.",
    ["service", "queue", "dependency"],
    owner=EVERY,
)
REPAIR_KINDS = {
    "intake": ("registered_reemitted", "outbox_relayed"),
    "sla": ("clocks_rearmed", "outbox_relayed"),
}
REPAIRS = _counter(
    "gridbus_repairs_total",
    "Disagreements left by a fault and repaired: registered_reemitted (a case stuck in `registered`: its "
    "case.registered published again), clocks_rearmed (an order of a case dispatched, acknowledged, in progress or "
    "suspended without SLA clocks: armed from the case, its acknowledgements and suspensions replayed), "
    "outbox_relayed (events stored but unconfirmed, published again by the relay).",
    ["service", "kind"],
    owner=("intake", "sla"),
    init=lambda k: [(k.service, kind) for kind in REPAIR_KINDS.get(k.service, ())],
)
CONSUMER_HELD = _gauge(
    "gridbus_consumer_held_messages",
    "Messages a consumer holds right now because a dependency is down (0 when healthy).",
    ["service", "queue"],
    owner=EVERY,
)

# -- intake ---------------------------------------------------------------------------
REPORTS_RECEIVED = _counter(
    "gridbus_reports_received_total",
    "Reports received, by channel and outcome.",
    ["channel", "outcome"],
    owner="intake",
    init=lambda k: product(REPORT_CHANNELS, REPORT_OUTCOMES),
)
CASES_REGISTERED = _counter(
    "gridbus_cases_registered_total",
    "Cases registered.",
    ["street", "category_class"],
    owner="intake",
    init=lambda k: product(k.streets, k.category_classes),
)
PIPELINE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 30, 60, 300, 900, 3600, 4 * 3600, 86400, 3 * 86400, 7 * 86400)
PIPELINE_LATENCY = _histogram(
    "gridbus_pipeline_latency_seconds",
    "Time from a report's registration to its first dispatch order, to the first acknowledgement "
    "(签收) and to resolution, by stage.",
    ["stage"],
    owner="intake",
    buckets=PIPELINE_BUCKETS,
    init=lambda k: [(s,) for s in PIPELINE_STAGES],
)
REPLIES = _counter(
    "gridbus_replies_total",
    "Department replies applied, by action and whether they met the order's deadline (on_time: yes | no | n/a).",
    ["dept", "action", "on_time"],
    owner="intake",
    init=lambda k: [(d, a, t) for d in k.depts for a, t in REPLY_OUTCOMES],
)
OPEN_CASES = _gauge(
    "gridbus_open_cases",
    "Cases not closed, cancelled or duplicate, by street, the active assignment's department and level, and "
    "age since registration (lt_4h, 4h_1d, 1d_3d, 3d_7d, gt_7d); recomputed from the store every 30 s, the same "
    "in every intake replica (aggregate with max).",
    ["street", "dept", "level", "age"],
    owner="intake",
)
OUTBOX_PENDING = _gauge("gridbus_outbox_pending", "Events stored but not yet confirmed by the broker.", owner="intake")
OUTBOX_OLDEST_AGE = _gauge(
    "gridbus_outbox_oldest_age_seconds",
    "Age of the oldest event in the service's outbox (stored, not yet "
    "confirmed by the broker; since it was stored or last taken by the relay); 0 when the outbox is empty.",
    owner=("intake", "sla"),
)
REQUEST_BYTES_REJECTED = _counter("gridbus_request_too_large_total", "HTTP bodies refused with 413.", owner="intake")
HTTP_READ_TIMEOUTS = _counter(
    "gridbus_http_read_timeouts_total", "HTTP requests whose body did not arrive in time (408).", owner="intake"
)
HTTP_RATE_LIMITED = _counter(
    "gridbus_http_rate_limited_total",
    "HTTP requests refused with 429, by role.",
    ["role"],
    owner="intake",
    init=lambda k: [(r,) for r in ("grid_app", "department", "ops", "open311", "station")],
)
HTTP_DEPENDENCY_UNAVAILABLE = _counter(
    "gridbus_http_dependency_unavailable_total",
    "HTTP requests answered 503 because Redis or the broker was down.",
    owner="intake",
)
HTTP_UNEXPECTED_ERRORS = _counter(
    "gridbus_http_unexpected_errors_total", "HTTP requests answered 500 (a bug).", owner="intake"
)

# -- router ---------------------------------------------------------------------------
CASES_DISPATCHED = _counter(
    "gridbus_cases_dispatched_total",
    "Dispatch orders sent, by department and street.",
    ["dept", "street"],
    owner="router",
    init=lambda k: product(k.depts, k.streets),
)
CASES_UNROUTABLE = _counter(
    "gridbus_cases_unroutable_total",
    "Cases sent to triage.",
    ["street"],
    owner="router",
    init=lambda k: [(s,) for s in k.streets],
)
ROUTES_RELOADS = _counter(
    "gridbus_routes_reloads_total",
    "Reloads of routes.yaml by outcome (loaded, invalid: old tree kept).",
    ["outcome"],
    owner="router",
    init=lambda k: [(o,) for o in ROUTES_OUTCOMES],
)
ROUTES_CONFIG_VALID = _gauge(
    "gridbus_routes_config_valid",
    "1 when the routes.yaml on disk is the tree in use, 0 after a failed reload.",
    owner="router",
)

# -- sla ------------------------------------------------------------------------------
DEADLINES_BREACHED = _counter(
    "gridbus_deadlines_breached_total",
    "Deadlines passed without the matching reply.",
    ["dept", "deadline"],
    owner="sla",
    init=lambda k: product(k.depts, DEADLINES),
)
DEADLINE_WARNINGS = _counter(
    "gridbus_deadline_warnings_total",
    "Deadline warnings sent.",
    ["dept", "deadline"],
    owner="sla",
    init=lambda k: product(k.depts, DEADLINES),
)
TIMER_LATENESS = _histogram(
    "gridbus_sla_firing_lateness_seconds",
    "How late a timer fired after its due time.",
    owner="sla",
)
TIMERS_PENDING = _gauge("gridbus_sla_timers_pending", "Armed timers not yet due.", owner="sla")
TIMER_LAG = _gauge(
    "gridbus_sla_timer_lag_seconds",
    "How far the oldest timer that is due but not fired is behind its due time "
    "(0: nothing overdue); read from Redis every few seconds, apart from the firing loop.",
    owner="sla",
)
DEADLINE_OUTCOMES = ("met", "breached")
DEADLINES_DECIDED = _counter(
    "gridbus_sla_deadlines_decided_total",
    "A department's own acknowledge and handle deadlines when they are decided: met (acknowledged / resolved in "
    "time) or breached (first miss; escalation steps not counted). The population of the breach-rate alert.",
    ["dept", "deadline", "outcome"],
    owner="sla",
    init=lambda k: product(k.depts, DEADLINES, DEADLINE_OUTCOMES),
)
ESCALATIONS = _counter(
    "gridbus_sla_escalations_total",
    "Escalations one grid level up (or repeats at the top).",
    ["dept", "level"],
    owner="sla",
    init=lambda k: product(k.depts, LEVELS),
)
SLA_OUTBOX_PENDING = _gauge(
    "gridbus_sla_outbox_pending", "sla events decided but not yet confirmed by the broker.", owner="sla"
)
# This month's (Asia/Shanghai calendar month) indicators from sla's ledger, by `scope`
# (dept | street; community | patch for on-site counts and 721 shares) and `key` (its code):
# recomputed from Redis, identical in every sla replica (aggregate with max). Counts start at 0
# for every known department and street; a ratio with a zero denominator is not defined and has no series.
_MONTH = ["scope", "key"]
SLA_MONTH_COUNTS = {
    "registered": _gauge(
        "gridbus_sla_month_registered",
        "Cases registered in a street / cases a department received, this month.",
        _MONTH,
        owner="sla",
    ),
    "resolved": _gauge("gridbus_sla_month_resolved", "Resolutions this month.", _MONTH, owner="sla"),
    "resolved_on_time": _gauge(
        "gridbus_sla_month_resolved_on_time",
        "Resolutions before the handle deadline breached, this month.",
        _MONTH,
        owner="sla",
    ),
    "closed": _gauge("gridbus_sla_month_closed", "Cases closed after verification, this month.", _MONTH, owner="sla"),
    "rework": _gauge(
        "gridbus_sla_month_rework", "Verifications failed and cases reopened (返工), this month.", _MONTH, owner="sla"
    ),
    "breaches": _gauge(
        "gridbus_sla_month_breaches", "Missed deadlines (escalation steps included), this month.", _MONTH, owner="sla"
    ),
    "escalations": _gauge(
        "gridbus_sla_month_escalations", "Escalations one grid level up, this month.", _MONTH, owner="sla"
    ),
    "on_site": _gauge(
        "gridbus_sla_month_on_site",
        "Cases handled on site by their reporter (就地处置), this month.",
        _MONTH,
        owner="sla",
    ),
}
SLA_MONTH_RESOLVED_BY_MODE = _gauge(
    "gridbus_sla_month_resolved_by_mode",
    "Resolutions this month by the 721 mode used (service | management | enforcement).",
    [*_MONTH, "mode"],
    owner="sla",
)
SLA_MONTH_RATIOS = {
    "on_time_rate": _gauge(
        "gridbus_sla_month_on_time_ratio", "按期结案率: resolved on time / resolved (0–1).", _MONTH, owner="sla"
    ),
    "closed_rate": _gauge(
        "gridbus_sla_month_closed_ratio", "结案率: closed / registered (0–1, capped).", _MONTH, owner="sla"
    ),
    "rework_rate": _gauge(
        "gridbus_sla_month_rework_ratio", "返工率: rework / resolved (0–1, capped).", _MONTH, owner="sla"
    ),
    "escalation_rate": _gauge(
        "gridbus_sla_month_escalation_ratio", "Escalations / registered (0–1, capped).", _MONTH, owner="sla"
    ),
    "satisfaction_rate": _gauge(
        "gridbus_sla_month_satisfaction_ratio",
        "满意率: evaluations satisfied (basically satisfied in part) / evaluations (0–1).",
        _MONTH,
        owner="sla",
    ),
}
SLA_MONTH_SHARE = _gauge(
    "gridbus_sla_month_721_share_ratio",
    "Share of this month's resolutions by 721 mode (0–1; target 0.7 / 0.2 / 0.1).",
    [*_MONTH, "mode"],
    owner="sla",
)
SLA_MONTH_SCORE = _gauge(
    "gridbus_sla_month_score", "Score 0–100 this month (shared/indicators.py).", _MONTH, owner="sla"
)
SLA_GRADE = _gauge(
    "gridbus_sla_grade",
    "1 for the grade (A–E) a department or street has this month.",
    ["scope", "key", "grade"],
    owner="sla",
)

# -- notifier -------------------------------------------------------------------------
NOTIFICATIONS = _counter(
    "gridbus_notifications_total",
    "Delivery attempts by channel and outcome.",
    ["channel", "outcome"],
    owner="notifier",
    init=lambda k: product(k.channels, ATTEMPT_OUTCOMES),
)
NOTIFICATION_LATENCY = _histogram(
    "gridbus_notification_duration_seconds",
    "Time of one delivery attempt.",
    ["channel"],
    owner="notifier",
    init=lambda k: [(c,) for c in k.channels],
)
NOTIFICATION_DELIVERIES = _counter(
    "gridbus_notification_deliveries_total",
    "Notifications (one per event, recipient and channel) by what finally happened: delivered, dead "
    "(dead-lettered), held (kept for a digest), digested (went out inside a digest), duplicate (already "
    "done, dropped), fallback (given up on this channel, next channel tried), no_address.",
    ["channel", "outcome"],
    owner="notifier",
    init=lambda k: product(k.channels, DELIVERY_OUTCOMES),
)
NOTIFICATION_DELIVERY_LATENCY = _histogram(
    "gridbus_notification_delivery_seconds",
    "From the first attempt of a notification (or its hold) to its delivery, retries and digests included.",
    ["channel"],
    owner="notifier",
    init=lambda k: [(c,) for c in k.channels],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600),
)
NOTIFICATION_DEAD = _counter(
    "gridbus_notification_dead_letters_total",
    "Notifications dead-lettered to notifier.deliveries.dead, by channel and reason: permanent (4xx, bad "
    "address), exhausted (last retry failed), unknown_outcome (crashed twice while sending: not resent).",
    ["channel", "reason"],
    owner="notifier",
    init=lambda k: product(k.channels, DEAD_REASONS),
)
NOTIFIER_QUEUE_MESSAGES = _gauge(
    "gridbus_notifier_queue_messages",
    "Messages waiting in the notifier's work, retry (notifier.retry.*) and dead-letter queues, read by a "
    "passive queue_declare every NOTIFIER_QUEUE_POLL_SECONDS.",
    ["queue"],
    owner="notifier",
)
NOTIFY_CHANNEL_ENABLED = _gauge(
    "gridbus_notify_channel_enabled",
    "1 when the channel can send, 0 when it is not configured (e.g. sms without "
    "GRIDBUS_SMS_URL): its deliveries fall back to the next channel or count as no_address.",
    ["channel"],
    owner="notifier",
)
NOTIFICATIONS_HELD = _gauge(
    "gridbus_notifications_held",
    "Notifications held for a digest (quiet hours or rate limit), not yet sent.",
    owner="notifier",
)

# -- archiver ------------------------------------------------------------------------
ARCHIVED = _counter(
    "gridbus_archived_total",
    "Messages of the record taken in by the archiver: new (written) or repeat.",
    ["kind", "outcome"],
    owner="archiver",
)
ARCHIVE_LAG = _gauge(
    "gridbus_archive_lag_seconds",
    "How far the archive is behind: 0 when it has written the gridbus.audit stream to its end, else now minus "
    "the time of the newest message written (grows while nothing can be written).",
    owner="archiver",
)
ARCHIVE_BACKLOG = _gauge(
    "gridbus_archive_backlog_messages",
    "Messages of the gridbus.audit stream after the offset the archive has written up to (the stream's last "
    "offset minus the stored one).",
    owner="archiver",
)
ARCHIVE_EVICTED = _counter(
    "gridbus_archive_evicted_total",
    "Closed cases older than CASE_HOT_DAYS removed from Redis (served from the archive).",
    owner="archiver",
)


# -- per service ----------------------------------------------------------------------


def declared() -> list[tuple[MetricWrapperBase, tuple[str, ...]]]:
    """Every metric with its owners (`EVERY` = all services): for docs and drift tests."""
    return [(d.metric, d.owner) for d in _DECLARED]


# -- bridge (city platform) ------------------------------------------------------------
BRIDGE_EVENTS_OUT = _counter(
    "gridbus_bridge_events_out_total",
    "Case events delivered to the city platform as CloudEvents.",
    ["target", "outcome"],
    owner="bridge",
    init=lambda k: product(("http", "amqp"), ("delivered", "retried", "rejected")),
)
BRIDGE_TASKS_IN = _counter(
    "gridbus_bridge_tasks_in_total",
    "City-platform tasks taken in as reports (or refused).",
    ["outcome"],
    owner="bridge",
    init=lambda k: [("accepted",), ("invalid",)],
)


def registry_for(known: Known) -> CollectorRegistry:
    """A registry with only the metrics `known.service` owns, known label sets created at 0."""
    registry = CollectorRegistry(auto_describe=True)
    for d in _DECLARED:
        if not d.owned_by(known.service):
            continue
        if d.init is not None:
            for values in d.init(known):
                d.metric.labels(*values)
        registry.register(d.metric)
    return registry


def serve_metrics(known: Known, port: int, host: str = "127.0.0.1", health: Any = None) -> CollectorRegistry:
    """Serve /metrics (Prometheus text format) for one service on its own port, and
    `GET /healthz` there when `health` (a shared.health.Health) is given."""
    registry = registry_for(known)
    if health is None:
        start_http_server(port, addr=host, registry=registry)
        return registry
    from wsgiref.simple_server import make_server

    from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler, make_wsgi_app

    httpd = make_server(
        host, port, health.wsgi(make_wsgi_app(registry)), ThreadingWSGIServer, handler_class=_SilentHandler
    )
    threading.Thread(target=httpd.serve_forever, daemon=True, name=f"metrics:{port}").start()
    return registry


def sample_value(name: str, labels: dict[str, str] | None = None) -> float | None:
    """The current value of one sample (e.g. `gridbus_replies_total` with its labels) in
    this process, whatever registry serves it; None when there is no such sample."""
    wanted = labels or {}
    for d in _DECLARED:
        for family in d.metric.collect():
            for s in family.samples:
                if s.name == name and s.labels == wanted:
                    return s.value
    return None
