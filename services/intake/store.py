"""Cases in Redis, written atomically together with the events they cause.

Each write is one Lua script that stores the case *and* puts the resulting event in an
outbox. The event is then published (confirmed) and removed from the outbox; if the
process dies in between, the outbox relay publishes it later. So a case that was
accepted always gets its event out, at least once (consumers are idempotent).

Every change after registration is a compare-and-set on the case's version: two
concurrent writers cannot both win.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, cast

import redis

from shared import redis_keys as keys
from shared.lifecycle import FINAL_STATES
from shared.models import Case, CaseRecorded, Envelope
from shared.outbox import intake_outbox
from shared.scripts import Lua

if TYPE_CHECKING:
    from shared.archive import ArchiveReader
    from shared.bus import Bus

_REGISTER = Lua("services.intake", "register")
_COMPARE_AND_SET = Lua("services.intake", "compare_and_set")
_RESERVE = Lua("services.intake", "reserve")
CASE_SEQUENCE_TTL_S = 3 * 86400  # a day's case serial counter outlives its day (time zones, late replicas)


def _open_flag(case: Case) -> str:
    return "0" if case.status in FINAL_STATES else "1"


def record_id(case_id: str, version: int) -> str:
    return f"case:{case_id}:v{version}"


def record_of(case: Case, idempotency_key: str | None = None) -> CaseRecorded:
    """The archive's copy of the case as stored now (one per version: a repeat has the same id)."""
    return CaseRecorded(
        message_id=record_id(case.case_id, case.version),
        case_id=case.case_id,
        correlation_id=case.correlation_id,
        occurred_at=case.updated_at,
        version=case.version,
        idempotency_key=idempotency_key,
        case=case,
    )


class CaseNotFound(KeyError):
    pass


class VersionConflict(RuntimeError):
    """Somebody else changed the case first; reload and try again."""


@dataclass(frozen=True)
class Registration:
    case_id: str
    created: bool


class CaseStore:
    def __init__(
        self,
        client: redis.Redis,
        district: str,
        archive: "ArchiveReader | None" = None,
        confirmed: Callable[[list[str]], None] | None = None,
        publish_later: "Callable[[Bus, list[Envelope]], None] | None" = None,
    ) -> None:
        """`archive`: where cases that left Redis (CASE_HOT_DAYS after closing) are read from;
        `confirmed`: what takes the ids of published events out of the outbox (the service's
        batched `OutboxCompletions.add`, services/intake/publishing.py; default at once);
        `publish_later`: what publishes the archive's records in batches (the service's
        `OutboxCompletions.publish_later`; default: with the other events)."""
        self.r = client
        self.district = district
        self.archive = archive
        self.outbox = intake_outbox(client)
        self.confirmed = confirmed or self.outbox.done
        self.publish_later = publish_later
        self._register = _REGISTER.on(client)
        self._cas = _COMPARE_AND_SET.on(client)
        self._reserve = _RESERVE.on(client)

    # ------------------------------------------------------------------ ids
    def existing_case_for(self, report_id: str) -> str | None:
        return cast(str | None, self.r.get(keys.report_index(report_id)))

    def reserve(
        self, report_id: str, local_day: datetime, geo_sets: list[str], near: list[float]
    ) -> tuple[str | None, str | None, list[Any]]:
        """A registration's first round trip (lua/reserve.lua): (the known report's case id,
        None, []) or (None, the next case id of `local_day`, the geo search's rows per set
        of `geo_sets`, none searched when empty; `near`: duplicates.near_args)."""
        day = local_day.strftime("%Y%m%d")
        answer = self._reserve(
            keys=[keys.report_index(report_id), keys.case_sequence(self.district, day), *geo_sets],
            args=[CASE_SEQUENCE_TTL_S, *(near if geo_sets else ["", "", ""])],
        )
        if int(answer[0]):
            return cast(str, answer[1]), None, []
        return None, self._case_id(day, int(answer[1])), list(answer[2:])

    def _case_id(self, day: str, serial: int) -> str:
        """`450305-20261127-000123`: district, local registration day, daily serial (reserve.lua).
        Sortable as text within a district; human-readable over the phone."""
        return f"{self.district}-{day}-{serial:06d}"

    # ------------------------------------------------------------------ writes
    def register(
        self,
        report_id: str,
        case: Case,
        event: Envelope,
        index_location: bool = True,
        counted: tuple[str, str] | None = None,
    ) -> Registration:
        """Store a new case and its first event, unless the report (idempotency key) is
        known; an open case also enters its category's geo index of its registration day
        (services/intake/duplicates.py). The case's record for the archive goes into the
        outbox with the event, to be published by the relay (OUTBOX_RELAY_AFTER_SECONDS)
        unless the case's next version replaces it first (`save`): the router's dispatch
        follows within milliseconds, and its record is all the archive keeps of the two.
        `counted`: (period, field) of the indicator the registration raises by one, in the
        same script (so exactly once)."""
        lon, lat = (case.location.lon, case.location.lat) if index_location else ("", "")
        record = record_of(case, report_id)
        created, case_id = self._register(
            keys=[
                keys.report_index(report_id),
                keys.case(case.case_id),
                keys.cases_by_time(),
                *self.outbox.keys(),
                keys.open_cases_geo(case.category, keys.geo_day(case.registered_at.timestamp())),
                keys.open_cases(),
                keys.sla_indicators(counted[0] if counted else "-"),
            ],
            args=[
                case.case_id,
                case.model_dump_json(),
                case.registered_at.timestamp(),
                event.message_id,
                event.model_dump_json(),
                time.time(),
                case.version,
                lon,
                lat,
                _open_flag(case),
                record.message_id,
                record.model_dump_json(),
                keys.GEO_DAY_TTL_S,
                report_id,
                counted[1] if counted else "",
            ],
        )
        return Registration(case_id=case_id, created=bool(created))

    def save(self, case: Case, expected_version: int, events: list[Envelope]) -> Case:
        """Compare-and-set: store `case` (version bumped) and its events, atomically. The
        case's record for the archive is put first in `events` (the caller publishes them
        all), with the idempotency key the case was registered under. The registration's
        record, left in the outbox unpublished (`register`), is replaced by this one."""
        case.version = expected_version + 1
        record = record_of(case)
        doc = case.model_dump_json()
        args: list[Any] = [
            expected_version,
            doc,
            time.time(),
            _open_flag(case),
            case.registered_at.timestamp(),
            case.case_id,
            record_id(case.case_id, 1) if expected_version == 1 else "",
            record.message_id,
            # the script completes it with the key and `doc`: the case is serialised once
            record.model_dump_json(exclude={"case", "idempotency_key"}),
        ]
        for e in events:
            args += [e.message_id, e.model_dump_json()]
        result = self._cas(keys=[keys.case(case.case_id), *self.outbox.keys(), keys.open_cases()], args=args)
        if result == -1:
            raise CaseNotFound(case.case_id)
        if result == -2:
            raise VersionConflict(case.case_id)
        record.idempotency_key = result[1] or None
        events.insert(0, record)
        return case

    # ------------------------------------------------------------------ reads
    def get(self, case_id: str) -> Case:
        doc = self.r.hget(keys.case(case_id), "doc")
        if doc is None:
            archived = self.archive.get(case_id) if self.archive is not None else None
            if archived is None:
                raise CaseNotFound(case_id)
            return archived
        return Case.model_validate_json(doc)

    def get_many(self, case_ids: list[str]) -> list[Case | None]:
        """Several cases in one round trip (None where a case is missing)."""
        pipe = self.r.pipeline(transaction=False)
        for case_id in case_ids:
            pipe.hget(keys.case(case_id), "doc")
        found = [Case.model_validate_json(doc) if doc else None for doc in pipe.execute()]
        missing = [cid for cid, c in zip(case_ids, found, strict=True) if c is None]
        if missing and self.archive is not None:  # listed, but gone from Redis: read from the archive
            archived = self.archive.get_many(missing)
            found = [c if c is not None else archived.get(cid) for cid, c in zip(case_ids, found, strict=True)]
        return found

    # ------------------------------------------------------------------ open cases
    def open_case_ids(self) -> list[str]:
        return cast(list[str], self.r.zrange(keys.open_cases(), 0, -1))
