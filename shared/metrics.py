"""Every Prometheus metric of gridbus, named once (docs/metrics.md describes each).

Labels are bounded: service, entrypoint, department, street, category class, level,
channel, outcome. Never a case id.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# -- per entrypoint, every service --------------------------------------------------
MESSAGES_IN = Counter(
    "gridbus_messages_in_total", "Messages or requests taken in by an entrypoint.", ["service", "entrypoint"]
)
MESSAGES_OUT = Counter(
    "gridbus_messages_out_total", "Messages published (confirmed by the broker).", ["service", "exchange", "kind"]
)
HANDLER_ERRORS = Counter(
    "gridbus_handler_errors_total", "Entrypoint calls that raised.", ["service", "entrypoint", "error"]
)
HANDLER_LATENCY = Histogram(
    "gridbus_handler_duration_seconds", "Time spent in an entrypoint.", ["service", "entrypoint"],
    buckets=LATENCY_BUCKETS,
)
DEAD_LETTERED = Counter(
    "gridbus_dead_lettered_total", "Messages sent to a dead-letter queue by a service, by reason.",
    ["service", "queue", "reason"],
)

# -- intake ---------------------------------------------------------------------------
REPORTS_RECEIVED = Counter(
    "gridbus_reports_received_total", "Reports received, by channel and outcome.", ["channel", "outcome"]
)
CASES_REGISTERED = Counter(
    "gridbus_cases_registered_total", "Cases registered.", ["street", "category_class"]
)
PIPELINE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 30, 60, 300, 900, 3600, 4 * 3600, 86400, 3 * 86400, 7 * 86400)
PIPELINE_LATENCY = Histogram(
    "gridbus_pipeline_latency_seconds",
    "Time from a report's registration to its first dispatch order, to the first acknowledgement "
    "(签收) and to resolution, by stage.",
    ["stage"], buckets=PIPELINE_BUCKETS,
)
REPLIES = Counter(
    "gridbus_replies_total", "Department replies applied, by action and whether they met the order's deadline "
    "(on_time: yes | no | n/a).", ["dept", "action", "on_time"],
)
OPEN_CASES = Gauge(
    "gridbus_open_cases",
    "Cases not closed, cancelled or duplicate, by street, the active assignment's department and level, and "
    "age since registration (lt_4h, 4h_1d, 1d_3d, 3d_7d, gt_7d); recomputed from the store every 30 s, the same "
    "in every intake replica (aggregate with max).",
    ["street", "dept", "level", "age"],
)
OUTBOX_PENDING = Gauge("gridbus_outbox_pending", "Events stored but not yet confirmed by the broker.")
REQUEST_BYTES_REJECTED = Counter("gridbus_request_too_large_total", "HTTP bodies refused with 413.")

# -- router ---------------------------------------------------------------------------
CASES_DISPATCHED = Counter(
    "gridbus_cases_dispatched_total", "Dispatch orders sent, by department and street.", ["dept", "street"]
)
CASES_UNROUTABLE = Counter("gridbus_cases_unroutable_total", "Cases sent to triage.", ["street"])
ROUTES_RELOADS = Counter(
    "gridbus_routes_reloads_total", "Reloads of routes.yaml by outcome (loaded, invalid: old tree kept).", ["outcome"]
)
ROUTES_CONFIG_VALID = Gauge(
    "gridbus_routes_config_valid", "1 when the routes.yaml on disk is the tree in use, 0 after a failed reload."
)

# -- sla ------------------------------------------------------------------------------
TIMERS_ARMED = Counter("gridbus_sla_timers_armed_total", "Deadline timers armed.", ["deadline"])
DEADLINES_BREACHED = Counter(
    "gridbus_deadlines_breached_total", "Deadlines passed without the matching reply.", ["dept", "deadline"]
)
DEADLINE_WARNINGS = Counter("gridbus_deadline_warnings_total", "Deadline warnings sent.", ["dept", "deadline"])
TIMER_LATENESS = Histogram(
    "gridbus_sla_firing_lateness_seconds", "How late a timer fired after its due time.", buckets=LATENCY_BUCKETS
)
TIMERS_PENDING = Gauge("gridbus_sla_timers_pending", "Armed timers not yet due.")
ESCALATIONS = Counter(
    "gridbus_sla_escalations_total", "Escalations one grid level up (or repeats at the top).", ["dept", "level"]
)
SLA_OUTBOX_PENDING = Gauge("gridbus_sla_outbox_pending", "sla events decided but not yet confirmed by the broker.")
SLA_INDICATOR = Gauge(
    "gridbus_sla_indicator",
    "Indicators of the current month by department or street (counts, rates 0–1, score 0–100, 721 shares).",
    ["scope", "key", "indicator"],
)
SLA_GRADE = Gauge(
    "gridbus_sla_grade", "1 for the grade (A–E) a department or street has this month.", ["scope", "key", "grade"]
)

# -- notifier -------------------------------------------------------------------------
NOTIFICATIONS = Counter(
    "gridbus_notifications_total", "Delivery attempts by channel and outcome.", ["channel", "outcome"]
)
NOTIFICATION_LATENCY = Histogram(
    "gridbus_notification_duration_seconds", "Time of one delivery attempt.", ["channel"], buckets=LATENCY_BUCKETS
)

NOTIFICATION_DELIVERIES = Counter(
    "gridbus_notification_deliveries_total",
    "Notifications (one per event, recipient and channel) by what finally happened: delivered, dead "
    "(dead-lettered), held (kept for a digest), digested (went out inside a digest), duplicate (already "
    "done, dropped), fallback (given up on this channel, next channel tried), no_address.",
    ["channel", "outcome"],
)
NOTIFICATION_DELIVERY_LATENCY = Histogram(
    "gridbus_notification_delivery_seconds",
    "From the first attempt of a notification (or its hold) to its delivery, retries and digests included.",
    ["channel"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600),
)
NOTIFICATION_DEAD = Counter(
    "gridbus_notification_dead_letters_total",
    "Notifications dead-lettered to notifier.deliveries.dead, by channel and reason: permanent (4xx, bad "
    "address), exhausted (last retry failed), unknown_outcome (crashed twice while sending: not resent).",
    ["channel", "reason"],
)
NOTIFIER_QUEUE_MESSAGES = Gauge(
    "gridbus_notifier_queue_messages",
    "Messages waiting in the notifier's work, retry (notifier.retry.*) and dead-letter queues, read by a "
    "passive queue_declare every NOTIFIER_QUEUE_POLL_SECONDS.",
    ["queue"],
)
NOTIFICATIONS_HELD = Gauge(
    "gridbus_notifications_held", "Notifications held for a digest (quiet hours or rate limit), not yet sent."
)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve /metrics (Prometheus text format) on its own port."""
    start_http_server(port, addr=host)
