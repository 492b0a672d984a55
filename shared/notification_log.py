"""A case's notification log: every notification the notifier finished for a case (one
hash per case, `notify:case:<case id>`, written by the notifier's done script with the
delivery's done marker). The console's case page reads it here, without the notifier."""

from __future__ import annotations

import json
from typing import Any

import redis

from shared import redis_keys as keys


def notifications_of(client: redis.Redis, case_id: str) -> list[dict[str, Any]]:
    """Every finished notification of a case, oldest first."""
    rows = [json.loads(v) for v in client.hgetall(keys.notify_case_log(case_id)).values()]
    return sorted(rows, key=lambda e: (e.get("at", 0), e.get("recipient", "")))
