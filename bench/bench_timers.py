"""sla timer benchmark: `python -m bench.bench_timers [--timers 1000000] [--burst 10000]`.

Runs against REDIS_URL in a throwaway key prefix (deleted afterwards) and prints, each
figure also as a ratio against the baseline measured in the same run:

1. baseline: a bare ZADD of N members `t<i>` (pipelined) — memory per member and rate;
2. sla timers: N real timer names (`<case_id>|<clock>|<phase>|<token>`, two per case,
   as a dispatch arms them) through `TimerStore.arm_in` — memory per timer, arm rate;
3. the firing documents behind them (one per case, made by the real `Engine` for a
   dispatch, stored in their live buckets as services/sla/store.py keeps them; the
   correlation id a report UUID, as intake sets it) — memory per case and, with the
   timers, per timer: the target (≤ 250 B per timer, everything a timer needs to fire);
   then, apart, each case's history (applied message ids and log, `sla:hist:<id>`, not
   read to fire) and the total with it;
4. a burst of B timers due at the same instant, fired through the real claim path
   (`Deadlines.fire_due`: Lua claim → one read of the batch's documents → Engine → one
   Lua commit with outbox, ledger, counters and lease release) by one process ticking as
   the service does: lateness p50/p99 measured TO THE COMMIT (commit time − due time), the
   firing rate and the tick loop's CPU per timer — first claimed when due
   (`SLA_FIRE_AHEAD_SECONDS=0`, the baseline), then claimed and decided `--ahead` seconds
   ahead and committed at the due time (the service's default), then the same by
   `--replicas` processes;
5. publishing the burst's committed events, measured apart: into an in-memory sink
   (`Deadlines.publish_pending`, outbox bookkeeping included) and, when RabbitMQ answers,
   through the real confirmed `Bus` into a throwaway vhost (`--no-broker` skips it).

Memory is `used_memory` of INFO memory before/after, so run it on an otherwise idle Redis.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, cast

import redis

BENCH_SLA = """
defaults:
  ack: 2s
  urgent_ack: 2s
  handle: 2s
  warn_fraction: 0.5
  ladder: [2s]
  repeat: 0
"""


def used(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timers", type=int, default=1_000_000)
    ap.add_argument("--burst", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=10_000, help="pipeline size")
    ap.add_argument("--no-broker", action="store_true", help="skip publishing to RabbitMQ")
    ap.add_argument("--replicas", type=int, default=2, help="also fire a second burst with this many processes")
    ap.add_argument("--ahead", type=float, default=None, help="fire-ahead window in s (default SLA_FIRE_AHEAD_SECONDS)")
    args = ap.parse_args()

    prefix = f"bench{uuid.uuid4().hex[:8]}"
    os.environ["REDIS_KEY_PREFIX"] = prefix
    from shared.config import get_settings, reset_settings

    reset_settings()
    from shared.logs import configure_logging

    configure_logging("console", "WARNING")
    from services.sla.codec import pack_doc, pack_history
    from services.sla.deadlines import Deadlines
    from services.sla.store import _Op, live_hash
    from services.sla.timers import TimerStore
    from shared import redis_keys as keys
    from shared.models import Assignment, CaseDispatched, CaseSummary, ClocksRecorded, Envelope, Mode721
    from shared.policies import load_policies
    from shared.worktime import WorkCalendar

    settings = get_settings()
    url = settings.redis_url
    r = redis.Redis.from_url(url, decode_responses=True)
    n, batch = args.timers, args.batch
    out: dict[str, Any] = {}
    try:
        # 1. baseline ---------------------------------------------------------------
        base_key = f"{prefix}:baseline"
        m0, t0 = used(r), time.perf_counter()
        for lo in range(0, n, batch):
            r.zadd(base_key, {f"t{i}": float(i) for i in range(lo, min(n, lo + batch))})
        out["baseline_s"] = time.perf_counter() - t0
        out["baseline_bytes"] = (used(r) - m0) / n
        r.delete(base_key)

        # 2. sla timers -------------------------------------------------------------
        cases = n // 2
        due0 = time.time() + 10 * 86400

        def names(i: int) -> tuple[str, str]:
            return (
                f"450305-20261127-{i:06d}|1/sanitation/a|w|1",
                f"450305-20261127-{i:06d}|1/sanitation/h|w|1",
            )

        m0, t0 = used(r), time.perf_counter()
        for lo in range(0, cases, batch // 2):
            pipe = r.pipeline(transaction=False)
            TimerStore.arm_in(
                pipe, [(name, due0 + i) for i in range(lo, min(cases, lo + batch // 2)) for name in names(i)]
            )
            pipe.execute()
        out["arm_s"] = time.perf_counter() - t0
        out["timer_bytes"] = (used(r) - m0) / (2 * cases)

        # 3. firing documents and histories ----------------------------------------
        with TemporaryDirectory() as tmp:
            sla_path = Path(tmp) / "sla.yaml"
            sla_path.write_text(BENCH_SLA, encoding="utf-8")
            sink: list[Envelope] = []
            d = Deadlines(r, load_policies(sla_path), WorkCalendar(), publish=sink.append)
            rb = d.store.b

            def dispatched(case_id: str, at: datetime) -> CaseDispatched:
                return CaseDispatched(
                    message_id=f"dispatched:{case_id}:1",
                    case_id=case_id,
                    correlation_id=str(uuid.uuid4()),
                    occurred_at=at,
                    case=CaseSummary(
                        category="06010",
                        severity="normal",
                        grid="450305001001001",
                        street="450305001",
                        registered_at=at,
                    ),
                    assignments=[
                        Assignment(
                            dept="sanitation",
                            street="450305001",
                            level=5,
                            mode=Mode721.service,
                            sla_policy="cleaning",
                            order_id=f"{case_id}/1/sanitation",
                            dispatched_at=at,
                        )
                    ],
                )

            template = "450305-20261127-TEMPLATE"
            case, _fx = d.engine.dispatched(None, dispatched(template, datetime.now(timezone.utc)), time.time())
            doc, hist = pack_doc(case), pack_history(case)
            assert b"TEMPLATE" not in doc  # nothing in the document repeats the case id
            out["doc_len"], out["hist_len"] = len(doc), len(hist)
            m0 = used(r)
            for lo in range(0, cases, batch):
                pipe = rb.pipeline(transaction=False)
                for i in range(lo, min(cases, lo + batch)):
                    cid = f"450305-20261127-{i:06d}"
                    case.corr = str(uuid.uuid4())
                    pipe.hset(live_hash(cid), cid, pack_doc(case))
                pipe.execute()
            out["doc_bytes_per_case"] = (used(r) - m0) / cases
            m0 = used(r)
            for lo in range(0, cases, batch):
                pipe = rb.pipeline(transaction=False)
                for i in range(lo, min(cases, lo + batch)):
                    pipe.set(keys.sla_history(f"450305-20261127-{i:06d}"), hist)
                pipe.execute()
            out["hist_bytes_per_case"] = (used(r) - m0) / cases
            out["fire_bytes_per_timer"] = out["timer_bytes"] + out["doc_bytes_per_case"] / 2
            out["total_bytes_per_timer"] = out["fire_bytes_per_timer"] + out["hist_bytes_per_case"] / 2
            # clean the 1 M before the burst, so the burst runs on a realistic but clean set
            for pattern in (f"{prefix}:sla:live:*", f"{prefix}:sla:hist:*"):
                for chunk in _chunks(r.scan_iter(pattern, count=10_000), 10_000):
                    r.unlink(*chunk)
            r.unlink(keys.timers_due())

            # 4. bursts ---------------------------------------------------------------
            burst_cases = args.burst // 2
            tick = settings.sla_tick_seconds
            ahead = settings.sla_fire_ahead_seconds if args.ahead is None else args.ahead
            out["ahead"] = ahead

            def arm_burst(tag: str, lead_s: float) -> float:
                """`burst` timers (two warnings for each of burst/2 cases) due at one instant,
                `lead_s` from when they are all armed. The cases are dispatched an hour
                ahead (arming them takes seconds on a busy machine), then their warning
                timers are moved to the instant: what fires is the real documents' warnings,
                and the timers each firing arms next (the breaches) stay an hour away."""
                r.delete(keys.timers_due())  # an earlier burst's timers would be in the way
                at = datetime.now(timezone.utc) + timedelta(hours=1)
                for lo in range(0, burst_cases, 1000):
                    ops = []
                    for i in range(lo, min(burst_cases, lo + 1000)):
                        cid = f"450305-20261127-{tag}{i:06d}"
                        c, fx = d.engine.dispatched(None, dispatched(cid, at), at.timestamp())
                        ops.append(_Op(cid, c, None, fx, with_history=True))
                    assert not d.store._commit(ops)
                names = cast(list[str], r.zrange(keys.timers_due(), 0, -1))
                assert len(names) == args.burst, len(names)
                due = time.time() + lead_s
                r.zadd(keys.timers_due(), {name: due for name in names}, xx=True)
                return due

            def one_process(tag: str, ahead_s: float) -> dict[str, float]:
                d.unpublished.clear()
                due = arm_burst(tag, ahead_s + 4.0)
                outbox0 = d.store.outbox.size()  # the dispatches' own ClocksRecorded, never published here
                c0 = time.process_time()
                lateness = _fire_burst(d, due, args.burst, tick, ahead_s)
                cpu = time.process_time() - c0
                committed = list(d.unpublished)
                # each case's commit also carries its ClocksRecorded (the archive's copy)
                deadlines = [e for e in committed if not isinstance(e, ClocksRecorded)]
                assert d.store.outbox.size() - outbox0 == len(committed) and len(deadlines) == args.burst, (
                    d.store.outbox.size() - outbox0,
                    len(committed),
                    len(deadlines),
                )
                return {**_stats(lateness), "cpu_ms_per_timer": 1000 * cpu / args.burst}

            # the baseline: claimed when due (SLA_FIRE_AHEAD_SECONDS=0, the path before fire-ahead)
            out["when_due"] = one_process("D", 0.0)
            d.publish_pending()
            out["one"] = one_process("A", ahead)
            committed = list(d.unpublished)
            # 5. publishing, apart ------------------------------------------------------
            outbox0 = d.store.outbox.size() - len(committed)
            sink.clear()
            t0 = time.perf_counter()
            d.publish_pending()
            out["sink_s"] = time.perf_counter() - t0
            out["sink_events"] = len(sink)
            assert d.store.outbox.size() == outbox0
            out["broker"] = None if args.no_broker else _publish_to_broker(committed, settings)

            # the same burst again, fired by `--replicas` processes at once (as sla is deployed)
            if args.replicas > 1:
                ctx = multiprocessing.get_context("spawn")
                q, go = ctx.Queue(), ctx.Queue()
                procs = [
                    ctx.Process(target=_replica, args=(str(sla_path), args.burst, tick, ahead, go, q))
                    for _ in range(args.replicas)
                ]
                for p in procs:
                    p.start()
                assert [q.get(timeout=120) for _ in procs] == ["ready"] * len(procs)  # started, connected
                due2 = arm_burst("R", ahead + 4.0)
                for _ in procs:
                    go.put(due2)
                parts = [q.get(timeout=120) for _ in procs]
                for p in procs:
                    p.join(30)
                out["many"] = _stats(sorted(x for part in parts for x in part))
                out["many_split"] = [len(part) for part in parts]
                out["many_outbox"] = d.store.outbox.size()
    finally:
        for chunk in _chunks(r.scan_iter(f"{prefix}:*", count=10_000), 10_000):
            r.unlink(*chunk)
        reset_settings()

    base_b, base_rate = out["baseline_bytes"], n / out["baseline_s"]
    mb = lambda b: b * n / 1e6  # noqa: E731
    print(f"Redis {r.info('server')['redis_version']} at {url}, throwaway prefix {prefix} (deleted)")
    print(
        f"baseline  bare ZADD of {n:,} members 't<i>': {base_b:.1f} B/member ({mb(base_b):.1f} MB), "
        f"{base_rate:,.0f} ZADD/s pipelined"
    )
    print(
        f"timers    {n:,} sla timers (2 per case): {out['timer_bytes']:.1f} B/timer "
        f"({mb(out['timer_bytes']):.1f} MB) = {out['timer_bytes'] / base_b:.2f}× baseline; "
        f"arm rate {n / out['arm_s']:,.0f}/s = {out['baseline_s'] / out['arm_s']:.2f}× baseline rate"
    )
    print(
        f"firing    {cases:,} firing documents ({out['doc_len']} B msgpack each) in live buckets: "
        f"{out['doc_bytes_per_case']:.1f} B/case → with the timers {out['fire_bytes_per_timer']:.1f} B/timer "
        f"({mb(out['fire_bytes_per_timer']):.1f} MB for {n:,} timers, "
        f"{out['fire_bytes_per_timer'] / base_b:.2f}× baseline) [target ≤ 250 B/timer]"
    )
    print(
        f"history   {cases:,} histories ({out['hist_len']} B each: 1 message id, 1 log entry; not read to fire): "
        f"{out['hist_bytes_per_case']:.1f} B/case → everything {out['total_bytes_per_timer']:.1f} B/timer "
        f"({mb(out['total_bytes_per_timer']):.1f} MB, {out['total_bytes_per_timer'] / base_b:.2f}× baseline)"
    )

    def burst_line(who: str, st: dict[str, float]) -> str:
        return (
            f"burst     {args.burst:,} due at once, fired through the claim path by {who}, lateness TO THE "
            f"COMMIT: p50 {st['p50'] * 1000:.0f} ms, p99 {st['p99'] * 1000:.0f} ms, max {st['max'] * 1000:.0f} ms "
            f"[target p99 < 250 ms]; {st['fired']:,.0f} fired, {st['rate']:,.0f} timers/s committed "
            f"= {st['rate'] / base_rate:.2f}× baseline ZADD rate"
        )

    print(
        f"          (tick {settings.sla_tick_seconds} s as SLA_TICK_SECONDS: the first claim comes up to one tick "
        f"after the due time, as in the service)"
    )
    print(burst_line("one process, claimed when due (SLA_FIRE_AHEAD_SECONDS=0: the baseline)", out["when_due"]))
    print(burst_line(f"one process, claimed and decided {out['ahead']} s ahead", out["one"]))
    print(
        f"          ratio fire-ahead ÷ when-due: p99 {out['one']['p99'] / out['when_due']['p99']:.3f}, "
        f"p50 {out['one']['p50'] / out['when_due']['p50']:.3f}; CPU per timer (the whole tick loop) "
        f"{out['one']['cpu_ms_per_timer'] * 1000:.0f} µs vs {out['when_due']['cpu_ms_per_timer'] * 1000:.0f} µs"
    )
    if "many" in out:
        print(
            burst_line(
                f"{args.replicas} replica processes, {out['ahead']} s ahead "
                f"(split {'/'.join(map(str, out['many_split']))})",
                out["many"],
            )
        )
    sink_rate = out["sink_events"] / out["sink_s"]
    print(
        f"publish   (after the commit, apart) in-memory sink: {out['sink_events']:,} events at {sink_rate:,.0f}/s "
        f"= {sink_rate / base_rate:.2f}× baseline rate (outbox bookkeeping only)"
    )
    if out["broker"] is None:
        print("publish   RabbitMQ: skipped")
    elif isinstance(out["broker"], str):
        print(f"publish   RabbitMQ: not measured ({out['broker']})")
    else:
        k, s = out["broker"]
        print(
            "publish   RabbitMQ through the confirmed Bus (batches of 200, one confirm round trip each), "
            f"first {k:,} events: "
            f"{k / s:,.0f}/s = {k / s / base_rate:.3f}× baseline rate → the burst's last event reaches the "
            f"broker about {args.burst / (k / s):.1f} s after the due time per replica"
        )


def _fire_burst(d: Any, due: float, expected: int, tick: float, ahead: float, deadline_s: float = 60.0) -> list[float]:
    """Tick like the service (every `tick` s on a fixed grid, `fire_due` with `ahead` and
    `wait` = one tick) until `expected` timers due at `due` committed (or another replica
    took the rest): the lateness of each, commit time − due time."""
    lateness: list[float] = []
    # ticking well before the burst can be claimed; replicas' ticks are not in phase
    next_tick = due - ahead - tick * (1.5 + (os.getpid() % 7) / 7)
    t_end = due + deadline_s
    while len(lateness) < expected and time.time() < t_end:
        if time.time() < next_tick:
            time.sleep(next_tick - time.time())
        next_tick += tick
        report = d.fire_due(lease_s=30.0, publish=False, ahead=ahead, wait=tick)
        lateness += [f.committed - due for f in report.fired if f.effects.events and f.due == due]
        if not report.fired and not d.ready and time.time() > due and not d.timers.r.zcount(_due_key(), due, due):
            break  # another replica took the rest
    return sorted(lateness)


def _due_key() -> str:
    from shared import redis_keys as keys

    return keys.timers_due()


def _replica(sla_path: str, expected: int, tick: float, ahead: float, go: Any, q: Any) -> None:
    """One sla replica in its own process (spawned): fires what it can claim of the burst."""
    from shared.logs import configure_logging

    configure_logging("console", "WARNING")
    from services.sla.deadlines import Deadlines
    from shared.config import get_settings
    from shared.policies import load_policies
    from shared.worktime import WorkCalendar

    r = redis.Redis.from_url(get_settings().redis_url, decode_responses=True)
    d = Deadlines(r, load_policies(Path(sla_path)), WorkCalendar(), publish=lambda e: None)
    d.timers.pending()  # connected before the burst, like a running service
    q.put("ready")
    q.put(_fire_burst(d, go.get(timeout=120), expected, tick, ahead))


def _stats(lateness: list[float]) -> dict[str, float]:
    return {
        "fired": len(lateness),
        "p50": statistics.median(lateness),
        "p99": lateness[int(0.99 * (len(lateness) - 1))],
        "max": lateness[-1],
        "rate": len(lateness) / max(lateness[-1], 1e-9),
    }  # from the due instant to the last commit


def _publish_to_broker(events: list[Any], settings: Any, limit: int = 3000) -> tuple[int, float] | str:
    try:
        from bench.common import throwaway_vhost
        from shared import topology
        from shared.bus import Bus

        with throwaway_vhost(settings.amqp_uri, settings.rabbitmq_management_url) as (uri, _name):
            topology.apply(uri)
            bus = Bus(uri, service="bench")
            some = events[:limit]
            t0 = time.perf_counter()
            for batch in _chunks(some, 200):  # as the service's publish_pending does
                bus.publish_events(batch)
            return len(some), time.perf_counter() - t0
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - without a broker the rest still stands
        return f"{type(exc).__name__}: {exc}"[:200]


def _chunks(it, size):
    buf = []
    for x in it:
        buf.append(x)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


if __name__ == "__main__":
    main()
