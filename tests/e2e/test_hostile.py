"""Hostile and careless clients against the real intake (issue 11): intake and router as
processes on a vhost and key prefix of their own, real RabbitMQ and Redis.

- table tests: every bad input of the issue gets its 4xx naming the field, never a 500;
- slow clients: many half-sent requests stop neither /healthz, nor other requests, nor
  the dispatch of a report sent over HTTP or AMQP (within 2 s);
- 503 with Retry-After, never 202, when Redis is down (a Redis of this test's own);
- logs: PII pushed through every rejection path is found in no log line of any library;
- schemathesis against /openapi.json with a key of every role: no 5xx, no answer outside
  the schema, no schema-valid request refused, no role served an operation not its own.
  `FUZZ_EXAMPLES` (default 10 per operation, deterministic) makes the run longer:
  `FUZZ_EXAMPLES=200 pytest tests/e2e/test_hostile.py -k fuzz -s` prints the counts.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import redis
import schemathesis
from psycopg.conninfo import make_conninfo
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from services.archiver import db
from services.demo import wait_until_ready
from services.intake.auth import Role, create_key
from services.intake.openapi import document
from services.intake.queries import Position
from services.runner import start_all, stop_all
from shared import topology
from shared.amqpclient import channel, close_quietly, connect, message
from shared.config import Settings
from tests.bad_input import BAD_REPORT_FIELDS, PHONE, with_field
from tests.conftest import Vhosts, copy_config, free_port, service_ports, wait_for
from tests.e2e.conftest import report

pytestmark = pytest.mark.e2e

READ_TIMEOUT = 2.0
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
FUZZ_ROLES = ("grid_app", "department", "ops", "open311")
COUNTS: Counter[str] = Counter()


def _key(env: dict[str, str], role: Role, **kw: Any) -> str:
    client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    try:
        return create_key(client, role, name="hostile", prefix=env["REDIS_KEY_PREFIX"], **kw)[0]
    finally:
        client.close()


def _env(amqp: str, redis_url: str, config_dir: Path, **more: str) -> dict[str, str]:
    return {
        "AMQP_URI": amqp,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": f"hostile{uuid.uuid4().hex[:8]}",
        "CONFIG_DIR": str(config_dir),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        **service_ports(),
        "HTTP_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
        # the fuzzing roles must not be slowed by their limits; the station's is tested
        "RATE_LIMIT_GRID_APP": "2000/5000",
        "RATE_LIMIT_DEPARTMENT": "2000/5000",
        "RATE_LIMIT_OPS": "2000/5000",
        "RATE_LIMIT_OPEN311": "2000/5000",
        "RATE_LIMIT_STATION": "1/2",
        **more,
    }


@pytest.fixture(scope="module")
def archive_dsn() -> Iterator[str]:
    """intake reads cases that left Redis from the archive: a database of this module's own."""
    base = os.environ.get("DATABASE_URL", "postgresql://root@127.0.0.1:5432/postgres")
    dsn = make_conninfo(base, dbname=f"gridbus_test_{uuid.uuid4().hex[:10]}")
    db.prepare(dsn)
    yield dsn
    db.drop_database(dsn)


@pytest.fixture(scope="module")
def hostile(
    vhost_factory: Vhosts, redis_url: str, archive_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    vhost = vhost_factory.make("hostile")
    config_dir = copy_config(tmp_path_factory.mktemp("hostile-config"))
    env = _env(vhost, redis_url, config_dir, DATABASE_URL=archive_dsn)
    settings = Settings(**{k.lower(): v for k, v in env.items()})
    log_path = config_dir / "services.log"
    log_file = open(log_path, "w")
    procs = start_all(("intake", "router"), env=env, stdout=log_file)
    try:
        wait_until_ready(settings, procs, timeout=60, services=("intake", "router"))
        keys = {
            "grid_app": _key(env, Role.grid_app),
            "department": _key(env, Role.department, dept="lighting"),
            "ops": _key(env, Role.ops),
            "open311": _key(env, Role.open311),
            "gas": _key(env, Role.department, dept="gas"),
            "station": _key(env, Role.station, street="450305001"),
        }
        conn = connect(vhost, attempts=5, retry_delay=2)
        yield {
            "settings": settings,
            "env": env,
            "keys": keys,
            "log": log_path,
            "channel": channel(conn),
            "base": f"http://127.0.0.1:{settings.intake_http_port}",
            "redis": redis.Redis.from_url(redis_url, decode_responses=True),
        }
        close_quietly(conn)  # idle through a long fuzzing run: the broker may have closed it
    finally:
        stop_all(procs)
        log_file.close()
        print(log_path.read_text()[-3000:])
        vhost_factory.drop(vhost)


def bearer(key: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **more}


def _case_of(h: dict[str, Any], report_id: str) -> str | None:
    return h["redis"].get(f"{h['env']['REDIS_KEY_PREFIX']}:report:{report_id}")


def _status(h: dict[str, Any], case_id: str) -> str | None:
    r = httpx.get(f"{h['base']}/v1/cases/{case_id}", headers=bearer(h["keys"]["ops"]), timeout=5)
    return r.json()["status"] if r.status_code == 200 else None


def _dispatched(h: dict[str, Any], case_id: str, timeout: float) -> bool:
    return wait_for(lambda: _status(h, case_id) == "dispatched", timeout, interval=0.05) is True


# ------------------------------------------------------------------------------ tables
def _report(**over: Any) -> dict[str, Any]:
    return report(**over)


def _with(path: str, value: Any) -> dict[str, Any]:
    return with_field(_report(), path, value)


BAD_REPORTS = [
    # (what, body, field named in the answer): the rules of tests/bad_input.py over HTTP, and
    # what only the running intake knows (the category catalogue, the district's outline)
    *((what, _with(path, value), field) for what, path, value, field in BAD_REPORT_FIELDS),
    ("unknown category", _with("category", "00000"), "category"),
    ("outside the district", _with("location", {"lat": 39.9, "lon": 116.4}), "location"),
]


@pytest.mark.parametrize("what, body, field", BAD_REPORTS, ids=[b[0] for b in BAD_REPORTS])
def test_bad_report_is_422_naming_the_field(
    hostile: dict[str, Any], what: str, body: dict[str, Any], field: str
) -> None:
    r = httpx.post(f"{hostile['base']}/v1/reports", json=body, headers=bearer(hostile["keys"]["grid_app"]), timeout=5)
    assert r.status_code == 422, (what, r.status_code, r.text)
    fields = [e["field"] for e in r.json()["errors"]]
    assert any(f == field or f.startswith(field) for f in fields), (what, fields)


def _chunks(data: bytes, size: int = 100) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_chunked_bodies_are_read(hostile: dict[str, Any]) -> None:
    base, keys = hostile["base"], hostile["keys"]
    body = _report()
    r = httpx.post(
        f"{base}/v1/reports",
        content=_chunks(json.dumps(body).encode()),
        timeout=5,
        headers=bearer(keys["grid_app"], **{"Content-Type": "application/json"}),
    )
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 202, r.text
    # a chunked reply is read too: an unknown case, so 404 (an unread body would be 422 "empty")
    reply = json.dumps({"reply_id": "r1", "action": "acknowledge"}).encode()
    r = httpx.post(
        f"{base}/v1/cases/450305-20000101-999999/replies",
        content=_chunks(reply, 7),
        timeout=5,
        headers=bearer(keys["department"], **{"Content-Type": "application/json"}),
    )
    assert r.status_code == 404, r.text
    big = b'{"x": "' + b"a" * (1 << 20) + b'"}'
    for content in (_chunks(big, 65536), big):  # 1 MB chunked or with a Content-Length: 413 both
        r = httpx.post(
            f"{base}/v1/reports",
            content=content,
            timeout=10,
            headers=bearer(keys["grid_app"], **{"Content-Type": "application/json"}),
        )
        assert r.status_code == 413, r.text


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"])
def test_json_bodies_need_their_content_type(hostile: dict[str, Any], content_type: str | None) -> None:
    headers = bearer(hostile["keys"]["grid_app"])
    if content_type:
        headers["Content-Type"] = content_type
    r = httpx.post(f"{hostile['base']}/v1/reports", content=json.dumps(_report()).encode(), headers=headers, timeout=5)
    assert r.status_code == 415 and r.json()["errors"][0]["field"] == "Content-Type"


@pytest.mark.parametrize("key", ["x" * 7000, "has space", "semi;colon", "ünï", ""])
def test_bad_idempotency_key_is_422(hostile: dict[str, Any], key: str) -> None:
    headers = {k.encode(): v.encode() for k, v in bearer(hostile["keys"]["grid_app"]).items()}
    headers[b"Idempotency-Key"] = key.encode("utf-8")  # raw bytes: httpx sends only ASCII str headers
    r = httpx.post(f"{hostile['base']}/v1/reports", json=_report(), timeout=5, headers=headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Idempotency-Key"


def test_idempotency_key_is_scoped_to_the_api_key(hostile: dict[str, Any]) -> None:
    base, keys = hostile["base"], hostile["keys"]
    key = f"k-{uuid.uuid4().hex[:8]}"
    first = httpx.post(
        f"{base}/v1/reports", json=_report(), headers=bearer(keys["grid_app"], **{"Idempotency-Key": key}), timeout=5
    )
    assert first.status_code == 202
    other = httpx.post(
        f"{base}/v1/reports", json=_report(), headers=bearer(keys["ops"], **{"Idempotency-Key": key}), timeout=5
    )
    assert other.status_code == 202 and other.json()["case_id"] != first.json()["case_id"]
    again = httpx.post(
        f"{base}/v1/reports", json=_report(), headers=bearer(keys["grid_app"], **{"Idempotency-Key": key}), timeout=5
    )
    assert again.status_code == 200 and again.json()["case_id"] == first.json()["case_id"]


@pytest.mark.parametrize(
    "path, params, role",
    [
        ("/open311/v2/requests.json", {"end_date": "0001-01-01"}, "open311"),
        ("/open311/v2/requests.json", {"start_date": "9999-12-31"}, "open311"),
        (
            "/open311/v2/requests.json",
            {"start_date": "0001-01-01T00:00:00", "end_date": "9999-12-31T23:59:59-23:59"},
            "open311",
        ),
        ("/v1/accountability", {"from": "9999-12-31"}, "ops"),
        ("/v1/accountability", {"to": "9999-12-31"}, "ops"),
        ("/v1/accountability", {"from": "0001-01-01T00:00:00"}, "ops"),
        ("/v1/accountability", {"from": "9999-12-31T23:59:59-23:59", "to": "0001-01-01"}, "ops"),
        ("/v1/cases", {"since": "0001-01-01T00:00:00+23:59", "until": "9999-12-31T23:59:59-23:59"}, "ops"),
    ],
)
def test_extreme_dates_are_answered(hostile: dict[str, Any], path: str, params: dict[str, str], role: str) -> None:
    r = httpx.get(f"{hostile['base']}{path}", params=params, headers=bearer(hostile["keys"][role]), timeout=5)
    assert r.status_code == 200, r.text


def test_other_departments_cases_look_missing(hostile: dict[str, Any]) -> None:
    base, keys = hostile["base"], hostile["keys"]
    case_id = httpx.post(f"{base}/v1/reports", json=_report(), headers=bearer(keys["grid_app"]), timeout=5).json()[
        "case_id"
    ]
    assert _dispatched(hostile, case_id, 10)
    missing = "450305-20000101-999999"
    for method, suffix, body in (("GET", "", None), ("POST", "/replies", {"reply_id": "g1", "action": "acknowledge"})):
        mine = httpx.request(
            method, f"{base}/v1/cases/{case_id}{suffix}", json=body, headers=bearer(keys["gas"]), timeout=5
        )
        none = httpx.request(
            method, f"{base}/v1/cases/{missing}{suffix}", json=body, headers=bearer(keys["gas"]), timeout=5
        )
        assert mine.status_code == none.status_code == 404
        assert mine.text.replace(case_id, "ID") == none.text.replace(missing, "ID")


def test_unknown_routes_and_methods_answer_json(hostile: dict[str, Any]) -> None:
    for method, path in (("GET", "/nope"), ("DELETE", "/v1/reports"), ("GET", "/v1/cases/a%2Fb/replies")):
        r = httpx.request(method, f"{hostile['base']}{path}", timeout=5)
        assert r.status_code == 404 and r.headers["Content-Type"].startswith("application/json"), (method, path)


def test_rate_limit_answers_429_with_retry_after(hostile: dict[str, Any]) -> None:
    url = f"{hostile['base']}/v1/cases/450305-20000101-999999"
    statuses = [httpx.get(url, headers=bearer(hostile["keys"]["station"]), timeout=5) for _ in range(4)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited and [r.status_code for r in statuses[:2]] == [404, 404]  # a burst of 2, then 1 per second
    assert int(limited[0].headers["Retry-After"]) >= 1 and limited[0].json()["errors"][0]["field"] == "Authorization"


# ------------------------------------------------------------------------ slow clients
def _half_sent(port: int, headers: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(headers.encode() + b'{"report_')  # 10 of the 1000 bytes announced
    return s


def test_slow_clients_do_not_stop_intake(hostile: dict[str, Any]) -> None:
    """40 clients announce 1000 bytes and send 10 (more than the whole worker pool), with
    a valid key (the worst case: they get as far as the body). Meanwhile /healthz
    answers, and a report over HTTP and one over AMQP are dispatched within 2 s each."""
    port, keys = hostile["settings"].intake_http_port, hostile["keys"]
    head = (
        f"POST /v1/reports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {keys['grid_app']}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    slow = [_half_sent(port, head) for _ in range(40)]
    try:
        time.sleep(0.2)  # the 40 half-sent requests reach the server (nothing to observe from here)
        assert httpx.get(f"{hostile['base']}/healthz", timeout=2).status_code == 200
        started = time.monotonic()
        r = httpx.post(f"{hostile['base']}/v1/reports", json=_report(), headers=bearer(keys["grid_app"]), timeout=2)
        assert r.status_code == 202
        assert _dispatched(hostile, r.json()["case_id"], 2 - (time.monotonic() - started))
        assert time.monotonic() - started < 2.0

        body = _report()
        started = time.monotonic()
        hostile["channel"].basic_publish(
            message(json.dumps(body).encode(), content_type="application/json", delivery_mode=2),
            topology.EX_REPORTS,
            topology.RK_REPORT,
        )
        case_id = wait_for(lambda: _case_of(hostile, body["report_id"]), 2)
        assert case_id and _dispatched(hostile, case_id, 2 - (time.monotonic() - started))
        assert time.monotonic() - started < 2.0
        # and the slow ones are cut off after the read timeout with a 408
        slow[0].settimeout(READ_TIMEOUT + 3)
        assert b" 408 " in slow[0].recv(200).split(b"\r\n")[0] + b" "
    finally:
        for s in slow:
            s.close()


def test_unauthenticated_bodies_are_never_read(hostile: dict[str, Any]) -> None:
    """Authentication comes before the body: no key, an immediate 401 although the body
    announced never arrives."""
    s = socket.create_connection(("127.0.0.1", hostile["settings"].intake_http_port), timeout=5)
    try:
        s.sendall(
            b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        )
        started = time.monotonic()
        assert s.recv(200).startswith(b"HTTP/1.1 401")
        assert time.monotonic() - started < 1.0
    finally:
        s.close()


def test_half_sent_headers_are_cut_off(hostile: dict[str, Any]) -> None:
    """HTTP_READ_TIMEOUT_SECONDS bounds the request headers too (eventlet reads them
    before any handler runs)."""
    s = socket.create_connection(("127.0.0.1", hostile["settings"].intake_http_port), timeout=READ_TIMEOUT + 5)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        started = time.monotonic()
        try:
            data = s.recv(200)
        except ConnectionResetError:
            data = b""
        assert data == b"" or b" 408 " in data
        assert time.monotonic() - started < READ_TIMEOUT + 2
    finally:
        s.close()


# -------------------------------------------------------------------- 503, not 202
def test_redis_down_is_503_with_retry_after_never_202(vhost_factory: Vhosts, tmp_path: Path) -> None:
    server = shutil.which("redis-server")
    if not server:
        pytest.skip("no redis-server binary for a Redis of this test's own")
    port = free_port()
    own = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    vhost = vhost_factory.make("hostile503")
    (tmp_path / "config").mkdir()
    env = _env(vhost, f"redis://127.0.0.1:{port}/0", copy_config(tmp_path / "config"))
    settings = Settings(**{k.lower(): v for k, v in env.items()})
    log = open(tmp_path / "intake.log", "w")
    procs: list[subprocess.Popen] = []
    try:
        wait_for(lambda: redis.Redis(port=port).ping(), 10)
        procs = start_all(("intake",), env=env, stdout=log)
        wait_until_ready(settings, procs, timeout=60, services=("intake",))
        key = _key(env, Role.grid_app)
        base = f"http://127.0.0.1:{settings.intake_http_port}"
        assert httpx.post(f"{base}/v1/reports", json=_report(), headers=bearer(key), timeout=5).status_code == 202
        own.terminate()
        own.wait(10)
        for r in (
            httpx.post(f"{base}/v1/reports", json=_report(), headers=bearer(key), timeout=10),
            httpx.get(f"{base}/healthz", timeout=10),
        ):
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) >= 1 and r.json()["errors"]
    finally:
        stop_all(procs)
        if own.poll() is None:
            own.kill()
        log.close()
        vhost_factory.drop(vhost)


# ----------------------------------------------------------------------------- logs
def _log_lines(h: dict[str, Any]) -> list[str]:
    return h["log"].read_text(encoding="utf-8", errors="replace").splitlines()


def test_pii_reaches_no_log_line(hostile: dict[str, Any]) -> None:
    """A phone number and key secrets through every rejection path; then no line of any
    library (structlog's, nameko's, eventlet's, kombu's) holds them, and each AMQP
    rejection is one WARNING line without a traceback."""
    base, keys, ch = hostile["base"], hostile["keys"], hostile["channel"]
    gk = keys["grid_app"]
    http_calls = [
        ("POST", "/v1/reports", {"Authorization": f"Bearer gbk_0123456789ab.{PHONE}{PHONE}xx"}, _report()),  # 401
        ("POST", "/v1/reports", bearer(keys["department"]), _report()),  # 403
        ("POST", "/v1/reports", bearer(gk), _with("attributes", {f"tel:{PHONE}": PHONE})),  # 422
        ("POST", "/v1/reports", bearer(gk), {**_with("location.lat", f"{PHONE}"), "description": f"电话{PHONE}"}),
        ("POST", "/v1/reports", bearer(gk, **{"Idempotency-Key": f"{PHONE} {PHONE}"}), _report()),  # 422 header
        ("GET", f"/v1/cases/{PHONE}", bearer(keys["gas"]), None),  # 404
        (
            "POST",
            f"/v1/cases/{PHONE}/replies",
            bearer(keys["gas"]),
            {"reply_id": PHONE, "action": "resolve", "note": f"call {PHONE}"},
        ),  # 422
        ("GET", "/open311/v2/requests.json", {}, {"api_key": f"gbk_0123456789ab.{PHONE}{PHONE}xx"}),  # 403
        ("GET", f"/v1/cases?dept={PHONE}x&since={PHONE}", bearer(keys["ops"]), None),  # 422
    ]
    for method, path, headers, body in http_calls:
        if method == "GET" and isinstance(body, dict):
            r = httpx.get(f"{base}{path}", params=body, headers=headers, timeout=5)
        else:
            r = httpx.request(method, f"{base}{path}", json=body, headers=headers, timeout=5)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
    r = httpx.post(
        f"{base}/v1/reports",
        content=f"电话 {PHONE}".encode(),
        timeout=5,
        headers=bearer(gk, **{"Content-Type": "text/plain"}),
    )
    assert r.status_code == 415
    amqp_rejections = [
        (
            topology.EX_REPORTS,
            topology.RK_REPORT,
            json.dumps(_with("attributes", {f"tel:{PHONE}": "x"})).encode(),
            None,
        ),
        (
            topology.EX_REPORTS,
            topology.RK_REPORT,
            json.dumps({**_report(), "description": ""} | {"note": PHONE}).encode(),
            None,
        ),
        (topology.EX_REPORTS, topology.RK_REPORT, f"not json {PHONE}".encode(), "application/json"),
    ]
    marker = uuid.uuid4().hex
    for exchange, rk, body, ctype in amqp_rejections:
        ch.basic_publish(
            message(
                body, content_type=ctype or "application/json", delivery_mode=2, message_id=f"{marker}-{len(body)}"
            ),
            exchange,
            rk,
        )
    dead = f"{topology.Q_INTAKE_REPORTS}.dead"

    def all_dead() -> bool:
        return ch.queue_declare(dead, passive=True).message_count >= len(amqp_rejections)

    assert wait_for(all_dead, 10)
    # the services' log lines have landed: the log stopped growing (over two polls)
    sizes: list[int] = []

    def log_settled() -> bool:
        sizes.append(hostile["log"].stat().st_size)
        return len(sizes) >= 3 and sizes[-1] == sizes[-3]

    assert wait_for(log_settled, 10, interval=0.2)
    lines = _log_lines(hostile)
    secrets_ = [k.split(".", 1)[1] for k in keys.values()]
    leaks = [ln for ln in lines if PHONE in ln or any(s in ln for s in secrets_)]
    COUNTS["pii_hits"] += len(leaks)
    assert not leaks, leaks[:3]
    assert not [ln for ln in lines if "error handling worker" in ln and "Rejected" in ln]
    rejected = [json.loads(ln) for ln in lines if '"message_rejected"' in ln]
    assert len(rejected) >= 2 and all(r["level"] == "warning" and "exception" not in r for r in rejected)


# ---------------------------------------------------------------------------- fuzzing
# The document the server serves (test_served_document_is_the_fuzzed_one checks that),
# loaded at collection: schemathesis' lazy fixture loader does not run on pytest 9.
FUZZ_CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {
            "mode": "positive",
            "max-examples": FUZZ_EXAMPLES,
            "deterministic": True,
            "no-shrink": True,
            "with-security-parameters": False,
        },
        # the coverage phase (boundary values of every parameter) is thorough and slow: on with FUZZ_COVERAGE=1
        "phases": {"stateful": {"enabled": False}, "coverage": {"enabled": os.environ.get("FUZZ_COVERAGE") == "1"}},
        "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large", "large_base_example"],
        # a body's size in bytes (MAX_REPORT_BYTES, 413 documented) is the one limit a JSON
        # schema cannot state: every other refusal of valid data is a failure
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "413", "429"]}
        },
    }
)
# a copy: the fuzz test fills the real API key into generated bodies, and a body drawn from
# an OpenAPI example is that example's own dict (it would change the served document too)
fuzzed = schemathesis.openapi.from_dict(copy.deepcopy(document()), config=FUZZ_CONFIG)


def test_served_document_is_the_fuzzed_one(hostile: dict[str, Any]) -> None:
    assert httpx.get(f"{hostile['base']}/openapi.json", timeout=5).json() == json.loads(json.dumps(document()))


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    positive_data_acceptance,
]
# the one cross-field rule of another owner's body a JSON schema cannot state (lead ∈
# departments; departments empty iff hand_up): ManualDispatch (services/intake/dispatching.py)
NOT_EXPRESSIBLE = {("POST", "/v1/cases/{case_id}/dispatch")}


def _failure(kind: str, case: Any, role: str, exc: BaseException) -> None:
    COUNTS[kind] += 1
    COUNTS["failures"] += 1
    raise AssertionError(f"{case.method} {case.path} as {role}: {exc}") from exc


@fuzzed.parametrize()
def test_fuzz(case: Any, hostile: dict[str, Any]) -> None:
    op = case.operation.definition.raw
    roles = op.get("x-roles")
    for role in FUZZ_ROLES:
        key = hostile["keys"][role]
        headers = {"Authorization": f"Bearer {key}"}
        if case.path == "/open311/v2/requests.json" and case.method == "POST" and isinstance(case.body, dict):
            case.body = {**case.body, "api_key": key}
        if isinstance(case.query, dict) and "cursor" in case.query:
            # opaque: only a cursor the API returned is valid (422 otherwise, documented)
            case.query = {**case.query, "cursor": Position(0.0, "450305-20000101-000001").encode()}
        checks = [
            c for c in CHECKS if c is not positive_data_acceptance or (case.method, case.path) not in NOT_EXPRESSIBLE
        ]
        COUNTS["requests"] += 1
        try:
            response = case.call_and_validate(base_url=hostile["base"], headers=headers, checks=checks, timeout=10)
        except Exception as exc:  # noqa: BLE001 — counted by kind, then the test fails
            text = str(exc)
            kind = (
                "5xx"
                if "Server error" in text or " 5" in text[:40]
                else "rejected_valid"
                if "accepted" in text
                else "schema_mismatch"
            )
            _failure(kind, case, role, exc)
        COUNTS[f"status_{response.status_code}"] += 1
        if response.status_code >= 500:
            _failure("5xx", case, role, AssertionError(response.text))
        if roles and role not in roles and response.status_code < 300:
            _failure("auth_holes", case, role, AssertionError(f"{role} was served: {response.status_code}"))


def test_fuzz_summary(hostile: dict[str, Any]) -> None:
    """The counts of the run (printed with -s); the log of the run holds no PII."""
    lines = _log_lines(hostile)
    secrets_ = [k.split(".", 1)[1] for k in hostile["keys"].values()]
    phones = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
    hits = [ln for ln in lines if phones.search(ln) or any(s in ln for s in secrets_)]
    COUNTS["pii_hits_after_fuzz"] += len(hits)
    summary = {
        k: COUNTS.get(k, 0)
        for k in (
            "requests",
            "5xx",
            "schema_mismatch",
            "rejected_valid",
            "auth_holes",
            "pii_hits",
            "pii_hits_after_fuzz",
        )
    }
    summary["statuses"] = {k[7:]: v for k, v in sorted(COUNTS.items()) if k.startswith("status_")}
    print("\nFUZZ SUMMARY", json.dumps(summary))
    assert COUNTS["requests"] > 0, "the fuzz tests did not run"
    assert not hits, hits[:3]
    assert COUNTS["failures"] == 0
