"""sla timer benchmark: `python -m bench.bench_timers [--timers 1000000] [--burst 10000]`.

Runs against REDIS_URL in a throwaway key prefix (deleted afterwards) and prints:

1. baseline: a bare ZADD of N members `t<i>` (pipelined) — memory per member and rate;
2. sla timers: N real timer names (`<case_id>|<clock>|<phase>|<token>`, two per case,
   as a dispatch arms them) through `TimerStore.arm_in` — memory per timer, arm rate,
   both also as ratios against the baseline measured in the same run;
3. the clock documents behind them (one per case, made by the real `Engine` for a
   dispatch and re-keyed per case) — memory per case and per timer;
4. a burst of B timers due at the same instant, fired through the real claim path
   (`Deadlines.fire_due`: Lua claim → load documents → Engine → MULTI commit with the
   outbox → publish to an in-memory sink): lateness p50/p99 (commit time − due time).
   Publishing to RabbitMQ is not included: with synchronous confirms it runs at about
   1 k events/s per replica on this machine (DESIGN §10), see the report.

Memory is `used_memory` of INFO memory before/after, so run it on an otherwise idle Redis.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from tempfile import TemporaryDirectory

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
    args = ap.parse_args()

    prefix = f"bench{uuid.uuid4().hex[:8]}"
    os.environ["REDIS_KEY_PREFIX"] = prefix
    from shared.config import get_settings, reset_settings

    reset_settings()
    from shared.logs import configure_logging

    configure_logging("console", "WARNING")
    from services.sla.clocks import WorkCalendar
    from services.sla.deadlines import Deadlines
    from services.sla.policies import load_policies
    from shared import redis_keys as keys
    from shared.models import Assignment, CaseDispatched, CaseSummary, Mode721

    url = get_settings().redis_url
    r = redis.Redis.from_url(url, decode_responses=True)
    n, batch = args.timers, args.batch
    out: dict[str, float] = {}
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
        from services.sla.timers import TimerStore

        cases = n // 2
        due0 = time.time() + 10 * 86400
        names = lambda i: (f"450305-20261127-{i:06d}|1/sanitation/a|w|1",  # noqa: E731
                           f"450305-20261127-{i:06d}|1/sanitation/h|w|1")
        m0, t0 = used(r), time.perf_counter()
        for lo in range(0, cases, batch // 2):
            pipe = r.pipeline(transaction=False)
            TimerStore.arm_in(pipe, [(name, due0 + i) for i in range(lo, min(cases, lo + batch // 2))
                                     for name in names(i)])
            pipe.execute()
        out["arm_s"] = time.perf_counter() - t0
        out["timer_bytes"] = (used(r) - m0) / (2 * cases)

        # 3. clock documents --------------------------------------------------------
        with TemporaryDirectory() as tmp:
            sla_path = Path(tmp) / "sla.yaml"
            sla_path.write_text(BENCH_SLA, encoding="utf-8")
            d = Deadlines(r, load_policies(sla_path), WorkCalendar(), publish=lambda e: None)

            def dispatched(case_id: str, at: datetime) -> CaseDispatched:
                return CaseDispatched(
                    message_id=f"dispatched:{case_id}:1", case_id=case_id, correlation_id=f"rep-{case_id}",
                    occurred_at=at, case=CaseSummary(category="06010", severity="normal", grid="450305001001001",
                                                     street="450305001", registered_at=at),
                    assignments=[Assignment(dept="sanitation", street="450305001", level=5, mode=Mode721.service,
                                            sla_policy="cleaning", order_id=f"{case_id}/1/sanitation",
                                            dispatched_at=at)])

            template_id = "450305-20261127-TEMPLATE"
            case, _fx = d.engine.dispatched(None, dispatched(template_id, datetime.now(timezone.utc)), time.time())
            doc = json.dumps(case.to_dict(), ensure_ascii=False, separators=(",", ":"))
            m0 = used(r)
            for lo in range(0, cases, batch):
                pipe = r.pipeline(transaction=False)
                for i in range(lo, min(cases, lo + batch)):
                    cid = f"450305-20261127-{i:06d}"
                    pipe.set(keys.sla_case(cid), doc.replace(template_id, cid))
                    pipe.sadd(keys.sla_open_cases(), cid)
                pipe.execute()
            out["doc_bytes_per_case"] = (used(r) - m0) / cases
            out["doc_json_bytes"] = len(doc.encode())
            out["total_bytes_per_timer"] = out["timer_bytes"] + out["doc_bytes_per_case"] / 2
            # clean the 1 M before the burst, so the burst runs on a realistic but clean set
            for pattern in (f"{prefix}:sla:case:*",):
                for chunk in _chunks(r.scan_iter(pattern, count=10_000), 10_000):
                    r.unlink(*chunk)
            r.unlink(keys.timers_due(), keys.sla_open_cases())

            # 4. burst ------------------------------------------------------------------
            burst_cases = args.burst // 2
            at = datetime.now(timezone.utc) + timedelta(seconds=5)  # warnings (50 % of 2 s) due at +6 s
            for lo in range(0, burst_cases, 1000):
                pipe = r.pipeline(transaction=False)
                for i in range(lo, min(burst_cases, lo + 1000)):
                    cid = f"450305-20261127-{i:06d}"
                    c, fx = d.engine.dispatched(None, dispatched(cid, at), at.timestamp())
                    d.store._write(pipe, c, fx)
                pipe.execute()
            due = float(r.zrange(keys.timers_due(), 0, 0, withscores=True)[0][1])  # at + 1 s
            assert r.zcount(keys.timers_due(), due, due) == args.burst, r.zcount(keys.timers_due(), "-inf", "+inf")
            sink: list[object] = []
            d.publish = sink.append
            lateness: list[float] = []
            while time.time() < due - 0.2:
                time.sleep(0.01)
            t_end = due + 60
            while len(lateness) < args.burst and time.time() < t_end:
                report = d.fire_due(lease_s=30.0)
                lateness += [f.committed - f.due for f in report.fired if f.effects.events and f.due == due]
                if not report.fired:
                    time.sleep(0.2)  # the service's tick
            lateness.sort()
            out["burst_fired"] = len(lateness)
            out["burst_events"] = len(sink)
            out["p50"] = statistics.median(lateness)
            out["p99"] = lateness[int(0.99 * (len(lateness) - 1))]
            out["max"] = lateness[-1]
    finally:
        for chunk in _chunks(r.scan_iter(f"{prefix}:*", count=10_000), 10_000):
            r.unlink(*chunk)
        reset_settings()

    mb = lambda b: b * n / 1e6  # noqa: E731
    print(f"Redis {r.info('server')['redis_version']} at {url}, throwaway prefix {prefix} (deleted)")
    print(f"baseline  bare ZADD of {n:,} members 't<i>': {out['baseline_bytes']:.1f} B/member "
          f"({mb(out['baseline_bytes']):.1f} MB), {n / out['baseline_s']:,.0f} ZADD/s pipelined")
    print(f"timers    {n:,} sla timers (2 per case): {out['timer_bytes']:.1f} B/timer "
          f"({mb(out['timer_bytes']):.1f} MB) = {out['timer_bytes'] / out['baseline_bytes']:.2f}× baseline; "
          f"arm rate {n / out['arm_s']:,.0f}/s = {out['baseline_s'] / out['arm_s']:.2f}× baseline rate")
    print(f"documents {n // 2:,} clock documents ({out['doc_json_bytes']:.0f} B JSON each): "
          f"{out['doc_bytes_per_case']:.1f} B/case → with the timers {out['total_bytes_per_timer']:.1f} B/timer "
          f"({mb(out['total_bytes_per_timer']):.1f} MB for {n:,} timers, "
          f"{out['total_bytes_per_timer'] / out['baseline_bytes']:.2f}× baseline)")
    print(f"burst     {args.burst:,} due at once, fired through the claim path by one process: "
          f"{out['burst_fired']:,.0f} fired, {out['burst_events']:,.0f} events; lateness "
          f"p50 {out['p50'] * 1000:.0f} ms, p99 {out['p99'] * 1000:.0f} ms, max {out['max'] * 1000:.0f} ms")


def _chunks(it, size):  # type: ignore[no-untyped-def]
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
