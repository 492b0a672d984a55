"""One fault run: private RabbitMQ node and Redis (AOF), the services supervised (the
archiver on a PostgreSQL database of the run's own, created on the server of DATABASE_URL
and dropped at the end), bounded HTTP load, faults injected on a schedule, then the checks
of bench/chaos/checks.py.

    with ChaosRun(Scenario(reports=3000, rate=25, faults=default_faults(...))) as run:
        result = run.execute()

Everything it starts (servers, services, epmd) is stopped when the block ends, whatever
happened inside it; an `atexit` hook does the same if the interpreter exits first.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import redis
from psycopg.conninfo import make_conninfo

from bench.chaos import checks
from bench.chaos.load import HttpLoad
from bench.chaos.nodes import NodeError, RabbitNode, RedisNode, release_all
from bench.chaos.stack import SERVICE_QUEUES, SERVICES, Stack, WebhookSink, service_env
from bench.common import REPO, bench_config_dir, envelope
from shared import deadletters

TARGETS = (*SERVICES, "broker", "redis")


@dataclass
class Fault:
    at_s: float  # seconds after the load started
    target: str  # a service name, "broker" or "redis"
    restart_after_s: float = 2.5


@dataclass
class Scenario:
    reports: int = 3000
    rate: float = 25.0
    faults: list[Fault] = field(default_factory=list)
    drain_s: float = 120.0  # longest wait after the load for the system to settle
    recover_s: float = 90.0  # longest wait for a killed piece to be healthy again
    archive_s: float = 120.0  # longest wait after the drain for the archive to hold every case and order
    workers: int = 48  # HTTP connections of the load
    give_up_s: float = 300.0  # a report not accepted after this long is given up
    seed: int = 0
    log_level: str = "WARNING"


def default_faults(
    targets: tuple[str, ...] = TARGETS, first_s: float = 8.0, spacing_s: float = 15.0, seed: int = 0
) -> list[Fault]:
    """Each target once, `spacing_s` apart, restarted 2–3 s after its kill."""
    rnd = random.Random(seed)
    return [Fault(first_s + i * spacing_s, t, round(rnd.uniform(2.0, 3.0), 2)) for i, t in enumerate(targets)]


#: the queues the run's services consume (a queue of the topology no service of the stack
#: reads, such as the bridge's, would only fill)
_STACK_QUEUES = frozenset(q for qs in SERVICE_QUEUES.values() for q in qs)


def _work_queue(name: str) -> bool:
    return name in _STACK_QUEUES


class ChaosRun:
    def __init__(
        self, scenario: Scenario, echo: Callable[[str], None] = print, keep: bool = False, workdir: Path | None = None
    ) -> None:
        self.s = scenario
        self.echo = echo
        self.keep = keep
        self.own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="gridbus-chaos-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.dir / "servers.log", "ab")
        self.services_log = open(self.dir / "services.log", "ab")
        self.node = RabbitNode(self.dir / "rabbit", log=self.log)
        self.redis = RedisNode(self.dir / "redis", log=self.log)
        self.sink: WebhookSink | None = None
        self.stack: Stack | None = None
        self.load: HttpLoad | None = None
        self.prefix = f"chaos{uuid.uuid4().hex[:6]}"
        self.database_url = make_conninfo(
            os.environ.get("DATABASE_URL", "postgresql://root@127.0.0.1:5432/postgres"), dbname=f"gridbus_{self.prefix}"
        )
        self._database = False
        self.timeline: list[dict[str, Any]] = []
        self.unhealthy: list[dict[str, Any]] = []
        self.t0 = 0.0
        self._closed = False
        self.failed = False
        atexit.register(self.close)

    # ------------------------------------------------------------------ set-up / tear-down
    def __enter__(self) -> "ChaosRun":
        try:
            self.setup()
        except BaseException:
            self.failed = True
            self.close()
            raise
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None:
            self.failed = True
        self.close()

    # ------------------------------------------------------------------ the servers
    # (bench/chaos/cluster.py overrides these for a 3-node cluster and Redis with Sentinel)
    targets: tuple[str, ...] = TARGETS

    @property
    def amqp_uri(self) -> str:
        return self.node.amqp_uri

    @property
    def mgmt_url(self) -> str:
        return self.node.mgmt_url

    def mgmt(self) -> httpx.Client:
        return self.node.api()

    def redis_env(self) -> dict[str, str]:
        return {"REDIS_URL": self.redis.url, "REDIS_SENTINELS": ""}

    def redis_client(self, decode_responses: bool = True) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url, decode_responses=decode_responses)

    def start_servers(self) -> str:
        taken: set[int] = set()
        self.node.prepare(taken)
        self.redis.prepare(taken)
        errors: list[BaseException] = []

        def start_node() -> None:
            try:
                self.node.start()
            except BaseException as exc:  # reported below
                errors.append(exc)

        th = threading.Thread(target=start_node, daemon=True)
        th.start()
        self.redis.start()
        th.join()
        if errors:
            raise errors[0]
        return (
            f"rabbitmq {self.node.nodename} amqp :{self.node.amqp_port} mgmt :{self.node.mgmt_port}, "
            f"redis :{self.redis.port} (AOF)"
        )

    def stop_servers(self) -> None:
        self.node.stop()
        self.redis.stop()

    def inject_server(self, fault: Fault) -> tuple[str, ...]:
        """kill -9 of a server, started again after the fault's delay; the services that
        must be healthy again afterwards."""
        if fault.target == "broker":
            self.node.kill()
            self._note(fault="kill -9 rabbitmq node")
            time.sleep(fault.restart_after_s)
            took = self.node.start(timeout=self.s.recover_s)
            self._note(restarted="rabbitmq", accepting_after_s=round(took, 1))
        elif fault.target == "redis":
            self.redis.kill()
            self._note(fault="kill -9 redis")
            time.sleep(fault.restart_after_s)
            took = self.redis.start(timeout=self.s.recover_s)
            self._note(restarted="redis", ready_after_s=round(took, 1))
        else:
            raise ValueError(f"unknown fault target {fault.target!r} (one of {', '.join(self.targets)})")
        return SERVICES

    # ------------------------------------------------------------------ set-up / tear-down
    def setup(self) -> None:
        t = time.monotonic()
        what = self.start_servers()
        self.echo(f"servers up in {time.monotonic() - t:.1f} s: {what}")
        self.sink = WebhookSink()
        from services.archiver import db

        self._database = True  # dropped by close() from here on, whatever happens next
        db.prepare(self.database_url)
        config_dir = bench_config_dir(REPO / "config", self.dir / "config")
        self.env = service_env(
            self.amqp_uri,
            self.mgmt_url,
            self.redis_env(),
            self.prefix,
            config_dir,
            self.sink.port,
            self.s.log_level,
            database_url=self.database_url,
        )
        from services.intake.auth import Role, create_key

        client = self.redis_client()
        try:
            self.api_key = create_key(client, Role.grid_app, name="chaos", prefix=self.prefix)[0]
        finally:
            client.close()
        self.stack = Stack(self.env, self.services_log, self.mgmt)
        t = time.monotonic()
        self.stack.start()
        bad = self.stack.wait_healthy(120)
        if bad:
            raise NodeError(f"services not healthy at start: {bad} (logs: {self.dir})")
        self.echo(f"services up in {time.monotonic() - t:.1f} s")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.load is not None:
            self.load.stop()
        if self.stack is not None:
            self.stack.stop()
        self.stop_servers()
        release_all()  # the ports are free for the next run only now that nothing of ours holds them
        if self.sink is not None:
            self.sink.close()
        if self._database:
            from services.archiver import db

            try:
                db.drop_database(self.database_url)
            except Exception as exc:  # the run's result stands; the database is named in the echo
                self.echo(f"could not drop the run's database ({self.database_url}): {exc}")
        self.log.close()
        self.services_log.close()
        for sub in ("rabbit/mnesia", "redis"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        if self.own_dir and not (self.keep or self.failed):
            shutil.rmtree(self.dir, ignore_errors=True)
        atexit.unregister(self.close)

    # ------------------------------------------------------------------ faults
    def _note(self, **what: Any) -> None:
        what["t"] = round(time.monotonic() - self.t0, 2)
        self.timeline.append(what)
        self.echo("  " + json.dumps(what, ensure_ascii=False))

    def inject(self, fault: Fault) -> None:
        assert self.stack is not None
        if fault.target in SERVICES:
            pid = self.stack.kill(fault.target, fault.restart_after_s)
            self._note(fault=f"kill -9 {fault.target}", pid=pid)
            time.sleep(fault.restart_after_s)
            names: tuple[str, ...] = (fault.target,)
        else:
            names = self.inject_server(fault)
        t = time.monotonic()
        bad = self.stack.wait_healthy(self.s.recover_s, names)
        self._note(healthy_after=fault.target, seconds=round(time.monotonic() - t, 1), still_unhealthy=bad)
        if bad:
            self.unhealthy.append({"fault": fault.target, "unhealthy": bad})

    def _faults(self) -> None:
        """Each fault at its time, in a thread of its own: a slow recovery (a broker takes
        12-15 s) does not push the next fault out of the load window."""
        threads = []
        for fault in sorted(self.s.faults, key=lambda f: f.at_s):
            delay = self.t0 + fault.at_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if self._closed:
                break
            th = threading.Thread(target=self._inject_noting, args=(fault,), daemon=True, name=f"fault-{fault.target}")
            th.start()
            threads.append(th)
        for th in threads:
            th.join()

    def _inject_noting(self, fault: Fault) -> None:
        try:
            self.inject(fault)
        except NodeError as exc:
            self._note(error=str(exc))
            self.unhealthy.append({"fault": fault.target, "error": str(exc)})

    # ------------------------------------------------------------------ the run
    def queue_depths(self) -> dict[str, int]:
        with self.mgmt() as api:
            rows = api.get("/api/queues/%2F", params={"columns": "name,messages"}).json()
        return {r["name"]: int(r.get("messages") or 0) for r in rows}

    def _queue_detail(self, queues: list[str]) -> dict[str, Any]:
        """What the broker says of a queue that does not drain: ready vs unacked, consumers
        (and on which channel/node), the quorum leader and members."""
        out: dict[str, Any] = {}
        cols = "messages_ready,messages_unacknowledged,consumers,leader,members,online,node,consumer_details"
        try:
            with self.mgmt() as api:
                for q in queues:
                    info = api.get(f"/api/queues/%2F/{q}", params={"columns": cols}).json()
                    info["consumer_details"] = [
                        {
                            "channel": (c.get("channel_details") or {}).get("name"),
                            "ack_required": c.get("ack_required"),
                            "prefetch": c.get("prefetch_count"),
                            "active": c.get("active"),
                        }
                        for c in info.get("consumer_details") or []
                    ]
                    out[q] = info
        except (httpx.HTTPError, ValueError) as exc:
            out["error"] = repr(exc)
        return out

    def _registered_left(self, client: redis.Redis) -> int:
        assert self.load is not None
        ids = sorted({r.case_id for r in self.load.results if r.case_id})
        docs = checks.case_docs(client, self.prefix, ids)
        return sum(1 for d in docs.values() if d is None or d.get("status") == "registered")

    def drain(self, every_s: float = 1.0) -> float:
        """Wait until no work queue holds a message and no accepted case is `registered`
        (twice in a row, `every_s` apart), or `drain_s`. Seconds waited; what was waited
        for (each queue's last second with messages, the last second a case was
        `registered`) goes into `self.drain_waited`."""
        t = time.monotonic()
        client = self.redis_client()
        calm = 0
        self.drain_waited: dict[str, float] = {}
        try:
            while time.monotonic() - t < self.s.drain_s:
                try:
                    depths = {q: n for q, n in self.queue_depths().items() if _work_queue(q)}
                    busy = sum(depths.values())
                    left = self._registered_left(client)
                except (httpx.HTTPError, redis.RedisError, ValueError):
                    depths, busy, left = {}, -1, -1
                now = round(time.monotonic() - t, 1)
                for q, n in depths.items():
                    if n:
                        self.drain_waited[q] = now
                if left:
                    self.drain_waited["registered cases"] = now
                calm = calm + 1 if busy == 0 and left == 0 else 0
                if calm >= 2:
                    break
                time.sleep(every_s)
        finally:
            client.close()
        return time.monotonic() - t

    def archived(self, case_ids: list[str], orders: list[checks.Order]) -> tuple[list[str], float]:
        """What is not in the archive, waiting (up to `archive_s`) while the archiver still
        works off the stream: the drain may end before it has written the stream to its end."""
        t = time.monotonic()
        while True:
            try:
                missing = checks.archive_missing(self.database_url, case_ids, orders)
            except Exception as exc:  # an unreachable archive is a finding, not a crash of the run
                missing = [f"archive unreadable: {type(exc).__name__}: {exc}"]
            if not missing or time.monotonic() - t > self.s.archive_s:
                return missing, time.monotonic() - t
            time.sleep(3.0)

    def execute(self) -> dict[str, Any]:
        assert self.stack is not None
        s = self.s
        self.unhealthy = []
        self.load = HttpLoad(
            f"http://127.0.0.1:{self.env['INTAKE_HTTP_PORT']}",
            self.api_key,
            s.reports,
            s.rate,
            run_tag=self.prefix,
            workers=s.workers,
            give_up_s=s.give_up_s,
        )
        self.echo(
            f"load: {s.reports} reports at {s.rate:g}/s; faults: "
            + ", ".join(f"{f.target}@{f.at_s:g}s" for f in s.faults)
        )
        self.t0 = time.monotonic()
        self.load.start()
        faults = threading.Thread(target=self._faults, daemon=True, name="chaos-faults")
        faults.start()
        faults.join()
        self.load.join(s.give_up_s + s.reports / s.rate + 60)
        load_s = time.monotonic() - self.t0
        self._note(load_done=True, accepted=sum(1 for r in self.load.results if r.case_ids))
        drained = self.drain()
        self._note(drained_after_s=round(drained, 1), busy_until_s=self.drain_waited)
        still = self.stack.wait_healthy(30)
        if still:
            self.unhealthy.append({"fault": "end of run", "unhealthy": still})
        depths = self.queue_depths()
        stalled: dict[str, int] = {}
        if any(n for q, n in depths.items() if _work_queue(q)):
            # a backlog still shrinking is a slow consumer; one that does not move is a stopped one
            time.sleep(6.0)
            later = self.queue_depths()
            stalled = {q: n for q, n in later.items() if _work_queue(q) and n and n >= depths.get(q, 0)}
            depths = later
            self.stalled_detail = self._queue_detail(sorted(stalled))
        dept_queues = sorted(q for q in depths if q.startswith("dept.") and not q.endswith(".dead"))
        orders = checks.drain_orders(self.amqp_uri, dept_queues)
        dead = {q: deadletters.peek(self.amqp_uri, q) for q, n in depths.items() if q.endswith(".dead") and n > 0}
        accepted = {r.report_id: r.case_ids for r in self.load.results if r.case_ids}
        rt = self.redis_client()
        rb = self.redis_client(decode_responses=False)
        try:
            findings = checks.evaluate(accepted, orders, rt, rb, self.prefix, dead)
        finally:
            rt.close()
            rb.close()
        findings.archive_missing, archived_s = self.archived([ids[0] for ids in accepted.values() if ids], orders)
        self._note(archive_checked_after_s=round(archived_s, 1), archive_missing=len(findings.archive_missing))
        load = self.load.summary()
        result = envelope("chaos", {**asdict(s), "faults": [asdict(f) for f in s.faults]})
        result.update(
            {
                "table": {
                    **findings.table(),
                    "http_5xx": load["http_5xx"],
                    "http_500": load["http_500"],
                    "unhealthy": len(self.unhealthy),
                    "not_accepted": s.reports - load["accepted"],
                    "backlog_left": sum(n for q, n in depths.items() if _work_queue(q)),
                    "stalled_queues": len(stalled),
                },
                "ok": (
                    findings.ok()
                    and not self.unhealthy
                    and load["accepted"] == s.reports
                    and not load["http_500"]
                    and not stalled
                ),
                "stalled": stalled,
                "stalled_detail": getattr(self, "stalled_detail", {}),
                "notifications_received": self.sink.hits if self.sink else 0,
                "findings": findings.to_dict(),
                "load": load,
                "unhealthy": self.unhealthy,
                "timeline": self.timeline,
                "services": self.stack.summary(),
                "work_queues_left": {q: n for q, n in depths.items() if _work_queue(q) and n},
                "seconds": {"load": round(load_s, 1), "drain": round(drained, 1), "archive": round(archived_s, 1)},
                "workdir": str(self.dir),
            }
        )
        if not result["ok"]:
            self.failed = True  # keep the logs
        return result


TABLE_COLUMNS = (
    "accepted",
    "dispatched",
    "lost",
    "stuck",
    "missing_clocks",
    "double_dispatch",
    "dead_transient",
    "archive_missing",
    "http_5xx",
    "http_500",
    "unhealthy",
    "backlog_left",
    "stalled_queues",
)


def table_row(result: dict[str, Any], label: str = "") -> str:
    t = result["table"]
    return "| " + " | ".join([label or "run", *(str(t.get(c, "")) for c in TABLE_COLUMNS)]) + " |"


def table_head() -> str:
    return "| run | " + " | ".join(TABLE_COLUMNS) + " |\n|" + "---|" * (len(TABLE_COLUMNS) + 1)
