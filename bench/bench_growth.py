"""Growth benchmark: the per-report paths and the read paths with 10 k, 100 k, 1 M cases present.

    python -m bench.bench_growth --sizes 10000,100000,1000000     # the full run (minutes)
    python -m bench.bench_growth                                  # small sizes (CI-able)

Never touches the machine's shared Redis: it starts a redis-server of its own on a free
loopback port (bench/chaos/nodes.py's RedisNode, persistence off) and stops it after; the
archive is a throwaway PostgreSQL database (DATABASE_URL's server), dropped after.

The data grows in place, size after size. Case k (k = 0 is the newest) was registered
k × 86.4 s before now — a district's 1 000 cases a day — so that the last day, the
duplicate window and the accountability report of yesterday hold the same cases at every
size, and only the total grows. Every `1/--open-share`-th case is open (dispatched, in Redis
as intake keeps it: its document, idempotency key, listing and open sorted sets, its
category's geo index); the rest are archived (closed, in the archiver's `cases` table;
Redis keeps only what retention leaves: the listing entry and the idempotency key). Every
fourth case has a breach in the accountability ledger (Redis, where sla keeps every entry,
and for archived cases in the archive's `ledger` table too). The documents are one real
dispatched case (made by intake's Registrar and router's Dispatcher) with its ids, times,
place and category changed: the bulk equivalent of the real write path.

At each size, `--ops` times each (fresh reports at random places in the district):
- `register`: intake's Registrar.register (idempotency check, grid, duplicate search, case
  number, the Lua register);
- `route`: router's Dispatcher.plan_event for the new case;
- `duplicate_search`: services/intake/duplicates.find_original at a random place;
- `list_last_day`, `list_first_page`, `list_dept`: GET /v1/cases's list_cases — the last
  day's cases; the first page without a filter (the oldest: archived, read from PostgreSQL);
  the cases dispatched to one department (filters applied to the documents read);
- `accountability_day`: GET /v1/accountability's handler for yesterday (Redis ledger);
- `archive_ledger_day`: the archive's ledger report (services/reports.py) for yesterday.

Per operation: p50/p99 latency and CPU — this process plus our Redis server plus the
PostgreSQL backends serving it (schedstat, nanoseconds) — and each as a ratio to the first
size's figure. Redis bytes per open case and per archived case (used_memory deltas of our
own server). JSON in bench/results/growth-<time>.json (or --out).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

OPS = (
    "register",
    "route",
    "duplicate_search",
    "list_last_day",
    "list_first_page",
    "list_dept",
    "accountability_day",
    "archive_ledger_day",
)
PER_DAY = 1000
SPACING_S = 86400 / PER_DAY
BATCH = 5000


def schedstat_ns(pid: int) -> int:
    """CPU time of every thread of a process, in ns (Linux schedstat)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
    return total


@dataclass
class Meter:
    """CPU of this process, our Redis server and the PostgreSQL backends it watches."""

    pids: list[int] = field(default_factory=list)

    def cpu_ns(self) -> int:
        return sum(self.parts())

    def parts(self) -> list[int]:
        """[this process, then each watched pid] in ns."""
        return [time.process_time_ns(), *(schedstat_ns(p) for p in self.pids)]


def case_id_of(k: int, registered: datetime, tz: ZoneInfo) -> str:
    # a day holds ~1 000 consecutive k: distinct serials within it
    return f"450305-{registered.astimezone(tz):%Y%m%d}-{100000 + k % 800000:06d}"


class Growth:
    def __init__(self, r: Any, conn: Any, open_share: float, seed: int = 7) -> None:
        from bench.common import sample_reports
        from services.intake.cases import Registrar, apply_event
        from services.intake.duplicates import load_duplicate_policy
        from services.intake.store import CaseStore
        from services.router.compiler import load_routing_tree
        from services.router.dispatch import Dispatcher
        from shared.archive import ArchiveReader
        from shared.catalog import load_catalog
        from shared.config import get_settings
        from shared.grid import load_grid
        from shared.models import Report
        from shared.policies import load_policies
        from shared.worktime import load_calendar

        self.settings = get_settings()
        self.tz = ZoneInfo(self.settings.timezone)
        self.r, self.conn = r, conn
        self.every = max(1, round(1 / open_share))
        self.rng = random.Random(seed)
        catalog = load_catalog()
        self.grid = load_grid()
        self.archive = ArchiveReader(self.settings.database_url)
        self.store = CaseStore(r, self.settings.district_code, self.archive)
        self.registrar = Registrar(self.store, catalog, self.grid, self.settings.timezone, load_duplicate_policy())
        self.dispatcher = Dispatcher(
            load_routing_tree(self.settings.config_dir / "routes.yaml", catalog=catalog),
            catalog,
            load_policies(),
            load_calendar(),
        )
        self.templates = sample_reports()
        self.points = self._points(2000)
        self.seq = 0
        # one real dispatched case per template: the documents of the bulk data
        self.cases = []
        for i, t in enumerate(self.templates):
            body = dict(t, report_id=f"growth-template-{i}", observed_at=datetime.now(timezone.utc).isoformat())
            reg = self.registrar.register(Report.model_validate(body))
            plan = self.dispatcher.plan_event(reg.events[0])
            assert plan is not None and plan.dispatched.assignments, f"template {i} did not route"
            case, _events, _ = apply_event(self.store, plan.dispatched)
            self.cases.append(case)
        self.depts = sorted({a.dept for c in self.cases for a in c.assignments})
        self.now = time.time()
        self.present = 0
        self.ledger_ids: list[str] = []

    def _points(self, n: int) -> list[tuple[float, float, Any]]:
        """Random places in the district (its boundary's bounding box, kept when inside),
        with their placement (a patch, else the street whose outline holds it, else the
        district, as intake places a report)."""
        lon0, lat0, lon1, lat1 = self.grid.boundary.bounds
        out: list[tuple[float, float, Any]] = []
        for _ in range(20 * n):
            if len(out) >= n:
                break
            lat, lon = self.rng.uniform(lat0, lat1), self.rng.uniform(lon0, lon1)
            if self.grid.in_district(lat, lon):
                out.append((round(lat, 6), round(lon, 6), self.grid.place(lat, lon)))
        assert out, "no point in the district"
        return out

    # ------------------------------------------------------------------ bulk data
    def grow(self, size: int) -> dict[str, float]:
        """Add cases [present, size); returns Redis bytes per open / per archived case."""
        from shared import redis_keys as keys

        used = lambda: int(self.r.info("memory")["used_memory"])  # noqa: E731
        opened = archived = 0
        m0 = used()
        pipe = self.r.pipeline(transaction=False)
        n_in_pipe = 0
        for k in range(self.present, size):
            if k % self.every:
                continue
            reg = datetime.fromtimestamp(self.now - k * SPACING_S, timezone.utc)
            cid, doc, cat, lat, lon = self._open_doc(k, reg)
            version = self.cases[k % len(self.cases)].version
            rid = f"growth-{k}"
            pipe.set(keys.report_index(rid), cid)
            pipe.hset(keys.case(cid), mapping={"doc": doc, "version": version})
            pipe.zadd(keys.cases_by_time(), {cid: reg.timestamp()})
            pipe.zadd(keys.open_cases(), {cid: reg.timestamp()})
            geo = keys.open_cases_geo(cat, keys.geo_day(reg.timestamp()))  # as intake's register script
            pipe.geoadd(geo, (lon, lat, cid))
            pipe.expire(geo, keys.GEO_DAY_TTL_S)
            opened += 1
            n_in_pipe += 1
            if n_in_pipe >= BATCH:
                pipe.execute()
                n_in_pipe = 0
        pipe.execute()
        m1 = used()
        for k in range(self.present, size):
            if not k % self.every:
                continue
            reg = datetime.fromtimestamp(self.now - k * SPACING_S, timezone.utc)
            cid = case_id_of(k, reg, self.tz)
            pipe.set(keys.report_index(f"growth-{k}"), cid)
            pipe.zadd(keys.cases_by_time(), {cid: reg.timestamp()})
            archived += 1
            n_in_pipe += 1
            if n_in_pipe >= BATCH:
                pipe.execute()
                n_in_pipe = 0
        pipe.execute()
        m2 = used()
        self._archive(self.present, size)
        m3 = used()
        self._ledger(self.present, size)
        m4 = used()
        out = {
            "open_added": opened,
            "archived_added": archived,
            "bytes_per_open_case": (m1 - m0) / max(1, opened),
            "bytes_per_archived_case": (m2 - m1) / max(1, archived),
            "ledger_bytes_per_case": (m4 - m3) / max(1, size - self.present),
        }
        self.present = size
        return out

    def _open_doc(self, k: int, reg: datetime) -> tuple[str, str, str, float, float]:
        tpl = self.cases[k % len(self.cases)]
        lat, lon, place = self.points[(k // len(self.cases)) % len(self.points)]
        cid = case_id_of(k, reg, self.tz)
        rid = f"growth-{k}"
        assignments = [
            a.model_copy(update={"order_id": f"{cid}/1/{a.dept}", "dispatched_at": reg, "street": place.street})
            for a in tpl.assignments
        ]
        timeline = [e.model_copy(update={"at": reg}) for e in tpl.timeline]
        case = tpl.model_copy(
            update={
                "case_id": cid,
                "report_id": rid,
                "correlation_id": rid,
                "registered_at": reg,
                "updated_at": reg,
                "observed_at": reg,
                "location": tpl.location.model_copy(update={"lat": lat, "lon": lon, "grid": place.code}),
                "grid": place.code,
                "street": place.street,
                "assignments": assignments,
                "timeline": timeline,
            }
        )
        return cid, case.model_dump_json(), tpl.category, lat, lon

    def _archive(self, lo: int, hi: int) -> None:
        """Archived cases [lo, hi) (not open) in the archive's `cases` table, in SQL."""
        from shared.models import CaseStatus

        tpl = self.cases[0].model_copy(update={"status": CaseStatus.closed})
        doc = tpl.model_dump_json()
        self.conn.execute(
            """INSERT INTO cases (case_id, version, report_id, idempotency_key, status, category, severity, grid,
                   street, registered_at, updated_at, final, resolution_mode, resolved_at, duplicate_of, doc,
                   evicted_at)
               SELECT x.cid, 9, 'growth-' || x.k, 'growth-' || x.k, 'closed', %(cat)s, 'normal', %(grid)s, %(street)s,
                   x.reg, x.reg + interval '2 days', true, 'service', x.reg + interval '1 day', NULL,
                   %(doc)s::jsonb || jsonb_build_object('case_id', x.cid, 'report_id', 'growth-' || x.k,
                       'correlation_id', 'growth-' || x.k, 'status', 'closed',
                       'registered_at', to_char(x.reg AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
                       'updated_at', to_char(x.reg AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')),
                   now()
               FROM (SELECT k, to_timestamp(%(now)s - k * %(spacing)s) AS reg,
                            '450305-' || to_char(to_timestamp(%(now)s - k * %(spacing)s) AT TIME ZONE %(tz)s,
                                                 'YYYYMMDD') || '-' || lpad((100000 + k %% 800000)::text, 6, '0') AS cid
                     FROM generate_series(%(lo)s, %(hi)s - 1) k WHERE k %% %(every)s <> 0) x""",
            {
                "cat": tpl.category,
                "grid": tpl.grid,
                "street": tpl.street,
                "doc": doc,
                "now": self.now,
                "spacing": SPACING_S,
                "tz": self.settings.timezone,
                "lo": lo,
                "hi": hi,
                "every": self.every,
            },
        )
        self.conn.commit()

    def _ledger(self, lo: int, hi: int) -> None:
        """A breach for every fourth case: in Redis (sla keeps every entry) and, for the
        archived cases, in the archive's `ledger` table."""
        from shared import redis_keys as keys

        pipe = self.r.pipeline(transaction=False)
        rows = []
        for k in range(lo - lo % 4 + (4 if lo % 4 else 0), hi, 4):
            reg = self.now - k * SPACING_S
            cid = case_id_of(k, datetime.fromtimestamp(reg, timezone.utc), self.tz)
            tpl = self.cases[k % len(self.cases)]
            a = tpl.assignments[0]
            lid = f"{cid}|1/{a.dept}/a|1"
            entry = {
                "id": lid,
                "case_id": cid,
                "order_id": f"{cid}/1/{a.dept}",
                "dept": a.dept,
                "liaison": "联络员",
                "liaison_phone": "13900000000",
                "street": a.street,
                "grid": tpl.grid,
                "category": tpl.category,
                "level": a.level,
                "clock": "acknowledge",
                "step": 0,
                "limit": "1h",
                "due": reg + 3600,
                "breached_at": reg + 3600,
                "commanders": [],
            }
            body = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
            pipe.hset(keys.sla_ledger(), lid, body)
            pipe.zadd(keys.sla_ledger_by_time(), {lid: reg + 3600})
            if k % self.every:
                rows.append((lid, cid, a.dept, a.street, reg + 3600, body))
            if len(pipe) >= 2 * BATCH:
                pipe.execute()
        pipe.execute()
        with self.conn.cursor() as cur:
            with cur.copy("COPY ledger (breach_id, case_id, dept, street, breached_at, body) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row(row)
        self.conn.commit()

    # ------------------------------------------------------------------ operations
    def report(self) -> Any:
        from shared.models import Report

        self.seq += 1
        tpl = self.templates[self.seq % len(self.templates)]
        lat, lon, place = self.points[self.rng.randrange(len(self.points))]
        body = json.loads(json.dumps(tpl))
        body["report_id"] = f"growth-new-{uuid.uuid4().hex[:12]}"
        body["location"] = {**body.get("location", {}), "lat": lat, "lon": lon}
        body["location"].pop("grid", None)  # placed by intake from the point
        body["observed_at"] = datetime.now(timezone.utc).isoformat()
        return Report.model_validate(body)

    def operations(self) -> dict[str, Callable[[], Any]]:
        from services import reports
        from services.intake.accountability_api import accountability
        from services.intake.duplicates import find_original
        from services.intake.queries import list_cases, parse_query
        from shared.ledger import Period, summary
        from shared.models import CaseRegistered, utcnow

        yesterday = (datetime.now(self.tz) - timedelta(days=1)).date().isoformat()
        last_day = (datetime.now(self.tz) - timedelta(days=1)).isoformat()
        registered: list[Any] = []

        def register() -> None:
            reg = self.registrar.register(self.report())
            registered.append(reg)

        def route() -> None:
            reg = registered.pop() if registered else self.registrar.register(self.report())
            events = [e for e in reg.events if isinstance(e, CaseRegistered)]
            if events:
                self.dispatcher.plan_event(events[0])

        def duplicate_search() -> None:
            lat, lon, _ = self.points[self.rng.randrange(len(self.points))]
            cat = self.cases[self.rng.randrange(len(self.cases))].category
            find_original(self.r, self.registrar.duplicates, cat, lat, lon, utcnow())

        dept = self.depts[0]
        return {
            "register": register,
            "route": route,
            "duplicate_search": duplicate_search,
            "list_last_day": lambda: list_cases(self.store, parse_query({"since": last_day}, self.tz)),
            "list_first_page": lambda: list_cases(self.store, parse_query({}, self.tz)),
            "list_dept": lambda: list_cases(
                self.store, parse_query({"status": "dispatched", "dept": dept, "since": last_day}, self.tz)
            ),
            "accountability_day": lambda: accountability(self.r, {"from": yesterday, "to": yesterday}),
            "archive_ledger_day": lambda: summary(
                reports.ledger_entries(self.conn, Period.parse(yesterday, yesterday, self.tz))
            ),
        }


def measure(fn: Callable[[], Any], ops: int, meter: Meter) -> dict[str, float]:
    fn()  # warm: connections, scripts, caches
    took = []
    p0 = meter.parts()
    for _ in range(ops):
        t = time.perf_counter()
        fn()
        took.append(time.perf_counter() - t)
    parts = [(b - a) / ops / 1e6 for a, b in zip(p0, meter.parts(), strict=True)]
    took.sort()
    return {
        "ops": ops,
        "p50_ms": statistics.median(took) * 1000,
        "p99_ms": took[min(len(took) - 1, int(0.99 * (len(took) - 1) + 0.999))] * 1000,
        "cpu_ms": sum(parts),
        # where the CPU went: this process (the service's code), our Redis server, PostgreSQL
        "cpu_client_ms": parts[0],
        "cpu_redis_ms": parts[1] if len(parts) > 1 else 0.0,
        "cpu_pg_ms": sum(parts[2:]),
    }


def run(sizes: list[int], ops: int, open_share: float, out: str | None = None) -> dict[str, Any]:
    from bench.chaos.nodes import RedisNode
    from bench.common import envelope, result_path, write_result

    sizes = sorted(set(sizes))
    tmp = Path(tempfile.mkdtemp(prefix="gridbus-growth-"))
    node = RedisNode(base=tmp / "redis", extra_args=("--appendonly", "no", "--maxmemory-policy", "noeviction"))
    node.log = open(tmp / "redis.log", "wb")  # noqa: SIM115 - closed with the server
    node.start()
    prefix = f"growth{uuid.uuid4().hex[:6]}"
    saved = {k: os.environ.get(k) for k in ("REDIS_URL", "REDIS_KEY_PREFIX", "DATABASE_URL", "REDIS_SENTINELS")}
    result: dict[str, Any] = envelope(
        "growth", {"sizes": sizes, "ops": ops, "open_share": open_share, "per_day": PER_DAY}
    )
    try:
        import psycopg
        import redis
        from psycopg.conninfo import make_conninfo

        from services.archiver import db
        from shared.config import get_settings, reset_settings
        from shared.logs import configure_logging

        base_dsn = os.environ.get("DATABASE_URL") or "postgresql://root@127.0.0.1:5432/gridbus"
        dsn = make_conninfo(base_dsn, dbname=f"gridbus_growth_{uuid.uuid4().hex[:8]}")
        os.environ.update({"REDIS_URL": node.url, "REDIS_KEY_PREFIX": prefix, "DATABASE_URL": dsn})
        os.environ.pop("REDIS_SENTINELS", None)
        reset_settings()
        configure_logging("console", "ERROR", service="bench")
        db.prepare(dsn)
        try:
            r = redis.Redis.from_url(get_settings().redis_url, decode_responses=True)
            with psycopg.connect(dsn) as conn:
                g = Growth(r, conn, open_share)
                g.archive.get_many(["warm-up"])  # its connection open, so that its backend is metered
                pids = [node.proc.pid] if node.proc else []
                pids += [conn.info.backend_pid]
                if g.archive._conn is not None:
                    pids.append(g.archive._conn.info.backend_pid)
                meter = Meter(pids)
                result["redis"] = {"server": r.info("server")["redis_version"], "port": node.port}
                result["sizes"] = {}
                for size in sizes:
                    t0 = time.perf_counter()
                    mem = g.grow(size)
                    conn.execute("ANALYZE cases")
                    conn.execute("ANALYZE ledger")
                    conn.commit()
                    grown_s = time.perf_counter() - t0
                    # what growing left in this process is not a service's state: out of the
                    # cyclic GC's way (else its collections, whose cost follows the objects
                    # alive here, grow with the size: `route`, which reads no data, grew 1.8×)
                    gc.collect()
                    gc.freeze()
                    figures = {name: measure(fn, ops, meter) for name, fn in g.operations().items()}
                    result["sizes"][str(size)] = {
                        "cases": size,
                        "open": int(r.zcard(f"{prefix}:cases:open")),
                        "grow_s": round(grown_s, 1),
                        "load_average": os.getloadavg()[0],
                        **{k: round(v, 1) for k, v in mem.items()},
                        "ops": figures,
                    }
                    print(_line(size, result["sizes"][str(size)], grown_s), flush=True)
                    for name, f in figures.items():  # as it goes: a long run can be read before it ends
                        ms = f"p50 {f['p50_ms']:9.2f}  p99 {f['p99_ms']:9.2f} ms"
                        ms += f"  (CPU client {f['cpu_client_ms']:.2f}, Redis {f['cpu_redis_ms']:.2f})"
                        print(f"    {name:<20} CPU {f['cpu_ms']:8.2f} ms  {ms}", flush=True)
                first = result["sizes"][str(sizes[0])]["ops"]
                for s in result["sizes"].values():
                    for name, f in s["ops"].items():
                        b = first[name]
                        f["p99_ratio"] = round(f["p99_ms"] / b["p99_ms"], 3) if b["p99_ms"] else None
                        f["cpu_ratio"] = round(f["cpu_ms"] / b["cpu_ms"], 3) if b["cpu_ms"] else None
                if g.archive._conn is not None:
                    g.archive._conn.close()
        finally:
            db.drop_database(dsn)
    finally:
        node.stop()
        node.log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        from shared.config import reset_settings

        reset_settings()
    path = write_result(result, result_path("growth", out))
    print(_table(result, sizes))
    print(f"result: {path}")
    result["path"] = str(path)
    return result


def _line(size: int, s: dict[str, Any], grown_s: float) -> str:
    return (
        f"{size:>9,} cases ({s['open']:,} open) grown in {grown_s:.0f} s, load {s['load_average']:.1f}: "
        f"Redis {s['bytes_per_open_case']:.0f} B per open case, {s['bytes_per_archived_case']:.0f} B per archived"
    )


def _table(result: dict[str, Any], sizes: list[int]) -> str:
    head = "| operation | " + " | ".join(f"{s:,}: p99 ms / CPU ms (× first)" for s in sizes) + " |"
    rows = [head, "|---" * (len(sizes) + 1) + "|"]
    for name in OPS:
        cells = []
        for s in sizes:
            f = result["sizes"][str(s)]["ops"][name]
            ratios = f"{f.get('p99_ratio') or 0:.2f}× / {f.get('cpu_ratio') or 0:.2f}×"
            cells.append(f"{f['p99_ms']:.2f} / {f['cpu_ms']:.2f} ({ratios})")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2000,10000", help="comma-separated case counts (default small)")
    ap.add_argument("--ops", type=int, default=100, help="timed runs of each operation per size")
    ap.add_argument("--open-share", type=float, default=0.1, help="share of the cases that are open")
    ap.add_argument("--out", help="result JSON path")
    args = ap.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like Ctrl-C: our Redis server is stopped and the database dropped
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = [int(x.replace("_", "")) for x in args.sizes.split(",") if x.strip()]
    return run(sizes, args.ops, args.open_share, args.out)


if __name__ == "__main__":
    main()
