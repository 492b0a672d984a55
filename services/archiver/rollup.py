"""The ledger's and the indicators' roll-ups, kept by the writer in the transaction of
the rows they sum (so a report never sees one without the other), and rebuilt from the
rows by `refresh` (after a migration, a change of TIMEZONE, or a bulk load).

- `indicator_months`: sla's counter increments summed per local month.
- `ledger_rollup`: the ledger summed per local day and per local month (grain 'd'/'m')
  and (department, street, liaison): breaches by clock, the highest level, the closed
  entries' lateness in tenths of a second (shared/ledger.late_tenths), the earliest entry.
- `ledger_firsts`: for distinct cases over any run of days, how many entries of a bucket
  have their case's previous entry in the same group on `prev_day` (NO_PREVIOUS: none);
  a period [first, last] counts those with prev_day < first.

Several archivers may write entries of the same case at once: each clocks record takes
the case's advisory lock first, so the per-case recount of `ledger_firsts` sees every
entry committed before it. Roll-up rows are updated in key order (table by table, in the
same order), so two archivers never wait on each other's rows in a cycle.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import date, datetime
from typing import Any, Iterable
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb

from shared.ledger import late_tenths

NO_PREVIOUS = date(1, 1, 1)

_ROLLUP = """
INSERT INTO ledger_rollup AS r VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (grain, bucket, dept, street, liaison) DO UPDATE SET
  breaches = r.breaches + EXCLUDED.breaches,
  acknowledge = r.acknowledge + EXCLUDED.acknowledge,
  handle = r.handle + EXCLUDED.handle,
  escalation = r.escalation + EXCLUDED.escalation,
  min_level = least(r.min_level, EXCLUDED.min_level),
  closed = r.closed + EXCLUDED.closed,
  closed_late = r.closed_late + EXCLUDED.closed_late,
  closed_late_max = greatest(r.closed_late_max, EXCLUDED.closed_late_max),
  first_at = CASE WHEN (EXCLUDED.first_at, EXCLUDED.first_id) < (r.first_at, r.first_id)
                  THEN EXCLUDED.first_at ELSE r.first_at END,
  first_id = CASE WHEN (EXCLUDED.first_at, EXCLUDED.first_id) < (r.first_at, r.first_id)
                  THEN EXCLUDED.first_id ELSE r.first_id END
"""
_NO_LEVEL = 2**31 - 1


def day_of(at: float, tz: ZoneInfo) -> date:
    """The local day of an instant (whole seconds: local midnights are whole seconds, so
    the day is the same as comparing the float with them)."""
    return datetime.fromtimestamp(math.floor(at), tz).date()


def _buckets(day: date) -> list[tuple[str, date]]:
    return [("d", day), ("m", day.replace(day=1))]


def add_counts(conn: psycopg.Connection, counts: Iterable[tuple[str, str, str, str, int]]) -> None:
    """Indicator increments (period, scope, key, counter, n) into their months."""
    summed: Counter[tuple[str, str, str, str]] = Counter()
    for p, sc, k, c, n in counts:
        summed[(p, sc, k, c)] += int(n)
    if summed:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO indicator_months AS m VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (period, scope, key, counter) DO UPDATE SET n = m.n + EXCLUDED.n",
                [(*key, n) for key, n in sorted(summed.items())],
            )


def _rollup_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return row[:5]  # grain, bucket, dept, street, liaison: the primary key


def _entry(e: dict[str, Any]) -> tuple[float, float, int, str, str]:
    breached = float(e["breached_at"])
    return (
        breached,
        float(e.get("due", breached)),
        int(e.get("level") or 0),
        str(e.get("liaison") or ""),
        str(e.get("clock") or ""),
    )


def ledger(
    conn: psycopg.Connection,
    case_id: str,
    entries: list[dict[str, Any]],
    ended: list[tuple[str, float]],
    tz: ZoneInfo,
) -> None:
    """A clocks record's ledger entries and ended entries, with their roll-ups."""
    if not entries and not ended:
        return
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (case_id,))
    rollups: list[tuple[Any, ...]] = []
    newly_ended: dict[str, float] = {}
    with conn.cursor() as cur:
        for lid, at in ended:
            if cur.execute(
                "INSERT INTO ledger_ended VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING 1", (lid, at)
            ).fetchone():
                newly_ended[lid] = float(at)
        done_of: dict[str, float] = dict(
            cur.execute(
                "SELECT breach_id, done_at FROM ledger_ended WHERE breach_id = ANY(%s)",
                ([e["id"] for e in entries],),
            ).fetchall()
        )
        added = []
        for e in entries:
            breached, due, level, liaison, clock = _entry(e)
            done = done_of.get(e["id"])
            late = late_tenths(float(done), due) if done is not None else None
            day = day_of(breached, tz)
            if not cur.execute(
                "INSERT INTO ledger (breach_id, case_id, dept, street, breached_at, body, day, liaison, clock, level, "
                "due, done_at, late_tenths) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING RETURNING 1",
                (
                    e["id"],
                    e["case_id"],
                    e["dept"],
                    e["street"],
                    breached,
                    Jsonb(e),
                    day,
                    liaison,
                    clock,
                    level,
                    due,
                    done,
                    late,
                ),
            ).fetchone():
                continue
            added.append(e["id"])
            for grain, bucket in _buckets(day):
                rollups.append(
                    (
                        grain,
                        bucket,
                        e["dept"],
                        e["street"],
                        liaison,
                        1,
                        int(clock == "acknowledge"),
                        int(clock == "handle"),
                        int(clock == "escalation"),
                        level,
                        int(done is not None),
                        late or 0,
                        late or 0,
                        breached,
                        e["id"],
                    )
                )
        for lid, done in newly_ended.items():  # entries archived before their end
            row = cur.execute(
                "UPDATE ledger SET done_at = %s, late_tenths = greatest(0, round((%s - due) * 10))::bigint "
                "WHERE breach_id = %s AND done_at IS NULL RETURNING day, dept, street, liaison, late_tenths",
                (done, done, lid),
            ).fetchone()
            if row is None:
                continue
            day, dept, street, liaison, late = row
            for grain, bucket in _buckets(day):
                rollups.append(
                    (grain, bucket, dept, street, liaison, 0, 0, 0, 0, _NO_LEVEL, 1, late, late, math.inf, "")
                )
        if rollups:  # in key order, as every writer takes them: no deadlock between archivers
            ordered: list[tuple[Any, ...]] = sorted(rollups, key=_rollup_key)
            cur.executemany(_ROLLUP, ordered)
        if added:
            _recount_firsts(cur, case_id, set(added))


def _firsts(rows: list[tuple[str, str, str, str, float, date]]) -> Counter[tuple[Any, ...]]:
    """What a case's entries (id, dept, street, liaison, breached_at, day) add to ledger_firsts."""
    out: Counter[tuple[Any, ...]] = Counter()
    ordered = sorted(rows, key=lambda r: (r[4], r[0]))
    for scope in ("d", "l"):
        last: dict[tuple[str, str, str], date] = {}
        for _id, dept, street, liaison, _at, day in ordered:
            group = (dept, "", "") if scope == "d" else (dept, street, liaison)
            prev = last.get(group, NO_PREVIOUS)
            last[group] = day
            for grain, bucket in _buckets(day):
                out[(grain, bucket, scope, *group, prev)] += 1
    return out


def _recount_firsts(cur: psycopg.Cursor[Any], case_id: str, added: set[str]) -> None:
    rows = cur.execute(
        "SELECT breach_id, dept, street, liaison, breached_at, day FROM ledger WHERE case_id = %s", (case_id,)
    ).fetchall()
    delta = _firsts(rows)
    delta.subtract(_firsts([r for r in rows if r[0] not in added]))
    changes = [(*k, n) for k, n in sorted(delta.items()) if n]
    if not changes:
        return
    cur.executemany(
        "INSERT INTO ledger_firsts AS f VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (grain, bucket, scope, dept, street, liaison, prev_day) DO UPDATE SET n = f.n + EXCLUDED.n",
        changes,
    )
    emptied = [c[:7] for c in changes if c[7] < 0]
    if emptied:  # a row down to 0 goes, as refresh() would not make it
        cur.executemany(
            "DELETE FROM ledger_firsts WHERE (grain, bucket, scope, dept, street, liaison, prev_day) = "
            "(%s, %s, %s, %s, %s, %s, %s) AND n = 0",
            emptied,
        )


def state(conn: psycopg.Connection) -> str | None:
    """The time zone the roll-ups were cut in (None: never refreshed)."""
    row = conn.execute("SELECT timezone FROM rollup_state").fetchone()
    return row[0] if row else None


def ensure(conn: psycopg.Connection, tz: ZoneInfo) -> bool:
    """Refresh the roll-ups unless they were cut in this time zone (True if refreshed)."""
    if state(conn) == tz.key:
        return False
    refresh(conn, tz)
    return True


def refresh(conn: psycopg.Connection, tz: ZoneInfo) -> None:
    """Every roll-up recomputed from the rows (one transaction; readers see the old ones
    until it commits). The same figures as the writer's increments (a test checks it)."""
    name = tz.key
    with conn.transaction():
        conn.execute("LOCK TABLE ledger, ledger_ended, ledger_rollup, ledger_firsts IN SHARE ROW EXCLUSIVE MODE")
        conn.execute(
            """UPDATE ledger SET
                 day = (to_timestamp(floor(breached_at)) AT TIME ZONE %s)::date,
                 liaison = COALESCE(body->>'liaison', ''),
                 clock = COALESCE(body->>'clock', ''),
                 level = COALESCE((body->>'level')::int, 0),
                 due = COALESCE((body->>'due')::float8, breached_at),
                 done_at = NULL, late_tenths = NULL""",
            (name,),
        )
        conn.execute(
            "UPDATE ledger l SET done_at = e.done_at, "
            "late_tenths = greatest(0, round((e.done_at - l.due) * 10))::bigint "
            "FROM ledger_ended e WHERE e.breach_id = l.breach_id"
        )
        conn.execute("TRUNCATE ledger_rollup, ledger_firsts")
        for grain, bucket in (("d", "day"), ("m", "date_trunc('month', day)::date")):
            conn.execute(
                f"""INSERT INTO ledger_rollup
                    SELECT %s, {bucket}, dept, street, liaison, count(*)::int,
                      count(*) FILTER (WHERE clock = 'acknowledge')::int,
                      count(*) FILTER (WHERE clock = 'handle')::int,
                      count(*) FILTER (WHERE clock = 'escalation')::int,
                      min(level), count(done_at)::int, COALESCE(sum(late_tenths), 0)::bigint,
                      COALESCE(max(late_tenths), 0),
                      (array_agg(breached_at ORDER BY breached_at, breach_id COLLATE "C"))[1],
                      (array_agg(breach_id COLLATE "C" ORDER BY breached_at, breach_id COLLATE "C"))[1]
                    FROM ledger GROUP BY 2, 3, 4, 5""",
                (grain,),
            )
            conn.execute(
                f"""INSERT INTO ledger_firsts
                    SELECT %s, {bucket}, scope, dept, s, li, prev, count(*)::int FROM (
                      SELECT day, 'd' AS scope, dept, '' AS s, '' AS li, COALESCE(lag(day) OVER (
                        PARTITION BY case_id, dept ORDER BY breached_at, breach_id COLLATE "C"), %s) AS prev
                      FROM ledger
                      UNION ALL
                      SELECT day, 'l', dept, street, liaison, COALESCE(lag(day) OVER (
                        PARTITION BY case_id, dept, street, liaison ORDER BY breached_at, breach_id COLLATE "C"), %s)
                      FROM ledger) x
                    GROUP BY 2, 3, 4, 5, 6, 7""",
                (grain, NO_PREVIOUS, NO_PREVIOUS),
            )
        conn.execute(
            "INSERT INTO rollup_state (timezone) VALUES (%s) "
            "ON CONFLICT (id) DO UPDATE SET timezone = EXCLUDED.timezone",
            (name,),
        )
