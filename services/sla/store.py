"""sla's Redis side: clock documents, timers, outbox, ledger and counters, committed together.

Every change goes: WATCH the case document → load → `Engine` decides → MULTI { document,
open-case set, timers armed/cancelled, leases released, events into the outbox, ledger
entries, indicator counters } EXEC. Only then are the events published (and removed from
the outbox); a crash after the commit leaves them in the outbox, which the relay
publishes. A crash before the commit leaves the timer leased: it fires again when the
lease expires. So a deadline fires once, and its event is never lost.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import redis

from services.sla.state import CaseClocks, Effects, Engine, parse_timer
from services.sla.timers import Claimed, TimerStore
from shared import redis_keys as keys
from shared.models import CaseDispatched, CaseRegistered, CaseUpdated, Envelope, parse_event

SEEN_TTL_S = 45 * 24 * 3600

_COUNT_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  for i = 2, #ARGV, 2 do
    redis.call('HINCRBY', KEYS[2], ARGV[i], tonumber(ARGV[i + 1]))
  end
  return 1
end
return 0
"""

_OUTBOX_TAKE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ARGV[2], id)
  local body = redis.call('HGET', KEYS[2], id)
  if body then
    out[#out + 1] = body
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass
class Fired:
    name: str
    due: float
    effects: Effects
    committed: float = 0.0  # wall-clock time its commit returned


class SlaStore:
    def __init__(self, client: redis.Redis, engine: Engine) -> None:
        self.r = client
        self.engine = engine
        self.timers = TimerStore(client)
        self._count_once = client.register_script(_COUNT_ONCE)
        self._outbox_take = client.register_script(_OUTBOX_TAKE)

    # ------------------------------------------------------------------ documents

    def load(self, case_id: str) -> CaseClocks | None:
        raw = self.r.get(keys.sla_case(case_id))
        return CaseClocks.from_dict(json.loads(raw)) if raw else None

    @staticmethod
    def _doc(raw: str | bytes | None) -> CaseClocks | None:
        return CaseClocks.from_dict(json.loads(raw)) if raw else None

    def _write(self, pipe: Any, case: CaseClocks, fx: Effects, done: Iterable[str] = ()) -> None:
        pipe.set(keys.sla_case(case.case_id), dumps(case.to_dict()))
        if case.live():
            pipe.sadd(keys.sla_open_cases(), case.case_id)
        else:
            pipe.srem(keys.sla_open_cases(), case.case_id)
        TimerStore.cancel_in(pipe, fx.cancel)
        TimerStore.arm_in(pipe, fx.arm)
        TimerStore.done_in(pipe, list(done))
        self._write_side(pipe, fx)

    @staticmethod
    def _write_side(pipe: Any, fx: Effects) -> None:
        now = time.time()
        for event in fx.events:
            pipe.hset(keys.sla_outbox(), event.message_id, event.model_dump_json())
            pipe.zadd(keys.sla_outbox_times(), {event.message_id: now})
        for entry in fx.ledger:
            pipe.hset(keys.sla_ledger(), entry["id"], dumps(entry))
            pipe.zadd(keys.sla_ledger_by_time(), {entry["id"]: entry["breached_at"]})
        for lid, at in fx.ledger_end:
            pipe.hsetnx(keys.sla_ledger_ended(), lid, at)
        for period, scope, key, counter, n in fx.counts:
            pipe.hincrby(keys.sla_indicators(period), f"{scope}|{key}|{counter}", n)

    def transact(self, case_id: str, decide: Callable[[CaseClocks | None], tuple[CaseClocks | None, Effects]],
                 done: Iterable[str] = (), retries: int = 20) -> Effects:
        """Optimistic read-decide-commit of one case document (retried on a concurrent write)."""
        key = keys.sla_case(case_id)
        done = list(done)
        with self.r.pipeline(transaction=True) as pipe:
            for _ in range(retries):
                try:
                    pipe.watch(key)
                    case, fx = decide(self._doc(pipe.get(key)))
                    pipe.multi()
                    if case is not None and not fx.stale:
                        self._write(pipe, case, fx, done)
                    else:
                        TimerStore.done_in(pipe, done)
                    pipe.execute()
                    return fx
                except redis.WatchError:
                    continue
        raise RuntimeError(f"sla: case {case_id} kept changing under {retries} attempts")

    # ------------------------------------------------------------------ events in

    def on_dispatched(self, event: CaseDispatched, now: float) -> Effects:
        return self.transact(event.case_id, lambda case: self.engine.dispatched(case, event, now))

    def on_updated(self, event: CaseUpdated, now: float) -> Effects:
        def decide(case: CaseClocks | None) -> tuple[CaseClocks | None, Effects]:
            if case is None:  # a case sla never saw dispatched (or long gone): nothing runs
                return None, Effects(stale=True)
            return case, self.engine.updated(case, event, now)
        return self.transact(event.case_id, decide)

    def on_registered(self, event: CaseRegistered) -> bool:
        period = self.engine.period(event.occurred_at.timestamp())
        return bool(self._count_once(keys=[keys.sla_seen(event.message_id), keys.sla_indicators(period)],
                                     args=[SEEN_TTL_S, f"street|{event.case.street}|registered", 1]))

    # ------------------------------------------------------------------ firing

    def fire(self, claimed: list[Claimed], now: float) -> list[Fired]:
        """Fire a claimed batch: one WATCH over its cases, one MULTI; per case on conflict."""
        if not claimed:
            return []
        by_case: dict[str, list[Claimed]] = defaultdict(list)
        for c in claimed:
            by_case[parse_timer(c.timer_id)[0]].append(c)
        case_ids = list(by_case)
        ks = [keys.sla_case(c) for c in case_ids]
        with self.r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(*ks)
                docs = pipe.mget(ks)
                fired: list[Fired] = []
                writes: list[tuple[CaseClocks, Effects]] = []
                for case_id, raw in zip(case_ids, docs):
                    case = self._doc(raw)
                    merged = Effects()
                    for c in sorted(by_case[case_id], key=lambda c: c.due):
                        fx = self.engine.fire(case, c.timer_id, now)
                        fired.append(Fired(c.timer_id, c.due, fx))
                        _merge(merged, fx)
                    if case is not None:
                        writes.append((case, merged))
                pipe.multi()
                for case, fx in writes:
                    self._write(pipe, case, fx)
                TimerStore.done_in(pipe, [c.timer_id for c in claimed])
                pipe.execute()
                at = time.time()
                for f in fired:
                    f.committed = at
                return fired
            except redis.WatchError:
                pass
        fired = []
        for case_id, items in by_case.items():
            for c in sorted(items, key=lambda c: c.due):
                box: list[Effects] = []

                def decide(case: CaseClocks | None, c: Claimed = c, box: list[Effects] = box) -> tuple[
                        CaseClocks | None, Effects]:
                    fx = self.engine.fire(case, c.timer_id, now)
                    box[:] = [fx]
                    return case, fx
                self.transact(case_id, decide, done=[c.timer_id])
                fired.append(Fired(c.timer_id, c.due, box[0], time.time()))
        return fired

    # ------------------------------------------------------------------ outbox

    def outbox_done(self, message_ids: list[str]) -> None:
        if message_ids:
            pipe = self.r.pipeline(transaction=True)
            pipe.hdel(keys.sla_outbox(), *message_ids)
            pipe.zrem(keys.sla_outbox_times(), *message_ids)
            pipe.execute()

    def outbox_take(self, older_than_s: float, limit: int = 200) -> list[Envelope]:
        """Events stored more than `older_than_s` ago; taken for `older_than_s` (another
        replica's relay will not take them meanwhile)."""
        now = time.time()
        bodies = self._outbox_take(keys=[keys.sla_outbox_times(), keys.sla_outbox()],
                                   args=[now - older_than_s, now, limit])
        return [parse_event(json.loads(b)) for b in bodies]

    def outbox_size(self) -> int:
        return int(self.r.zcard(keys.sla_outbox_times()))

    # ------------------------------------------------------------------ rebuild

    def rebuild(self, batch: int = 500) -> tuple[int, int]:
        """Arm the timers every open case's document implies (idempotent: a timer that is
        armed stays, one that is leased is left to its claimer). Returns (cases, armed)."""
        cases = armed = 0
        ids = list(self.r.sscan_iter(keys.sla_open_cases(), count=1000))
        for i in range(0, len(ids), batch):
            chunk = ids[i:i + batch]
            docs = self.r.mget([keys.sla_case(c) for c in chunk])
            timers: list[tuple[str, float]] = []
            for case_id, raw in zip(chunk, docs):
                case = self._doc(raw)
                if case is None:
                    self.r.srem(keys.sla_open_cases(), case_id)
                    continue
                cases += 1
                timers += self.engine.timers(case)
            armed += self.timers.arm_if_free(timers)
        return cases, armed


def _merge(into: Effects, fx: Effects) -> None:
    into.arm += fx.arm
    into.cancel += fx.cancel
    into.events += fx.events
    into.ledger += fx.ledger
    into.ledger_end += fx.ledger_end
    into.counts += fx.counts
