"""Every Redis key gridbus writes, named once. All keys start with REDIS_KEY_PREFIX."""

from __future__ import annotations

import time

from shared.config import get_settings


def _p() -> str:
    return get_settings().redis_key_prefix


# -- intake: cases -------------------------------------------------------------------
def case(case_id: str) -> str:
    """Hash {doc: Case JSON, version: int}."""
    return f"{_p()}:case:{case_id}"


def report_index(report_id: str) -> str:
    """String: the case id registered for this report id (idempotency)."""
    return f"{_p()}:report:{report_id}"


def rate_bucket(key_id: str) -> str:
    """Hash {tokens, ts}: an API key's token bucket (intake's rate limit; expires when full)."""
    return f"{_p()}:ratelimit:{key_id}"


def case_sequence(district: str, day: str) -> str:
    """Counter: the day's case serial number for a district."""
    return f"{_p()}:caseseq:{district}:{day}"


def cases_by_time() -> str:
    """Sorted set: case id scored by registration time (listing, cursor pagination)."""
    return f"{_p()}:cases:by_time"


def open_cases() -> str:
    """Sorted set: cases not closed, cancelled or duplicate, scored by registration time
    (the operations centre's backlog, gridbus_open_cases)."""
    return f"{_p()}:cases:open"


def open_cases_geo(category: str, day: str | None = None) -> str:
    """Geo set: open cases of a category registered on one UTC day (`YYYYMMDD`, see
    `geo_day`) by location, expiring GEO_DAY_TTL_S after it: near-duplicate detection
    searches only the days of its window, so its cost follows the cases of those days, not
    every case ever registered. Without `day`: the one set per category kept before
    (searched as well, and emptied as searches meet its cases, until it is gone)."""
    return f"{_p()}:geo:{category}" if day is None else f"{_p()}:geo:{category}:{day}"


GEO_DAY_TTL_S = 32 * 86400  # a day's geo set outlives the longest duplicate window (30 days) by a day or two


def geo_day(ts: float) -> str:
    """The UTC day of a registration time, as the geo sets name it."""
    return time.strftime("%Y%m%d", time.gmtime(ts))


def outbox(prefix: str | None = None) -> str:
    """Hash message_id → event JSON: stored with the case (or API key), removed once confirmed."""
    return f"{prefix or _p()}:outbox"


def outbox_times(prefix: str | None = None) -> str:
    """Sorted set message_id → time stored (the relay re-publishes old entries)."""
    return f"{prefix or _p()}:outbox:times"


def reconcile_lease(name: str) -> str:
    """String with a TTL: which replica of `name` (intake, sla) runs the reconciler now."""
    return f"{_p()}:reconcile:{name}:lease"


def reconcile_tries(name: str) -> str:
    """Hash case_id → times the reconciler `name` repaired it (it gives up after a few)."""
    return f"{_p()}:reconcile:{name}:tries"


# -- intake: API keys ----------------------------------------------------------------
def api_key(key_id: str, prefix: str | None = None) -> str:
    """Hash {secret_sha256, role, dept, name, created_at, last_used_at, revoked_at}.
    (`prefix`: another stack's keys, e.g. a test or benchmark stack.)"""
    return f"{prefix or _p()}:apikey:{key_id}"


def api_keys(prefix: str | None = None) -> str:
    """Set: ids of every key ever created (listing; revoked ones stay, marked)."""
    return f"{prefix or _p()}:apikeys"


# -- sla: timers ---------------------------------------------------------------------
def timers_due() -> str:
    """Sorted set timer id → due time (unix seconds)."""
    return f"{_p()}:sla:due"


def timers_leased() -> str:
    """Sorted set timer id → lease expiry: claimed, being published."""
    return f"{_p()}:sla:leased"


def sla_case(case_id: str) -> str:
    """String: the compact clock document (services/sla/codec.py) of a case with no clock running,
    kept for `gridbus sla explain` and a later re-dispatch; it expires (a live case's is in `sla_live`)."""
    return f"{_p()}:sla:case:{case_id}"


def sla_live(bucket: int) -> str:
    """Hash case id → compact clock document (services/sla/codec.py) of every case with a running or
    paused clock, spread over a fixed number of buckets (services/sla/store.py); the timers' source."""
    return f"{_p()}:sla:live:{bucket}"


def sla_history(case_id: str) -> str:
    """String: a case's applied message ids and clock log (msgpack items), not needed to fire."""
    return f"{_p()}:sla:hist:{case_id}"


def sla_outbox() -> str:
    """Hash message_id → event JSON: decided by sla, not yet confirmed by the broker."""
    return f"{_p()}:sla:outbox"


def sla_outbox_times() -> str:
    """Sorted set message_id → time stored (sla's relay re-publishes old entries)."""
    return f"{_p()}:sla:outbox:times"


def sla_ledger() -> str:
    """Hash breach id → accountability ledger entry JSON."""
    return f"{_p()}:sla:ledger"


def sla_ledger_by_time() -> str:
    """Sorted set breach id → breach time (unix seconds)."""
    return f"{_p()}:sla:ledger:by_time"


def sla_ledger_ended() -> str:
    """Hash breach id → when the missed deadline's goal was reached at last (how late it was)."""
    return f"{_p()}:sla:ledger:ended"


def sla_indicators(period: str) -> str:
    """Hash `<scope>|<key>|<counter>` → count, for one period (YYYY-MM, local time)."""
    return f"{_p()}:sla:ind:{period}"


# -- notifier ------------------------------------------------------------------------
def delivery_sent(delivery_id: str) -> str:
    """String: set once a delivery succeeded (dedup of repeated events)."""
    return f"{_p()}:notify:sent:{delivery_id}"


def delivery_state(delivery_id: str) -> str:
    """Hash `a<attempt>:sends` → sends started for that attempt (crash detection: at most one
    resend), `a<attempt>:done` → what was done after it (retry published)."""
    return f"{_p()}:notify:state:{delivery_id}"


def delivery_lease(delivery_id: str) -> str:
    """String with TTL: the replica currently sending this delivery (its token)."""
    return f"{_p()}:notify:lease:{delivery_id}"


def notify_plan(event_message_id: str) -> str:
    """String (JSON list of Delivery) with TTL: an event's planned deliveries while the
    notifier sends them itself (services/notifier/plans.py); deleted once they are all handled."""
    return f"{_p()}:notify:plan:{event_message_id}"


def notify_held(bucket: str) -> str:
    """Hash delivery id → Delivery JSON: held for a digest to one recipient on one channel."""
    return f"{_p()}:notify:held:{bucket}"


def notify_held_claimed(bucket: str) -> str:
    """Hash like `notify_held`: the held messages a flusher claimed and is turning into a digest."""
    return f"{_p()}:notify:held_claimed:{bucket}"


def notify_release() -> str:
    """Sorted set bucket → when its held messages go out as a digest (unix seconds)."""
    return f"{_p()}:notify:release"


def notify_release_leased() -> str:
    """Sorted set bucket → lease expiry: claimed by a flusher, digest being published."""
    return f"{_p()}:notify:release_leased"


def notify_rate(bucket: str, window: int) -> str:
    """Sorted set delivery id → arrival rank within one rate-limit window of a recipient."""
    return f"{_p()}:notify:rate:{bucket}:{window}"


def notify_case_log(case_id: str) -> str:
    """Hash delivery id → what became of it (JSON: event, recipient, channel, outcome, at):
    every notification of a case, for the console's case page (expires with the dedup marker)."""
    return f"{_p()}:notify:case:{case_id}"


# -- console -------------------------------------------------------------------------
def console_session(session_id: str) -> str:
    """Hash {key_id, csrf, created_at} with TTL: one logged-in browser of the console."""
    return f"{_p()}:console:session:{session_id}"


# -- bridge (city platform) ------------------------------------------------------------
def bridge_external(case_id: str) -> str:
    """Hash: the external system and id of a case taken in from the city platform."""
    return f"{_p()}:bridge:ext:{case_id}"
