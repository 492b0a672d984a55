"""Intake's registration on the real Redis and broker, counted in round trips: the case
number comes with the idempotency look-up and the duplicate search (one script,
services/intake/lua/reserve.lua), and confirmed events leave the outbox in batches off
the request path (services/intake/publishing.py `OutboxCompletions`) without the relay
publishing them again meanwhile."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import eventlet
import pytest
import redis

from services.intake.cases import Registrar, apply_event
from services.intake.duplicates import DuplicatePolicy
from services.intake.publishing import OutboxCompletions, publish_stored, register_report, relay_stored
from services.intake.store import CaseStore
from services.intake.validation import InvalidInput
from shared import redis_keys as keys
from shared import topology
from shared.amqpclient import connection
from shared.bus import Bus
from shared.catalog import load_catalog
from shared.grid import load_grid
from shared.models import CaseRecorded, CaseStatus, Envelope, Report
from shared.outbox import intake_outbox
from shared.scripts import Lua
from tests.integration.test_dispatch_events import _dispatch

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 27, 1, 30, tzinfo=timezone.utc)  # 2026-11-27 09:30 in Guilin
LAT, LON = 25.2800, 110.3120  # 辰山社区第一片区


class CountingConnection(redis.Connection):
    """A real connection that counts what it writes: one write is one round trip (a
    pipeline is one write)."""

    writes = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        super().send_packed_command(command, check_health)


@pytest.fixture()
def counted(stack_env: dict[str, str]) -> redis.Redis:
    pool = redis.ConnectionPool.from_url(
        stack_env["REDIS_URL"], decode_responses=True, connection_class=CountingConnection
    )
    client = redis.Redis(connection_pool=pool)
    client.ping()
    for name in ("reserve", "register", "nearby", "compare_and_set"):  # loaded once, not counted below
        client.script_load(Lua("services.intake", name).source)
    return client


def report(rid: str, category: str = "01037", lat: float = LAT) -> Report:
    return Report.model_validate(
        {
            "report_id": rid,
            "category": category,
            "severity": "normal",
            "description": "路灯不亮",
            "filing_condition": "连续3盏以上不亮",
            "location": {"lat": lat, "lon": LON, "address": "七星区穿山路12号"},
            "reporter": {"id": "g-1", "role": "grid_officer", "name": "网格员", "phone": "13900000007"},
            "observed_at": NOW.isoformat(),
        }
    )


def registrar(client: redis.Redis, store: CaseStore | None = None) -> Registrar:
    store = store or CaseStore(client, "450305")
    return Registrar(store, load_catalog(), load_grid(), "Asia/Shanghai", DuplicatePolicy(radius_m=50))


def writes(fn: Any) -> tuple[Any, int]:
    before = CountingConnection.writes
    out = fn()
    return out, CountingConnection.writes - before


def test_a_new_report_is_two_round_trips_and_a_repeat_one(counted: redis.Redis) -> None:
    reg = registrar(counted)
    first, n_first = writes(lambda: reg.register(report("rt-1"), now=NOW))
    assert first.created and first.case_id == "450305-20261127-000001"
    assert n_first == 2  # reserve (look-up, case number, duplicate search), register
    again, n_again = writes(lambda: reg.register(report("rt-1"), now=NOW))
    assert (again.case_id, again.created, n_again) == (first.case_id, False, 1)
    # the repeat took no number: the next report's follows the first's without a gap
    assert reg.register(report("rt-2", lat=LAT + 0.01), now=NOW).case_id == "450305-20261127-000002"
    assert counted.ttl(keys.case_sequence("450305", "20261127")) > 0


def test_a_report_near_an_open_case_is_its_duplicate_in_five(counted: redis.Redis) -> None:
    reg = registrar(counted)
    first = reg.register(report("near-1"), now=NOW)
    second, n = writes(lambda: reg.register(report("near-2", lat=LAT + 0.0001), now=NOW))  # ~11 m away
    assert second.duplicate_of == first.case_id
    # reserve, the candidates' documents, register, then the original's link (read and compare-and-set)
    assert n == 5


def test_bad_input_takes_no_case_number_but_a_known_report_keeps_its_case(counted: redis.Redis) -> None:
    reg = registrar(counted)
    with pytest.raises(InvalidInput) as bad:
        reg.register(report("bad-1", category="99999"), now=NOW)
    assert bad.value.errors[0].field == "category"
    with pytest.raises(InvalidInput) as outside:
        reg.register(report("bad-2", lat=30.0), now=NOW)
    assert outside.value.errors[0].field == "location"
    assert counted.get(keys.case_sequence("450305", "20261127")) is None
    known = reg.register(report("known-1"), now=NOW)
    assert known.case_id == "450305-20261127-000001"
    # the same report id again with a category unknown now: answered with its case, not a 422
    assert reg.register(report("known-1", category="99999"), now=NOW).case_id == known.case_id


@pytest.fixture()
def bus(stack_env: dict[str, str]) -> Bus:
    with connection(stack_env["AMQP_URI"]) as conn:
        topology.declare(conn.channel(), topology.default_topology())
    return Bus(stack_env["AMQP_URI"], "intake")


def test_confirmed_events_leave_the_outbox_in_one_batch_off_the_request_path(
    counted: redis.Redis, bus: Bus, redis_client: redis.Redis
) -> None:
    completions = OutboxCompletions(intake_outbox(counted), interval_s=0.2)
    store = CaseStore(counted, "450305", confirmed=completions.add)
    reg = registrar(counted, store)
    results = []
    for i in range(5):
        result, n = writes(lambda i=i: register_report(bus, store, reg, report(f"ob-{i}", lat=LAT + i * 0.002), "http"))
        assert n == 2  # nothing after the confirm on the request's own path
        results.append(result)
    box = intake_outbox(redis_client)
    # each case's event published, its record waiting for the case's next version
    assert box.size() == 10 and completions.pending() == 5
    # meanwhile the relay (entries older than OUTBOX_RELAY_AFTER_SECONDS) takes none of them
    assert box.take(5.0) == []
    _, n = writes(lambda: eventlet.sleep(0.5))  # the batch goes: one round trip for all five
    assert n == 1 and completions.pending() == 0
    assert sorted(e.message_id for e in box.take(-1.0)) == sorted(f"case:{r.case_id}:v1" for r in results)


def test_a_batch_that_fails_is_kept_and_the_relay_has_the_entries_anyway(
    stack_env: dict[str, str], bus: Bus, redis_client: redis.Redis
) -> None:
    # a client of a Redis that does not answer: the flush fails, the ids wait for the next
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    completions = OutboxCompletions(intake_outbox(dead), interval_s=0.05)
    store = CaseStore(redis_client, "450305", confirmed=completions.add)
    reg = registrar(redis_client, store)
    register_report(bus, store, reg, report("keep-1"), "http")
    assert completions.flush() == 0 and completions.pending() == 1
    box = intake_outbox(redis_client)
    assert box.size() == 2
    # the process dies here: the relay publishes them again once they are old enough
    assert {e.event for e in box.take(-1.0)} == {"case_registered", "case_recorded"}
    completions.outbox = intake_outbox(redis_client)  # Redis answers again
    completions.stop()
    assert completions.pending() == 0 and box.size() == 1  # the record, for the relay


def test_without_batching_the_store_takes_confirmed_events_out_at_once(redis_client: redis.Redis, bus: Bus) -> None:
    store = CaseStore(redis_client, "450305")
    reg = registrar(redis_client, store)
    result = register_report(bus, store, reg, report("now-1"), "http")
    assert result.created and [e.message_id for e in store.outbox.take(-1.0)] == [f"case:{result.case_id}:v1"]
    publish_stored(bus, store, [])  # nothing to publish: nothing happens


# ---------------------------------------------------------------- one record for two versions
def test_the_dispatch_record_replaces_the_registration_record_and_carries_its_key(redis_client: redis.Redis) -> None:
    """The registration's record waits in the outbox; the router's dispatch (the case's
    next version, milliseconds later) writes its own record in its place: one
    `case_recorded` instead of two, and the archive, which keeps a case's newest document,
    gets the same — with the registration's idempotency key (the HTTP Idempotency-Key here)."""
    store = CaseStore(redis_client, "450305")
    reg = registrar(redis_client, store)
    result = reg.register(report("sup-1"), now=NOW, idempotency_key="idem:k1:abc")
    assert [type(e).__name__ for e in result.events] == ["CaseRegistered"]  # what the request publishes
    box = intake_outbox(redis_client)
    stored = {e.message_id: e for e in box.take(-1.0)}
    v1 = stored[f"case:{result.case_id}:v1"]
    assert isinstance(v1, CaseRecorded) and v1.idempotency_key == "idem:k1:abc"
    _, events, applied = apply_event(store, _dispatch(store, result.case_id))
    assert applied and [type(e) for e in events] == [CaseRecorded]
    v2 = events[0]
    assert isinstance(v2, CaseRecorded) and (v2.version, v2.idempotency_key) == (2, "idem:k1:abc")
    # in the outbox: v2 (as the script completed it, the same as what is published), v1 gone
    left = {e.message_id: e for e in box.take(-1.0)}
    assert set(left) == {result.events[0].message_id, v2.message_id}
    assert left[v2.message_id] == v2
    assert left[v2.message_id].case.status is CaseStatus.dispatched


def test_later_versions_leave_earlier_records_alone(redis_client: redis.Redis) -> None:
    # only the registration's record is left unpublished on purpose; a later one that its
    # writer could not publish (the broker away) stays for the relay
    store = CaseStore(redis_client, "450305")
    reg = registrar(redis_client, store)
    result = reg.register(report("sup-2"), now=NOW)
    apply_event(store, _dispatch(store, result.case_id))  # v2, not confirmed: left in the outbox
    _, events, _ = apply_event(store, _dispatch(store, result.case_id, round_no=2, by="commander:chen"))
    records = sorted(e.message_id for e in intake_outbox(redis_client).take(-1.0) if isinstance(e, CaseRecorded))
    assert records == [f"case:{result.case_id}:v2", f"case:{result.case_id}:v3"]
    assert all(isinstance(e, CaseRecorded) and e.idempotency_key == "sup-2" for e in events[:1])


def test_a_case_with_no_next_version_has_its_record_relayed(redis_client: redis.Redis, bus: Bus) -> None:
    # a duplicate changes no more: its registration's record goes out with the relay
    store = CaseStore(redis_client, "450305")
    reg = registrar(redis_client, store)
    register_report(bus, store, reg, report("dup-0"), "http")
    dup = register_report(bus, store, reg, report("dup-1", lat=LAT + 0.0001), "http")
    assert dup.duplicate_of is not None
    assert relay_stored(bus, store, 5.0) == 0  # younger than OUTBOX_RELAY_AFTER_SECONDS: left alone
    relayed = store.outbox.take(-1.0)
    assert f"case:{dup.case_id}:v1" in {e.message_id for e in relayed}
    publish_stored(bus, store, relayed)
    assert store.outbox.size() == 0


class SeenBus(Bus):
    """The real publisher, remembering what it published."""

    def __init__(self, amqp_uri: str) -> None:
        super().__init__(amqp_uri, "intake")
        self.seen: list[str] = []

    def publish_events(self, events: Sequence[Envelope]) -> None:
        super().publish_events(events)
        self.seen += [e.message_id for e in events]


def test_the_archive_records_go_out_in_batches_off_the_consumers_path(
    redis_client: redis.Redis, bus: Bus, stack_env: dict[str, str]
) -> None:
    seen = SeenBus(stack_env["AMQP_URI"])
    completions = OutboxCompletions(intake_outbox(redis_client), interval_s=0.2)
    store = CaseStore(redis_client, "450305", confirmed=completions.add, publish_later=completions.publish_later)
    reg = registrar(redis_client, store)
    cases = [register_report(seen, store, reg, report(f"later-{i}", lat=LAT + i * 0.002), "http") for i in range(3)]
    assert seen.seen == [f"registered:{c.case_id}" for c in cases]
    for c in cases:  # intake applies the router's dispatch: what it publishes is the case's record alone
        _, events, _ = apply_event(store, _dispatch(store, c.case_id))
        publish_stored(seen, store, events)
    assert len(seen.seen) == 3 and completions.pending() == 6  # three records to publish, three events done
    eventlet.sleep(0.5)
    assert seen.seen[3:] == [f"case:{c.case_id}:v2" for c in cases]  # one batch, one confirm round trip
    assert completions.pending() == 0 and store.outbox.size() == 0


def test_a_batch_the_broker_refuses_stays_in_the_outbox_for_the_relay(redis_client: redis.Redis, bus: Bus) -> None:
    completions = OutboxCompletions(intake_outbox(redis_client), interval_s=0.05)
    store = CaseStore(redis_client, "450305", confirmed=completions.add, publish_later=completions.publish_later)
    reg = registrar(redis_client, store)
    case = register_report(bus, store, reg, report("refused-1"), "http")
    _, events, _ = apply_event(store, _dispatch(store, case.case_id))
    publish_stored(Bus("amqp://guest:guest@127.0.0.1:1/", "intake"), store, events)  # a broker that is not there
    completions.stop()
    assert completions.pending() == 0
    assert [e.message_id for e in store.outbox.take(-1.0)] == [f"case:{case.case_id}:v2"]
