"""Near-duplicate detection with a Redis geo index per category.

Every open case sits in `geo:<category>` at its location. A new report looks for the
nearest open case of the same category within the class's radius, registered within the
window; found → the new case is a `duplicate` of it. Cases that have closed or aged out
are removed from the index when a search meets them, so the index needs no sweeper.
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


def search_nearby(pipe: Any, policy: DuplicatePolicy, category: str, lat: float, lon: float) -> None:
    """Queue the geo search for open cases near a report on `pipe` (a pipeline the caller
    executes with its own commands); its result goes to `original_among`."""
    pipe.geosearch(
        keys.open_cases_geo(category),
        longitude=lon,
        latitude=lat,
        radius=policy.radius_for(category),
        unit="m",
        sort="ASC",
        count=10,
    )


def original_among(
    client: redis.Redis, policy: DuplicatePolicy, category: str, candidates: list[str], now: datetime
) -> str | None:
    """The first of `candidates` (nearest first) that is open and recent enough; the others
    met on the way leave the index."""
    geo_key = keys.open_cases_geo(category)
    oldest = now - timedelta(hours=policy.window_hours)
    for case_id in candidates:
        doc = client.hget(keys.case(case_id), "doc")
        if doc is None:
            client.zrem(geo_key, case_id)
            continue
        case = Case.model_validate_json(doc)
        if case.status not in OPEN_STATES or case.registered_at < oldest:
            client.zrem(geo_key, case_id)
            continue
        return case_id
    return None


def find_original(
    client: redis.Redis, policy: DuplicatePolicy, category: str, lat: float, lon: float, now: datetime
) -> str | None:
    """The nearest open case this report repeats, or None."""
    pipe = client.pipeline(transaction=False)
    search_nearby(pipe, policy, category, lat, lon)
    (candidates,) = pipe.execute()
    return original_among(client, policy, category, cast(list[str], candidates), now)
