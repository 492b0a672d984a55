"""Redis wiped and rebuilt from the PostgreSQL archive (`gridbus rebuild`).

A stack of its own (its own vhost, Redis prefix and database): cases in every state, the
archive catches up, the stack stops, every Redis key of the stack is deleted, `gridbus
rebuild` runs, the stack starts again — and every case reads the same, the clocks run
with the same due times, finished notifications stay finished, and a new report gets a
case id never used before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

import httpx
import psycopg
import pytest
import redis
from psycopg.conninfo import make_conninfo

from services.archiver import db
from services.archiver.retention import evict
from services.demo import wait_until_ready
from services.intake.auth import Role, create_key, revoke_key
from services.runner import start_all, stop_all
from shared import topology
from shared.amqpclient import connection, queue_info
from shared.config import Settings, reset_settings
from tests.conftest import REPO, Vhosts, copy_config, service_ports, wait_for
from tests.e2e.conftest import SECRET, TEST_SLA, Sink, report, spread_location

pytestmark = pytest.mark.e2e


class Stack:
    def __init__(self, env: dict[str, str], log_path: Any) -> None:
        self.env, self.log_path = env, log_path
        self.settings = Settings(**{k.lower(): v for k, v in env.items()})
        self.base = f"http://127.0.0.1:{self.settings.intake_http_port}"
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        self.log = open(self.log_path, "a")
        self.procs = start_all(env=self.env, stdout=self.log)
        wait_until_ready(self.settings, self.procs, timeout=90)

    def stop(self) -> None:
        stop_all(self.procs)
        self.log.close()


@pytest.fixture()
def own_stack(
    vhost_factory: Vhosts, redis_url: str, pg_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    vhost = vhost_factory.make("rebuild")
    dsn = make_conninfo(pg_dsn, dbname=f"gridbus_test_{uuid.uuid4().hex[:10]}")
    db.prepare(dsn)
    config_dir = copy_config(tmp_path_factory.mktemp("config"))
    (config_dir / "sla.yaml").write_text(TEST_SLA, encoding="utf-8")
    sink = Sink()
    env = {
        "AMQP_URI": vhost,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": f"reb{uuid.uuid4().hex[:8]}",
        "DATABASE_URL": dsn,
        "CONFIG_DIR": str(config_dir),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        **service_ports(),
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_URL_TEMPLATE": f"http://127.0.0.1:{sink.port}/hooks/{{dept}}",
        "OUTBOX_RELAY_SECONDS": "0.5",
        "OUTBOX_RELAY_AFTER_SECONDS": "0.5",
    }
    stack = Stack(env, config_dir / "services.log")
    stack.start()
    try:
        yield stack
    finally:
        if any(p.poll() is None for p in stack.procs):
            stack.stop()
        sink.close()
        print(stack.log_path.read_text()[-4000:])
        vhost_factory.drop(vhost)
        db.drop_database(dsn)
        client = redis.Redis.from_url(redis_url)
        leftover = list(client.scan_iter(f"{env['REDIS_KEY_PREFIX']}:*", count=1000))
        if leftover:
            client.delete(*leftover)


def rebuild_again(stack: Stack, client: redis.Redis) -> Any:
    """What `gridbus rebuild` does, in this process, with the stack's settings."""
    from zoneinfo import ZoneInfo

    from services import rebuild as rb
    from services.sla.deadlines import Deadlines
    from shared.departments import load_departments
    from shared.grid import load_grid
    from shared.policies import load_policies
    from shared.worktime import load_calendar

    with as_stack(stack):
        tz = ZoneInfo(stack.settings.timezone)
        with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
            tail = rb.catch_up(conn, stack.env["AMQP_URI"], tz)
            report = rb.restore(conn, client, stack.settings.case_hot_days, tz)
            report.tail = tail
            conn.commit()
        d = Deadlines(
            client, load_policies(), load_calendar(), lambda _e: None, grid=load_grid(), departments=load_departments()
        )
        _c, report.timers = d.rebuild()
        return report


@contextmanager
def as_stack(stack: Stack) -> Iterator[None]:
    """This process's settings (Redis key prefix …) those of the stack."""
    mp = pytest.MonkeyPatch()
    for k, v in stack.env.items():
        mp.setenv(k, v)
    reset_settings()
    try:
        yield
    finally:
        mp.undo()
        reset_settings()


def api_keys(r: redis.Redis, prefix: str) -> dict[str, dict[str, str]]:
    return {k: r.hgetall(f"{prefix}:apikey:{k}") for k in r.smembers(f"{prefix}:apikeys")}


def case_log(r: redis.Redis, prefix: str, case_id: str) -> dict[str, Any]:
    """The notifier's log of a case's deliveries (what the console's case page lists)."""
    return {d: json.loads(v) for d, v in r.hgetall(f"{prefix}:notify:case:{case_id}").items()}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def quiet(stack: Stack, r: redis.Redis, dsn: str, case_ids: list[str], auth: dict[str, str]) -> bool:
    """Nothing in flight: the outboxes are empty, the work queues drained, and the archive
    holds each case's current version."""
    prefix = stack.env["REDIS_KEY_PREFIX"]
    if r.zcard(f"{prefix}:outbox:times") or r.zcard(f"{prefix}:sla:outbox:times"):
        return False
    with connection(stack.env["AMQP_URI"]) as conn:
        for q in (
            topology.Q_INTAKE_EVENTS,
            topology.Q_SLA_EVENTS,
            topology.Q_NOTIFIER_EVENTS,
            topology.Q_NOTIFIER_DELIVERIES,
            topology.Q_ROUTER_CASES,
        ):
            info = queue_info(conn, q)
            assert info is not None, f"{q} is not declared"
            if info[0] or info[1] == 0:
                return False
    with psycopg.connect(dsn) as pg:
        archived = dict(pg.execute("SELECT case_id, version FROM cases").fetchall())
    for case_id in case_ids:
        live = httpx.get(f"{stack.base}/v1/cases/{case_id}", headers=auth, timeout=5).json()
        if archived.get(case_id) != live["version"]:
            return False
    return True


@pytest.mark.timeout(420)  # two stack starts: on a loaded 2-core machine each can take a minute
def test_redis_wiped_and_rebuilt_from_the_archive(own_stack: Stack, redis_url: str) -> None:
    stack = own_stack
    prefix = stack.env["REDIS_KEY_PREFIX"]
    dsn = stack.env["DATABASE_URL"]
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    grid_app = create_key(r, Role.grid_app, name="rebuild", prefix=prefix)[0]
    ops = create_key(r, Role.ops, name="rebuild", prefix=prefix)[0]
    lighting = create_key(r, Role.department, "lighting", name="rebuild", prefix=prefix)[0]
    station = create_key(r, Role.station, name="rebuild", prefix=prefix, street="450305001")[0]
    retired = create_key(r, Role.ops, name="retired", prefix=prefix)[0]
    auth = bearer(grid_app)

    def new_case(**over: Any) -> str:
        resp = httpx.post(f"{stack.base}/v1/reports", json=report(**over), headers=auth, timeout=5)
        assert resp.status_code == 202, resp.text
        return resp.json()["case_id"]

    def case(case_id: str) -> dict[str, Any]:
        return httpx.get(f"{stack.base}/v1/cases/{case_id}", headers=auth, timeout=5).json()

    def reply(case_id: str, action: str, **fields: Any) -> dict[str, Any]:
        body = {"reply_id": uuid.uuid4().hex[:12], "action": action, **fields}
        resp = httpx.post(f"{stack.base}/v1/cases/{case_id}/replies", json=body, headers=bearer(lighting), timeout=5)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def status_is(case_id: str, status: str) -> None:
        assert wait_for(lambda: case(case_id)["status"] == status, 30), (case_id, case(case_id)["status"])

    t0 = time.monotonic()

    def mark(what: str) -> None:
        print(f"[rebuild test] {time.monotonic() - t0:6.1f} s {what}")

    where = spread_location()
    states: dict[str, str] = {}
    escalated = new_case(location=where)  # never acknowledged: escalates after 3 s
    states[escalated] = "dispatched"
    states[new_case(location=dict(where))] = "duplicate"  # repeats it nearby
    for target in ("acknowledged", "suspended", "resolved", "closed", "cancelled"):
        cid = new_case()
        states[cid] = target
        status_is(cid, "dispatched")
        if target == "cancelled":
            resp = httpx.post(
                f"{stack.base}/v1/cases/{cid}/cancellation",
                json={"reason": "重复上报，无效"},
                headers=bearer(ops),
                timeout=5,
            )
            assert resp.status_code == 200, resp.text
            continue
        reply(cid, "acknowledge", note="已派人")
        if target == "suspended":
            reply(cid, "suspend", reason="等待供电公司停电检修")
            resp = httpx.post(
                f"{stack.base}/v1/cases/{cid}/suspension",
                headers=bearer(ops),
                timeout=5,
                json={"decision": "approve", "approver": "指挥中心 李主任", "note": "同意"},
            )
            assert resp.status_code == 200, resp.text
        if target in ("resolved", "closed"):
            reply(cid, "resolve", mode="service", note="已修复", evidence_urls=["https://img.example/after.jpg"])
        if target == "closed":
            resp = httpx.post(
                f"{stack.base}/v1/cases/{cid}/verification",
                headers=auth,
                timeout=5,
                json={"result": "pass", "note": "核查通过", "verifier": "g-0007"},
            )
            assert resp.status_code == 200, resp.text
    mark("cases made")
    for cid, status in states.items():
        status_is(cid, status)
    mark("states reached")
    assert wait_for(lambda: any("escalated" in t["note"] for t in case(escalated)["timeline"]), 40)
    ids = list(states)
    assert wait_for(lambda: quiet(stack, r, dsn, ids, auth), 120, interval=1.0), "the archive never caught up"

    mark("quiet")
    with psycopg.connect(dsn) as pg:  # the reporters' phone number (tests/e2e/conftest.py report()) is nowhere
        for table in ("journal", "cases", "case_timeline", "orders", "ledger", "notifications"):
            assert pg.execute(f"SELECT count(*) FROM {table} t WHERE t::text LIKE '%%13800001024%%'").fetchone() == (
                0,
            ), table
        assert pg.execute("SELECT count(*) FROM journal WHERE kind = 'case_recorded'").fetchone()[0] > len(ids)
    before = {cid: case(cid) for cid in ids}
    # the station key used once (authenticated, whatever it may read): its last use is noted
    assert httpx.get(f"{stack.base}/v1/cases", headers=bearer(station), timeout=5).status_code != 401
    with as_stack(stack):
        assert revoke_key(r, retired)
    with httpx.Client(base_url=stack.base, timeout=5, follow_redirects=False) as browser:
        assert browser.post("/console/login", data={"key": ops, "next": "/console/board"}).status_code == 303
        session_cookie = dict(browser.cookies)
    case_logs = {cid: case_log(r, prefix, cid) for cid in ids}

    def revoked_archived() -> bool:
        with psycopg.connect(dsn) as pg:
            row = pg.execute("SELECT revoked_at FROM api_keys WHERE key_id = %s", (retired[4:16],)).fetchone()
        return bool(row and row[0])

    assert wait_for(revoked_archived, 30, interval=0.5)
    assert any(case_logs.values())  # the console's notification log of the dispatched cases
    due_before = dict(r.zrange(f"{prefix}:sla:due", 0, -1, withscores=True))
    sent_before = set(r.scan_iter(f"{prefix}:notify:sent:*", count=1000))
    assert due_before and sent_before  # clocks are running, notifications went out
    listing = httpx.get(f"{stack.base}/v1/cases", params={"limit": 200}, headers=bearer(ops), timeout=5).json()
    stack.stop()
    mark("stopped")
    keys_before = api_keys(r, prefix)  # after the stop: the archiver copied the last uses when it stopped
    assert all("last_used_at" in h for k, h in keys_before.items() if h["name"] == "rebuild"), keys_before

    doomed = list(r.scan_iter(f"{prefix}:*", count=1000))
    r.delete(*doomed)
    assert not list(r.scan_iter(f"{prefix}:*", count=1000))

    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "rebuild"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **stack.env},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    mark("rebuilt")
    assert "cases:" in out.stdout and "%" in out.stderr  # a report, and progress bars
    # again, in this process: idempotent, nothing new the second time
    second = rebuild_again(stack, redis.Redis.from_url(redis_url))
    assert (second.api_keys, second.timers, second.tail) == (0, 0, 0)
    mark("rebuilt twice")
    # what a user would notice besides the cases: every API key as it was (a station's
    # street, revoked stays revoked, when last used) and each case's notification log
    assert api_keys(r, prefix) == keys_before
    assert {cid: case_log(r, prefix, cid) for cid in ids} == case_logs
    stack.start()
    mark("started again")
    after = {cid: case(cid) for cid in ids}
    for cid in ids:
        assert after[cid] == before[cid], cid
    # console sessions are not restored (docs/operations.md): the old cookie asks to log in again
    with httpx.Client(base_url=stack.base, timeout=5, follow_redirects=False, cookies=session_cookie) as browser:
        again = browser.get("/console/board")
        assert again.status_code in (302, 303) and "/console/login" in again.headers["location"], again.status_code
        assert browser.post("/console/login", data={"key": ops, "next": "/console/board"}).status_code == 303
    relisted = httpx.get(f"{stack.base}/v1/cases", params={"limit": 200}, headers=bearer(ops), timeout=5).json()
    assert relisted["items"] == listing["items"]

    fresh = new_case()
    assert fresh not in ids and fresh > max(i for i in ids if i[:15] == fresh[:15])
    status_is(fresh, "dispatched")
    # a negative (nothing sent twice, no clock dropped) on a stack that runs on: a short look
    time.sleep(0.5)
    assert set(r.scan_iter(f"{prefix}:notify:sent:*", count=1000)) >= sent_before
    assert set(due_before) <= set(r.zrange(f"{prefix}:sla:due", 0, -1)) | set(r.zrange(f"{prefix}:sla:leased", 0, -1))

    # retention: finished cases leave Redis and read the same from the archive
    def open311(cid: str) -> Any:
        return httpx.get(f"{stack.base}/open311/v2/requests/{cid}.json", params={"api_key": ops}, timeout=5).json()

    open311_before = {cid: open311(cid) for cid in ids}
    with as_stack(stack), psycopg.connect(dsn) as pg:
        evicted = evict(pg, redis.Redis.from_url(redis_url), hot_days=0)
    finished = [cid for cid, s in states.items() if s in ("closed", "cancelled", "duplicate")]
    assert (evicted.evicted, evicted.changed) == (len(finished), 0)
    for cid in ids:
        assert r.exists(f"{prefix}:case:{cid}") == (cid not in finished), cid
        assert case(cid) == before[cid], cid
        assert open311(cid) == open311_before[cid], cid
    relisted = httpx.get(f"{stack.base}/v1/cases", params={"limit": 200}, headers=bearer(ops), timeout=5).json()
    assert [i for i in relisted["items"] if i["case_id"] != fresh] == listing["items"]
    mark("retention checked")
    stack.stop()
