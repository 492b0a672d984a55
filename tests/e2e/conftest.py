"""The real stack for end-to-end tests: the four services as processes on a fresh
vhost and Redis key prefix, with a webhook sink that verifies signatures (and doubles as
an SMS provider that refuses every message). One stack
serves the whole session (starting it takes a few seconds)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
import uuid
from typing import Any, Iterator

import pytest
import redis
from psycopg.conninfo import make_conninfo

from services.archiver import db
from services.demo import wait_until_ready
from services.intake.auth import Role, create_key
from services.notifier.signing import verify
from services.runner import start_all, stop_all
from shared.amqpclient import body_bytes, channel, close_quietly, connect, props
from shared.config import Settings, reset_settings
from tests.conftest import Vhosts, copy_config, free_port, service_ports, wait_for  # noqa: F401 (e2e tests import it here)
from tests.localhttp import LocalHTTP, Reply, Request

SECRET = "e2e-secret"
TEST_SLA = """
defaults:
  ack: 3s
  urgent_ack: 3s
  handle: 1h
  warn_fraction: 0.5
  ladder: [1h]
  repeat: 0
policies:
  # the routes give 06010 (暴露垃圾) in the pilot patches `cleaning` at level 5:
  # second-long steps so that an escalation climbs all five levels within a test
  cleaning:
    handle: 1h
    ladder: [2s, 2s, 2s, 2s]
    repeat: 0
    escalate_until: resolved
"""


class Sink:
    """A local webhook receiver that checks every signature like a department would."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.sms: list[dict[str, Any]] = []
        self.http = LocalHTTP(self._answer).start()
        self.port = self.http.server.server_address[1]

    def _answer(self, request: Request) -> Reply:
        if request.path.startswith("/sms"):  # an SMS provider that refuses every message (a 4xx: for good)
            self.sms.append(request.json())
            return 400, {}, b""
        ok = verify(SECRET, request.headers, request.body, time.time())
        self.received.append({"path": request.path, "valid": ok, "headers": request.headers, "body": request.json()})
        return (204 if ok else 401), {}, b""

    def close(self) -> None:
        self.http.stop()


def stack_key(env: dict[str, str], role: Role, dept: str | None = None, street: str | None = None) -> str:
    """An API key the stack's intake accepts (created under the stack's Redis prefix)."""
    client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    try:
        return create_key(client, role, dept, name="e2e", prefix=env["REDIS_KEY_PREFIX"], street=street)[0]
    finally:
        client.close()


@pytest.fixture(scope="package")
def stack(
    vhost_factory: Vhosts, redis_url: str, pg_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    with running_stack(vhost_factory, redis_url, tmp_path_factory, pg_dsn=pg_dsn) as running:
        yield running


@contextlib.contextmanager
def running_stack(
    vhost_factory: Vhosts,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    tag: str = "e2e",
    sms: bool = True,
    pg_dsn: str | None = None,
) -> Iterator[dict[str, Any]]:
    """The services on a fresh vhost and Redis key prefix, with the webhook sink (and, with
    `sms`, the sink as an SMS provider that refuses every message); the archive in `pg_dsn`,
    else in a database of its own, dropped at the end."""
    own_db = None
    if pg_dsn is None:
        base = os.environ.get("DATABASE_URL", "postgresql://root@127.0.0.1:5432/postgres")
        own_db = pg_dsn = make_conninfo(base, dbname=f"gridbus_test_{uuid.uuid4().hex[:10]}")
        db.prepare(own_db)
    vhost = vhost_factory.make(tag)
    config_dir = copy_config(tmp_path_factory.mktemp("config"))
    (config_dir / "sla.yaml").write_text(TEST_SLA, encoding="utf-8")
    sink = Sink()
    env = {
        "AMQP_URI": vhost,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": f"{tag}{uuid.uuid4().hex[:8]}",
        "CONFIG_DIR": str(config_dir),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        **service_ports(),
        "DATABASE_URL": pg_dsn,
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_URL_TEMPLATE": f"http://127.0.0.1:{sink.port}/hooks/{{dept}}",
        "GRIDBUS_SMS_URL": f"http://127.0.0.1:{sink.port}/sms" if sms else "",
    }
    settings = Settings(**{k.lower(): v for k, v in env.items()})
    log_path = config_dir / "services.log"
    log_file = open(log_path, "w")
    procs = start_all(env=env, stdout=log_file)
    try:
        wait_until_ready(settings, procs, timeout=60)
        # a busy broker accepts slowly; the tests poll this connection only now and then (a
        # browser test runs for a minute meanwhile): without heartbeats (connect's default)
        # the broker does not drop it as dead
        conn = connect(vhost, attempts=5, retry_delay=2)
        grid_app = stack_key(env, Role.grid_app)
        yield {
            "settings": settings,
            "sink": sink,
            "channel": channel(conn),
            "env": env,
            "base": f"http://127.0.0.1:{settings.intake_http_port}",
            "log": log_path,
            "auth": {"Authorization": f"Bearer {grid_app}"},
        }
        close_quietly(conn)
    finally:
        stop_all(procs)
        log_file.close()
        sink.close()
        print(log_path.read_text()[-5000:])
        vhost_factory.drop(vhost)
        if own_db is not None:
            db.drop_database(own_db)


_SLOTS = itertools.count()


def spread_location(grid: str = "450305001001001") -> dict[str, Any]:
    """A location ~120 m from every other one handed out, inside the district, so that
    test reports are not near-duplicates of each other (intake links reports of the same
    category within tens of metres); the grid code pins the patch."""
    n = next(_SLOTS)
    return {
        "lat": round(25.2000 + (n // 40) * 0.0012, 6),
        "lon": round(110.3500 + (n % 40) * 0.0012, 6),
        "address": "七星区辰山路",
        "grid": grid,
    }


def report(**over: Any) -> dict[str, Any]:
    body = {
        "report_id": f"e2e-{uuid.uuid4().hex[:10]}",
        "category": "01037",
        "description": "穿山路连续三盏路灯不亮",
        "severity": "normal",
        "filing_condition": "连续3盏以上不亮",
        "location": spread_location(),
        "reporter": {"id": "w-1024", "role": "grid_officer", "name": "黄", "phone": "13800001024"},
        "observed_at": "2026-11-27T09:30:00+08:00",
    }
    body.update(over)
    return body


_SEEN: dict[tuple[str, str], list[dict[str, Any]]] = {}


def get_from_queue(channel: Any, queue: str, case_id: str, timeout: float) -> dict[str, Any] | None:
    """The next message for `case_id` on `queue`. Messages of other cases are taken off
    the queue too and kept here for whichever test asks for them (a requeued message
    would come back first and hide everything behind it)."""

    def poll() -> dict[str, Any] | None:
        waiting = _SEEN.get((queue, case_id))
        if waiting:
            return waiting.pop(0)
        got = channel.basic_get(queue, no_ack=True)
        if got is None:
            return None
        msg = json.loads(body_bytes(got))
        _SEEN.setdefault((queue, msg.get("case_id", "")), []).append({"body": msg, "props": props(got)})
        return None

    return wait_for(poll, timeout, interval=0.01)


@pytest.fixture()
def stack_redis(stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    """A Redis client, with this process's settings pointing at the stack's key prefix
    (to create API keys the running services will accept)."""
    monkeypatch.setenv("REDIS_KEY_PREFIX", stack["env"]["REDIS_KEY_PREFIX"])
    reset_settings()
    client = redis.Redis.from_url(stack["env"]["REDIS_URL"], decode_responses=True)
    yield client
    client.close()
    reset_settings()
