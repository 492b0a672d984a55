"""sla's Redis side: clock documents, timers, outbox, ledger and counters, committed together.

Layout (services/sla/codec.py for the encodings):
- a case with a running or paused clock keeps its compact *firing document* as one field
  of a bucket hash `sla:live:<crc32(case id) % LIVE_BUCKETS>` — no key, no set entry of
  its own per case (memory: bench/bench_timers.py); the start-up rebuild reads the buckets;
- once no clock runs, the document moves to `sla:case:<id>` with a TTL (`KEEP_CLOSED_S`);
- the case's history (applied message ids, log) is `sla:hist:<id>`, not read to fire.

Every change is optimistic and per case: read the documents (one Lua call for a batch),
let the `Engine` decide, then one Lua `_COMMIT` compares each document with what was read
and — only if none changed — writes documents, history, timers armed/cancelled, leases
released, events into the outbox, ledger entries and indicator counters, atomically. A
case that changed meanwhile is read and decided again. Only after the commit are the
events published (and removed from the outbox); a crash after the commit leaves them in
the outbox, which the relay publishes. A crash before the commit leaves the timer leased:
it fires again when the lease expires. So a deadline fires once, and its event is never lost.
"""

from __future__ import annotations

import base64
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, cast

import msgpack
import redis

from services.sla.codec import pack_doc, pack_history, pack_log, unpack_doc, unpack_history
from services.sla.commit import CaseWrite, Commit, DocWrite, HistoryWrite, pack
from services.sla.state import CaseClocks, Effects, Engine, parse_timer
from services.sla.timers import Claimed, TimerStore, binary_twin
from shared import redis_keys as keys
from shared import scripts
from shared.indicators import counter_field
from shared.models import CaseDispatched, CaseUpdated, ClocksRecorded
from shared.outbox import sla_outbox
from shared.scripts import Lua

KEEP_CLOSED_S = 90 * 24 * 3600  # a finished case's clocks stay readable (explain, re-dispatch) this long
LIVE_BUCKETS = 1024  # fixed: changing it needs a migration of the `sla:live:*` hashes
RETRIES = 20


_READ = Lua("services.sla", "read")

_COMMIT = Lua("services.sla", "commit")


def live_shard(case_id: str) -> int:
    """Which of the LIVE_BUCKETS hashes `sla:live:<n>` holds a case's live document (its
    hash shard: crc32 of the case id). Not a digest bucket, not a time bucket."""
    return zlib.crc32(case_id.encode()) % LIVE_BUCKETS


def live_hash(case_id: str) -> str:
    """The key of the hash that holds a case's live document (`live_shard`'s hash)."""
    return keys.sla_live(live_shard(case_id))


def load_case(client: redis.Redis, case_id: str) -> CaseClocks | None:
    """A case's clocks with their history, live or finished (operators' `gridbus sla explain`)."""
    b = binary_twin(client)
    raw = b.hget(live_hash(case_id), case_id) or b.get(keys.sla_case(case_id))
    if raw is None:
        return None
    case = unpack_doc(case_id, raw)
    unpack_history(case, cast(bytes | None, b.get(keys.sla_history(case_id))))
    return case


@dataclass
class Fired:
    name: str
    due: float
    effects: Effects
    committed: float = 0.0  # wall-clock time its commit returned


@dataclass
class _Op:
    """One case's part of a commit."""

    case_id: str
    case: CaseClocks | None
    raw: bytes | None  # the document as read
    fx: Effects
    hist_raw: bytes | None = None  # the history as read (events in)
    with_history: bool = False  # compare and rewrite the history (events in) / append to it (firing)
    logged: int = 0  # log entries the loaded document already had
    fired: list[Fired] = field(default_factory=list)


@dataclass
class FireBatch:
    """A claimed batch on its way through `SlaStore.fire_read` → `fire_decide` → (`fire_send`) → `fire_commit`."""

    claimed: list[Claimed]
    by_case: dict[str, list[Claimed]]
    now: float
    raws: dict[str, bytes | None] = field(default_factory=dict)
    ops: dict[str, _Op] = field(default_factory=dict)
    blob: bytes | None = None
    sent: scripts.Pending | None = None  # its commit was sent, the answer not read yet
    not_before: float = 0.0  # decided ahead: committed at this time (its latest due), not before

    def live(self) -> list[_Op]:
        return [op for op in self.ops.values() if not op.fx.stale]


class SlaStore:
    def __init__(self, client: redis.Redis, engine: Engine) -> None:
        self.r = client
        self.b = binary_twin(client)
        self.engine = engine
        self.timers = TimerStore(client)
        self.outbox = sla_outbox(client)
        self._read_script = _READ.on(self.b)
        self._commit_script = _COMMIT.on(self.b)
        self._prefix = self._hist_prefix = ""
        self._buckets: list[str] = []

    # ------------------------------------------------------------------ documents

    def _where(self, case_id: str) -> list[str]:
        """Where a case's document may be (its live bucket, else the closed key) and its history."""
        if self._prefix != keys.sla_case(""):  # the key prefix is a setting (tests change it)
            self._prefix, self._hist_prefix = keys.sla_case(""), keys.sla_history("")
            self._buckets = [keys.sla_live(b) for b in range(LIVE_BUCKETS)]
        return [
            self._buckets[live_shard(case_id)],
            case_id,
            self._prefix + case_id,
            self._hist_prefix + case_id,
        ]

    def read(self, case_ids: list[str], history: bool = False) -> list[tuple[bytes | None, bytes | None]]:
        """(document, history) of each case, as stored (one round trip)."""
        if not case_ids:
            return []
        args: list[Any] = ["1" if history else "0"]
        for c in case_ids:
            args += self._where(c)
        flat = [x or None for x in msgpack.unpackb(self._read_script(args=[pack(args)]), raw=True)]
        return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    def load(self, case_id: str, history: bool = True) -> CaseClocks | None:
        [(raw, hist)] = self.read([case_id], history)
        if raw is None:
            return None
        case = unpack_doc(case_id, raw)
        unpack_history(case, hist)
        return case

    def is_live(self, case_id: str) -> bool:
        return bool(self.b.hexists(live_hash(case_id), case_id))

    def _commit(self, ops: list[_Op], done: Iterable[str] = ()) -> list[_Op]:
        """Write every op atomically unless a document changed since it was read: then
        nothing is written and the ops that changed are returned."""
        bad = self._commit_script(keys=self._commit_keys(), args=[self._commit_blob(ops, done)])
        return [ops[int(i) - 1] for i in bad]

    def _commit_keys(self) -> list[str]:
        return [
            keys.timers_due(),
            keys.timers_leased(),
            *self.outbox.keys(),
            keys.sla_ledger(),
            keys.sla_ledger_by_time(),
            keys.sla_ledger_ended(),
        ]

    def _commit_blob(self, ops: list[_Op], done: Iterable[str] = (), at: float = 0.0) -> bytes:
        """The commit's arguments; `at`: a commit decided ahead of its due time is stamped
        with that time (outbox times and the archive's record), not with the present."""
        now = max(time.time(), at)
        commit = Commit(now, KEEP_CLOSED_S, done=list(done))
        for op in ops:
            case, fx = op.case, op.fx
            write = CaseWrite(self._where(op.case_id), op.raw)
            commit.cases.append(write)
            if case is None or fx.stale:
                continue  # compared only: a stale firing releases its lease, writes nothing
            write.check_history, write.history_was = op.with_history, op.hist_raw
            write.doc = DocWrite.LIVE if case.live() else DocWrite.CLOSED
            case.rev += 1  # a commit writes only over the document it read: a total order per case
            write.doc_bytes = doc = pack_doc(case)
            if op.with_history:
                write.history, write.history_bytes = HistoryWrite.SET, pack_history(case)
            elif len(case.log) > op.logged:
                write.history, write.history_bytes = HistoryWrite.APPEND, pack_log(case.log[op.logged :])
            commit.arm += fx.arm
            commit.cancel += fx.cancel
            # the archive's copy of what this commit decides (a commit retried after a
            # conflict replaces the record it made before)
            fx.events = [e for e in fx.events if not isinstance(e, ClocksRecorded)]
            fx.events.append(
                ClocksRecorded(
                    case_id=op.case_id,
                    correlation_id=case.corr or op.case_id,
                    committed_at=now,
                    seq=case.rev,
                    live=bool(case.live()),
                    doc=base64.b64encode(doc).decode(),
                    history=base64.b64encode(write.history_bytes).decode() if op.with_history else None,
                    ledger=list(fx.ledger),
                    ledger_ended=[(lid, ended) for lid, ended in fx.ledger_end],
                    counts=[(p, sc, k, c, n) for p, sc, k, c, n in fx.counts],
                )
            )
            commit.outbox += [(event.message_id, event.model_dump_json()) for event in fx.events]
            commit.ledger += fx.ledger
            commit.ledger_ended += fx.ledger_end
            for period, scope, key, counter, n in fx.counts:
                commit.count(keys.sla_indicators(period), counter_field(scope, key, counter), n)
        return commit.blob()

    def transact(
        self,
        case_id: str,
        decide: Callable[[CaseClocks | None], tuple[CaseClocks | None, Effects]],
        retries: int = RETRIES,
        expect_absent: bool = False,
    ) -> Effects:
        """Optimistic read-decide-commit of one case (retried when it changed meanwhile).
        `expect_absent`: the caller expects no document yet (a case's first dispatch), so the
        first attempt decides on nothing without reading and commits only if there is still
        none — one Redis round trip instead of two; if there is one, that commit writes
        nothing and the next attempt reads it, as after any conflict."""
        for attempt in range(retries):
            raw = hist = None
            if not (expect_absent and attempt == 0):
                [(raw, hist)] = self.read([case_id], history=True)
            case = None
            if raw is not None:
                case = unpack_doc(case_id, raw)
                unpack_history(case, hist)
            case, fx = decide(case)
            if case is None or fx.stale:
                return fx
            op = _Op(case_id, case, raw, fx, hist_raw=hist, with_history=True)
            if not self._commit([op]):
                return fx
        raise RuntimeError(f"sla: case {case_id} kept changing under {retries} attempts")

    # ------------------------------------------------------------------ events in

    def on_dispatched(self, event: CaseDispatched, now: float) -> Effects:
        return self.transact(
            event.case_id, lambda case: self.engine.dispatched(case, event, now), expect_absent=event.round_no == 1
        )

    def on_updated(self, event: CaseUpdated, now: float) -> Effects:
        def decide(case: CaseClocks | None) -> tuple[CaseClocks | None, Effects]:
            if case is None:
                if event.case is not None:  # handled on site: resolve_on_site or, overtaking it, its closing
                    return self.engine.on_site(event, now)
                # a case sla never saw dispatched (or long gone): nothing runs
                return None, Effects(stale=True)
            return case, self.engine.updated(case, event, now)

        return self.transact(event.case_id, decide)

    # ------------------------------------------------------------------ firing

    def _decide_fire(self, case_id: str, items: list[Claimed], raw: bytes | None, now: float) -> _Op:
        case = unpack_doc(case_id, raw) if raw is not None else None
        merged = Effects(stale=True)
        op = _Op(case_id, case, raw, merged, logged=len(case.log) if case else 0)
        for c in sorted(items, key=lambda c: c.due):
            # decided as of its due time when that is still ahead (claimed ahead, committed at it)
            fx = self.engine.fire(case, c.timer_id, max(now, c.due))
            op.fired.append(Fired(c.timer_id, c.due, fx))
            if not fx.stale:
                merged.stale = False
                _merge(merged, fx)
        return op

    def fire(self, claimed: list[Claimed], now: float) -> list[Fired]:
        """Fire a claimed batch: one read of its documents, the Engine, one atomic commit
        (which also releases the batch's leases); cases that changed meanwhile are read
        and decided again."""
        batch = self.fire_read(claimed, now)
        self.fire_decide(batch)
        return self.fire_commit(batch)

    # The same in steps, so that a caller can overlap them across batches (Deadlines.fire_due):
    # read batch k+1, send batch k's commit, decide batch k+1 while Redis runs it, then wait.

    def fire_read(self, claimed: list[Claimed], now: float) -> FireBatch:
        by_case: dict[str, list[Claimed]] = defaultdict(list)
        for c in claimed:
            by_case[parse_timer(c.timer_id)[0]].append(c)
        batch = FireBatch(claimed, by_case, now)
        batch.raws = dict(zip(by_case, (raw for raw, _h in self.read(list(by_case))), strict=True))
        return batch

    def fire_decide(self, batch: FireBatch) -> None:
        for case_id, raw in batch.raws.items():
            batch.ops[case_id] = self._decide_fire(case_id, batch.by_case[case_id], raw, batch.now)
        batch.raws = {}
        batch.not_before = max((c.due for c in batch.claimed), default=0.0)
        batch.blob = self._commit_blob(batch.live(), done=[c.timer_id for c in batch.claimed], at=batch.not_before)

    def fire_send(self, batch: FireBatch) -> None:
        """Send the batch's commit without waiting for the answer (`fire_commit` reads it)."""
        self.fire_send_many([batch])

    def fire_send_many(self, batches: list[FireBatch]) -> None:
        """Send the batches' commits on one connection in one write, without waiting for the
        answers (`fire_commit` of each, in this order, reads them as Redis runs them)."""
        batches = [b for b in batches if b.blob is not None]
        if not batches:
            return
        commit_keys = self._commit_keys()
        sent = scripts.send(self._commit_script, [(commit_keys, [b.blob]) for b in batches])
        for b, pending in zip(batches, sent, strict=True):
            b.sent = pending

    def fire_commit(self, batch: FireBatch, retries: int = RETRIES) -> list[Fired]:
        """The batch's commit (sent already or now); cases that changed since they were
        read are read, decided and committed again (nothing was written meanwhile)."""
        live = batch.live()
        changed: list[_Op]
        if batch.sent is not None:
            sent, batch.sent = batch.sent, None
            # a lost connection loses the answers owed on it: those batches raise too
            changed = [live[int(i) - 1] for i in sent.result()]
        else:
            changed = self._commit(live, done=[c.timer_id for c in batch.claimed])
        for _ in range(retries):
            if not changed:
                at = time.time()
                for op in batch.live():  # the commit's record rides with the case's last firing
                    records = [e for e in op.fx.events if isinstance(e, ClocksRecorded)]
                    if records and op.fired:
                        op.fired[-1].effects.events.extend(records)
                fired = [f for op in batch.ops.values() for f in op.fired]
                for f in fired:
                    f.committed = at
                return fired
            todo = [op.case_id for op in changed]
            for case_id, (raw, _h) in zip(todo, self.read(todo), strict=True):
                batch.ops[case_id] = self._decide_fire(case_id, batch.by_case[case_id], raw, batch.now)
            changed = self._commit(batch.live(), done=[c.timer_id for c in batch.claimed])
        raise RuntimeError(f"sla: {len(changed)} case(s) kept changing under {retries} attempts")

    # ------------------------------------------------------------------ rebuild

    def rebuild(self, batch: int = 500, per_trip: int = 128, scan_count: int = 1000) -> tuple[int, int]:
        """Arm the timers every live case's document implies (idempotent: a timer that is
        armed stays, one that is leased is left to its claimer). Returns (cases, armed).

        The buckets are scanned `per_trip` at a time in one pipeline: one round trip per
        bucket (1,024 of them) was what held a restarted sla unhealthy for most of a minute
        under load, each trip waiting its turn behind the consumer's backlog in the hub."""
        cases = armed = 0
        timers: list[tuple[str, float]] = []
        todo: list[tuple[str, int]] = [(keys.sla_live(b), 0) for b in range(LIVE_BUCKETS)]  # (bucket, cursor)
        while todo:
            trip, todo = todo[:per_trip], todo[per_trip:]
            pipe = self.b.pipeline(transaction=False)
            for key, cursor in trip:
                pipe.hscan(key, cursor, count=scan_count)
            for (key, _), (cursor, found) in zip(trip, pipe.execute(), strict=True):
                for case_id, raw in found.items():
                    cases += 1
                    timers += self.engine.timers(unpack_doc(case_id.decode(), raw))
                if cursor:  # a bucket larger than one scan: its next page goes with a later trip
                    todo.append((key, int(cursor)))
            if len(timers) >= batch:
                armed += self.timers.arm_if_free(timers)
                timers = []
        armed += self.timers.arm_if_free(timers)
        return cases, armed


def _merge(into: Effects, fx: Effects) -> None:
    into.arm += fx.arm
    into.cancel += fx.cancel
    into.events += fx.events
    into.ledger += fx.ledger
    into.ledger_end += fx.ledger_end
    into.counts += fx.counts
