"""Near-duplicate detection with Redis geo indexes per category and registration day.

Every open case sits in `geo:<category>:<day>` (the UTC day it was registered, expiring
after the longest window) at its location. A new report looks for the nearest open case
of the same category within the class's radius, registered within the window: only the
days the window spans are searched, so a search costs what the window's cases nearby
cost, whatever the number of cases kept (bench/bench_growth.py); the one set per category
kept before is searched too until it is gone. Found → the new case is a `duplicate` of
it. Cases that have closed or aged out are removed from the index when a search meets
them, and a day's set expires, so the index needs no sweeper.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import redis
from pydantic import BaseModel, Field

from shared import redis_keys as keys
from shared.config import get_settings
from shared.configfiles import load_yaml_model
from shared.lifecycle import OPEN_STATES
from shared.models import Case
from shared.scripts import Lua

_NEARBY = Lua("services.intake", "nearby")


class DuplicatePolicy(BaseModel):
    radius_m: float = Field(50, gt=0, le=5000)
    window_hours: float = Field(24, gt=0, le=24 * 30)
    classes: dict[str, float] = Field(default_factory=dict, description="class code → radius in metres")

    def radius_for(self, category: str) -> float:
        return self.classes.get(category[:2], self.radius_m)


def load_duplicate_policy(path: Path | None = None) -> DuplicatePolicy:
    path = path or get_settings().config_dir / "duplicates.yaml"
    if not path.exists():
        return DuplicatePolicy()
    return load_yaml_model(path, DuplicatePolicy)


def geo_keys(policy: DuplicatePolicy, category: str, now: datetime) -> list[str]:
    """The geo sets a search at `now` reads: the days its window spans, and the set per
    category kept before the day sets."""
    out = [keys.open_cases_geo(category)]
    day = (now - timedelta(hours=policy.window_hours)).timestamp()
    while day < now.timestamp() + 86400:  # the window's days (and tomorrow's: a replica's clock ahead)
        out.append(keys.open_cases_geo(category, keys.geo_day(day)))
        day += 86400
    return list(dict.fromkeys(out))


def near_args(policy: DuplicatePolicy, category: str, lat: float, lon: float) -> list[float]:
    """The search's ARGV for geo_near.lua (the scripts `nearby` and intake's `reserve`):
    lon, lat and the class's radius in metres; the results go to `nearest`."""
    return [lon, lat, policy.radius_for(category)]


def nearest(sets: list[str], results: list[Any]) -> list[tuple[str, str]]:
    """The searches' cases, nearest first (at most 10), each with the set it was found in
    (`results`: geo_near.lua's rows per set, the distance as text)."""
    found = sorted(
        (float(dist), case_id, key)
        for key, rows in zip(sets, results, strict=True)
        for case_id, dist in cast(list[tuple[str, float]], rows)
    )
    return [(case_id, key) for _dist, case_id, key in found[:10]]


def original_among(
    client: redis.Redis, policy: DuplicatePolicy, category: str, candidates: list[tuple[str, str]], now: datetime
) -> str | None:
    """The first of `candidates` (nearest first) that is open and recent enough; the others
    met on the way leave the index. Their documents come in one round trip."""
    if not candidates:
        return None
    oldest = now - timedelta(hours=policy.window_hours)
    pipe = client.pipeline(transaction=False)
    for case_id, _key in candidates:
        pipe.hget(keys.case(case_id), "doc")
    stale: list[tuple[str, str]] = []
    original = None
    for (case_id, key), doc in zip(candidates, pipe.execute(), strict=True):
        if doc is None:
            stale.append((key, case_id))
            continue
        case = Case.model_validate_json(doc)
        if case.status not in OPEN_STATES or case.registered_at < oldest:
            stale.append((key, case_id))
            continue
        original = case_id
        break
    if stale:
        pipe = client.pipeline(transaction=False)
        for key, case_id in stale:
            pipe.zrem(key, case_id)
        pipe.execute()
    return original


def find_original(
    client: redis.Redis, policy: DuplicatePolicy, category: str, lat: float, lon: float, now: datetime
) -> str | None:
    """The nearest open case this report repeats, or None (registration runs the same
    search in its first round trip, services/intake/lua/reserve.lua)."""
    sets = geo_keys(policy, category, now)
    found = _NEARBY.on(client)(keys=sets, args=near_args(policy, category, lat, lon))
    return original_among(client, policy, category, nearest(sets, found), now)
