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
OUTBOX_PENDING = Gauge("gridbus_outbox_pending", "Events stored but not yet confirmed by the broker.")
REQUEST_BYTES_REJECTED = Counter("gridbus_request_too_large_total", "HTTP bodies refused with 413.")

# -- router ---------------------------------------------------------------------------
CASES_DISPATCHED = Counter(
    "gridbus_cases_dispatched_total", "Dispatch orders sent, by department and street.", ["dept", "street"]
)
CASES_UNROUTABLE = Counter("gridbus_cases_unroutable_total", "Cases sent to triage.", ["street"])

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

# -- notifier -------------------------------------------------------------------------
NOTIFICATIONS = Counter(
    "gridbus_notifications_total", "Delivery attempts by channel and outcome.", ["channel", "outcome"]
)
NOTIFICATION_LATENCY = Histogram(
    "gridbus_notification_duration_seconds", "Time of one delivery attempt.", ["channel"], buckets=LATENCY_BUCKETS
)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve /metrics (Prometheus text format) on its own port."""
    start_http_server(port, addr=host)
