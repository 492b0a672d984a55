"""The one outbox (shared/outbox.py) on the real Redis, and intake's relay through the real
broker: an entry older than the threshold is re-published, of two replicas' relays one
takes it in a period, and once that period is over (its relay died) another does."""

from __future__ import annotations

import threading
import time

import redis

from services.intake.publishing import relay_stored
from services.intake.store import CaseStore
from shared import topology
from shared.amqpclient import channel, connection, props
from shared.bus import Bus
from shared.models import CaseUpdated
from shared.outbox import Outbox, intake_outbox, sla_outbox


def event(n: int) -> CaseUpdated:
    return CaseUpdated(
        case_id=f"450305-20261127-{n:06d}",
        correlation_id=f"r-{n}",
        from_status="registered",
        to_status="cancelled",
        actor="test",
    )


def stored(box: Outbox, events: list[CaseUpdated], at: float) -> None:
    pipe = box.r.pipeline(transaction=True)
    box.add_in(pipe, events, now=at)
    pipe.execute()


def test_the_relay_takes_only_entries_older_than_the_threshold(redis_client: redis.Redis) -> None:
    box = intake_outbox(redis_client)
    old, fresh = event(1), event(2)
    stored(box, [old], at=1000.0)
    stored(box, [fresh], at=1008.0)
    assert box.size() == 2 and box.oldest_age(now=1010.0) == 10.0
    assert [e.message_id for e in box.take(5, now=1010.0)] == [old.message_id]
    # taken: its time is now the relay's, so the next relay in the same period leaves it
    assert box.take(5, now=1012.0) == [] and box.oldest_age(now=1012.0) == 4.0
    box.done([old.message_id, fresh.message_id])
    assert box.size() == 0 and box.oldest_age() == 0.0


def test_two_replicas_relays_take_each_entry_once_and_another_takes_over(redis_url: str, stack_env: dict) -> None:
    a = intake_outbox(redis.Redis.from_url(redis_url, decode_responses=True))
    b = intake_outbox(redis.Redis.from_url(redis_url, decode_responses=True))
    events = [event(n) for n in range(300)]
    stored(a, events, at=1000.0)
    got: dict[str, list[str]] = {"a": [], "b": []}

    def relay(name: str, box: Outbox) -> None:
        for _ in range(5):
            got[name] += [e.message_id for e in box.take(5, limit=40, now=1010.0)]

    threads = [threading.Thread(target=relay, args=(n, box)) for n, box in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got["a"] + got["b"]) == sorted(e.message_id for e in events)  # exactly once between them
    assert not set(got["a"]) & set(got["b"])
    # a's relay "died" with what it took: after the period b takes those again, and only those left
    b.done(got["b"])
    again = [e.message_id for e in b.take(5, limit=400, now=1016.0)]
    assert sorted(again) == sorted(got["a"])


def test_hold_keeps_the_relay_off_and_a_vanished_body_is_dropped(redis_client: redis.Redis) -> None:
    box = sla_outbox(redis_client)
    kept, gone = event(1), event(2)
    stored(box, [kept, gone], at=1000.0)
    box.hold([kept.message_id], now=1009.0)  # its publisher is about to publish it
    redis_client.hdel(box.keys()[0], gone.message_id)
    assert box.take(5, now=1010.0) == []
    assert box.size() == 1  # the entry without a body left the times too
    assert [e.message_id for e in box.take(5, now=1015.0)] == [kept.message_id]


def test_intake_relay_republishes_what_the_broker_never_confirmed(stack_env: dict[str, str]) -> None:
    topology.apply(stack_env["AMQP_URI"])
    client = redis.Redis.from_url(stack_env["REDIS_URL"], decode_responses=True)
    store = CaseStore(client, "450305")
    lost = event(7)
    stored(store.outbox, [lost], at=time.time() - 60)  # stored a minute ago; its publisher died
    fresh = event(8)
    stored(store.outbox, [fresh], at=time.time())
    bus = Bus(stack_env["AMQP_URI"], service="test")
    with connection(stack_env["AMQP_URI"]) as conn:
        ch = channel(conn)
        ch.queue_declare("outbox-test", exclusive=True)
        ch.queue_bind("outbox-test", topology.EX_EVENTS, topology.RK_CASE_UPDATED_ANY)
        assert relay_stored(bus, store, older_than_s=30) == 1
        msg = ch.basic_get("outbox-test", no_ack=True)
        assert msg is not None and props(msg)["message_id"] == lost.message_id
        assert ch.basic_get("outbox-test", no_ack=True) is None  # the fresh one is its publisher's
    assert store.outbox.size() == 1 and store.outbox.take(-1)[0].message_id == fresh.message_id
