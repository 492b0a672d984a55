"""The archiver reads the record from the `gridbus.audit` stream (real RabbitMQ, real
PostgreSQL): the offset it has written up to is stored with the rows, so a kill -9 in the
middle of a batch loses nothing and writes nothing twice, a restart resumes after the
stored offset, two replicas never both write, and what cannot be archived is
dead-lettered with its reason while the reader moves on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from services.archiver import db, offsets
from services.archiver.stream import StreamReader, Taken, refuser
from shared import deadletters, topology
from shared.amqpclient import ConfirmChannel, connection, stream_end
from shared.bus import Bus
from tests.conftest import REPO, service_ports, wait_for

pytestmark = pytest.mark.integration

TZ = ZoneInfo("Asia/Shanghai")
STREAM = topology.Q_AUDIT


def order(n: int, tag: str) -> dict[str, Any]:
    return {
        "kind": "dispatch_order",
        "message_id": f"order:{tag}:{n}",
        "case_id": f"450305-20261127-{n:06d}",
        "order_id": f"{tag}/{n}",
        "dept": "lighting",
        "street": "450305001",
        "level": 5,
        "occurred_at": "2026-11-27T09:30:00+08:00",
    }


def append(amqp_uri: str, bodies: list[bytes]) -> None:
    """Straight into the stream (default exchange), confirmed."""
    ch = ConfirmChannel(amqp_uri)
    try:
        for i in range(0, len(bodies), 500):
            ch.publish([("", STREAM, b, {"message_id": f"m{i + k}"}) for k, b in enumerate(bodies[i : i + 500])], 30)
    finally:
        ch.close()


@pytest.fixture()
def setup(vhost_factory: Any, pg_dsn: str) -> Iterator[tuple[str, str]]:
    """A vhost with the topology and an archive database, both of this test's own."""
    vhost = vhost_factory.make("stream")
    dsn = make_conninfo(pg_dsn, dbname=f"gridbus_test_{uuid.uuid4().hex[:10]}")
    db.prepare(dsn)
    topology.apply(vhost)
    try:
        yield vhost, dsn
    finally:
        vhost_factory.drop(vhost)
        db.drop_database(dsn)


def orders_in(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT order_id FROM orders")]


def stored(dsn: str) -> int | None:
    with psycopg.connect(dsn) as conn:
        return offsets.written_to(conn, STREAM)


def reader(vhost: str, dsn: str, **kw: Any) -> tuple[StreamReader, threading.Thread]:
    r = StreamReader(vhost, dsn, TZ, STREAM, refuser(Bus(vhost, service="archiver")), **kw)
    t = threading.Thread(target=r.run, daemon=True)
    t.start()
    return r, t


def test_a_crash_before_the_commit_leaves_nothing_and_the_next_reader_resumes(setup: tuple[str, str]) -> None:
    """A batch that fails before its commit (here: its dead letter cannot be published)
    leaves neither rows nor offset; the next reader writes it all, once."""
    vhost, dsn = setup
    bodies = [json.dumps(order(n, "c")).encode() for n in range(40)]
    bodies[25] = b"not json"  # the batch must publish a dead letter before it commits
    append(vhost, bodies)

    def crash(taken: Taken, reason: str) -> None:
        raise ConnectionError("the process died here")

    from services.archiver.stream import write_batch

    with psycopg.connect(dsn) as conn:
        batch = [Taken(i, i + 1, b) for i, b in enumerate(bodies)]
        with pytest.raises(ConnectionError):
            write_batch(conn, STREAM, None, batch, TZ, crash)
        assert conn.execute("SELECT count(*) FROM journal").fetchone() == (0,)
        assert offsets.written_to(conn, STREAM) is None

    r, t = reader(vhost, dsn, batch_messages=10, batch_s=0.05)
    try:
        assert wait_for(lambda: stored(dsn) == 39, 30), stored(dsn)
    finally:
        r.stop()
        t.join(10)
    assert sorted(orders_in(dsn)) == sorted(f"c/{n}" for n in range(40) if n != 25)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM journal").fetchone() == (39,)
    # a reader started on a stream written to its end is delivered nothing, and knows the end
    idle, t = reader(vhost, dsn, batch_messages=10, batch_s=0.05)
    try:
        assert wait_for(lambda: idle.stream_end() == 39, 15), (idle.state, idle.stream_end())
        assert idle.seen_to is None
    finally:
        idle.stop()
        t.join(10)


def test_unarchivable_messages_are_dead_lettered_with_their_reason_and_the_reader_moves_on(
    setup: tuple[str, str],
) -> None:
    vhost, dsn = setup
    good = [json.dumps(order(n, "u")).encode() for n in range(6)]
    no_level = order(90, "u")
    del no_level["level"]
    refused_by_db = order(91, "u")
    refused_by_db["case_id"] = "450305-\x00-nul"  # PostgreSQL takes no NUL in text: the batch, then only this one
    bodies = [good[0], b"not json", good[1], json.dumps(no_level).encode(), good[2], good[3]]
    bodies += [json.dumps(refused_by_db).encode(), good[4], good[5]]
    append(vhost, bodies)
    r, t = reader(vhost, dsn, batch_messages=100, batch_s=0.2)
    try:
        assert wait_for(lambda: stored(dsn) == len(bodies) - 1, 30), stored(dsn)
        assert r.writing()[0] and r.attached(60)[0]
    finally:
        r.stop()
        t.join(10)
    assert sorted(orders_in(dsn)) == sorted(f"u/{n}" for n in range(6))
    dead = deadletters.peek(vhost, topology.Q_AUDIT)
    reasons = {d.message_id: d.reason for d in dead}
    assert len(dead) == 3, reasons
    assert "not JSON" in reasons["m1"]
    assert "dispatch order without 'level'" in reasons["m3"]
    assert "refused by the database" in reasons["m6"]
    assert {d.kind for d in dead} == {"unarchivable"}
    assert deadletters.counts(vhost, topology.Q_AUDIT) == {"unarchivable": 3}


def test_two_replicas_never_both_write_and_the_standby_takes_over(setup: tuple[str, str]) -> None:
    vhost, dsn = setup
    append(vhost, [json.dumps(order(n, "a")).encode() for n in range(300)])
    first, t1 = reader(vhost, dsn, batch_messages=50, batch_s=0.05)
    assert wait_for(lambda: stored(dsn) == 299, 30), stored(dsn)
    second, t2 = reader(vhost, dsn, batch_messages=50, batch_s=0.05)
    try:
        assert wait_for(lambda: second.state == "standby", 15), second.state
        assert first.state == "consuming"
        assert wait_for(lambda: first.stream_end() == 299, 10)  # the writer knows the end (ARCHIVE_BACKLOG 0)…
        assert second.stream_end() is None  # …a standby asks the stream
        assert second.attached(60)[0] and second.writing()[0]  # a standby is healthy
        append(vhost, [json.dumps(order(n, "b")).encode() for n in range(300)])
        assert wait_for(lambda: stored(dsn) == 599, 30), stored(dsn)
        assert second.state == "standby" and second.written_to is None  # it never wrote
        first.stop()
        t1.join(10)
        assert wait_for(lambda: second.state == "consuming", 15), second.state
        append(vhost, [json.dumps(order(n, "c")).encode() for n in range(100)])
        assert wait_for(lambda: stored(dsn) == 699, 30), stored(dsn)
    finally:
        first.stop()
        second.stop()
        t2.join(10)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT message_id) FROM journal").fetchone() == (700, 700)
    with connection(vhost) as conn:
        assert stream_end(conn, STREAM) == 699


def _archived(port: int) -> dict[str, float]:
    """gridbus_archived_total of a running archiver, by outcome."""
    out: dict[str, float] = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith("gridbus_archived_total{"):
            outcome = line.split('outcome="')[1].split('"')[0]
            out[outcome] = out.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


@pytest.mark.timeout(300)
def test_kill_9_mid_batch_loses_nothing_and_the_restart_writes_nothing_twice(
    setup: tuple[str, str], redis_url: str, tmp_path: Path
) -> None:
    """The archiver as a real process, killed with SIGKILL while it writes a backlog in
    batches; the restarted one resumes after the stored offset: every message archived,
    the journal without a repeat, and the restarted process never met a message it had
    already written (its `repeat` count stays 0: it started exactly after the commit)."""
    vhost, dsn = setup
    n = 6000
    append(vhost, [json.dumps(order(i, "k")).encode() for i in range(n)])
    ports = service_ports()
    env = {
        **os.environ,
        **ports,
        "AMQP_URI": vhost,
        "DATABASE_URL": dsn,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": f"arc{uuid.uuid4().hex[:8]}",
        "ARCHIVER_BATCH_MESSAGES": "200",
        "LOG_FORMAT": "json",
    }
    port = int(ports["ARCHIVER_METRICS_PORT"])
    log = (tmp_path / "archiver.log").open("w")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "services.serve", "archiver"], cwd=REPO, env=env, stdout=log, stderr=log
        )

    kills = 0
    proc = start()
    try:
        for at in (1500, 3500):  # two kills, each once the backlog is being written past `at`
            assert wait_for(lambda a=at: (stored(dsn) or -1) >= a, 120), stored(dsn)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            assert (stored(dsn) or 0) < n - 1, "the backlog was written before the kill"
            proc = start()
        assert wait_for(lambda: stored(dsn) == n - 1, 120), stored(dsn)
        counts = wait_for(lambda: _archived(port) if _port_up(port) else {}, 30)
        assert counts.get("repeat", 0.0) == 0.0, counts
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    assert kills == 2
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT message_id) FROM journal").fetchone() == (n, n)
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (n,)


def _port_up(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
        return True
    except httpx.HTTPError:
        return False


def test_applying_the_topology_retires_the_archivers_old_queue_but_keeps_unread_dead_letters(
    vhost_factory: Any,
) -> None:
    """`archiver.record` (bound like the stream, read by nobody now) would grow for ever:
    declaring the topology deletes it; its dead letters stay until someone looked at them."""
    from shared.amqpclient import channel, message, queue_info

    vhost = vhost_factory.make("retire")
    try:
        with connection(vhost) as conn:
            ch = channel(conn)
            for name in ("archiver.record", "archiver.record.dead"):
                ch.queue_declare(name, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
            ch.basic_publish(message(b"{}"), exchange="", routing_key="archiver.record")
            ch.basic_publish(message(b"{}"), exchange="", routing_key="archiver.record.dead")
        topology.apply(vhost)
        with connection(vhost) as conn:
            assert queue_info(conn, "archiver.record") is None
            assert wait_for(lambda: (queue_info(conn, "archiver.record.dead") or (0,))[0] == 1, 10)
            assert queue_info(conn, topology.dead_queue(topology.Q_AUDIT)) is not None
        with connection(vhost) as conn:  # emptied, it goes at the next declaration
            channel(conn).queue_purge("archiver.record.dead")
        topology.apply(vhost)
        with connection(vhost) as conn:
            assert queue_info(conn, "archiver.record.dead") is None
    finally:
        vhost_factory.drop(vhost)
