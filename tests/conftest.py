"""Test fixtures: real RabbitMQ and Redis, isolated per test session.

`AMQP_URI` / `REDIS_URL` come from the environment (CI and this machine: localhost).
When they are unset and Docker exists, testcontainers starts throwaway servers; when
neither, integration tests are skipped with the reason.

Isolation: each session gets its own RabbitMQ vhost (created through the management
API, deleted at the end) and its own Redis key prefix, so tests never see each other's
queues or keys, and never the developer's running stack.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote, unquote, urlparse, urlunparse

import httpx
import pytest
import redis

from bench.common import free_port, service_ports  # noqa: F401 (the tests import them from here)
from shared.config import reset_settings

REPO = Path(__file__).resolve().parent.parent


def _docker_available() -> bool:
    return bool(shutil.which("docker")) and subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def broker_uris() -> Iterator[tuple[str, str]]:
    """(AMQP URI of the server root vhost, management API base URL)."""
    uri = os.environ.get("AMQP_URI")
    mgmt = os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
    if uri:
        yield uri, mgmt
        return
    if _docker_available():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-management") as rmq:
            host, port = rmq.get_container_host_ip(), rmq.get_exposed_port(5672)
            mport = rmq.get_exposed_port(15672)
            yield f"amqp://guest:guest@{host}:{port}/", f"http://guest:guest@{host}:{mport}"
        return
    uri = "amqp://guest:guest@127.0.0.1:5672/"
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        pytest.skip("no RabbitMQ: set AMQP_URI, start rabbitmq-server, or install Docker")
    yield uri, mgmt


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    if _docker_available():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7") as r:
            yield f"redis://{r.get_container_host_ip()}:{r.get_exposed_port(6379)}/0"
        return
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0").ping()
    except redis.ConnectionError:
        pytest.skip("no Redis: set REDIS_URL, start redis-server, or install Docker")
    yield "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A PostgreSQL database of this session's own (created, migrated, dropped at the end),
    on the server of DATABASE_URL (default: this machine's, trust auth)."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    from services.archiver import db

    base = os.environ.get("DATABASE_URL", "postgresql://root@127.0.0.1:5432/postgres")
    dsn = make_conninfo(base, dbname=f"gridbus_test_{uuid.uuid4().hex[:10]}")
    try:
        db.prepare(dsn)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {base}: {exc}")
    try:
        yield dsn
    finally:
        db.drop_database(dsn)


def _mgmt(base: str) -> httpx.Client:
    parsed = urlparse(base)
    netloc = parsed.hostname + (f":{parsed.port}" if parsed.port else "")
    return httpx.Client(
        base_url=urlunparse((parsed.scheme, netloc, "", "", "", "")),
        auth=(parsed.username or "guest", parsed.password or "guest"),
        timeout=10,
    )


class Vhosts:
    """Fresh vhosts (as AMQP URIs). A stack of running services gets its own and drops it
    when it stops, so no two stacks consume each other's queues and the broker never holds
    more test vhosts (each ~60 quorum queues and a stream) than it needs at a time."""

    def __init__(self, uri: str, api: httpx.Client, mgmt: str) -> None:
        self.parsed = urlparse(uri)
        self.api, self.mgmt = api, mgmt
        self.live: list[str] = []

    def make(self, tag: str = "test") -> str:
        name = f"gridbus-{tag}-{uuid.uuid4().hex[:8]}"
        try:
            self.api.put(f"/api/vhosts/{quote(name, safe='')}").raise_for_status()
        except httpx.HTTPError as exc:
            pytest.skip(
                f"RabbitMQ management API not reachable at {self.mgmt} ({exc}); "
                "enable it: rabbitmq-plugins enable rabbitmq_management"
            )
        self.live.append(name)
        user = self.parsed.username or "guest"
        self.api.put(
            f"/api/permissions/{quote(name, safe='')}/{user}", json={"configure": ".*", "write": ".*", "read": ".*"}
        ).raise_for_status()
        return urlunparse(self.parsed._replace(path="/" + quote(name, safe="")))

    def drop(self, uri: str) -> None:
        name = unquote(urlparse(uri).path[1:])
        self.api.delete(f"/api/vhosts/{quote(name, safe='')}")
        if name in self.live:
            self.live.remove(name)


@pytest.fixture(scope="session")
def vhost_factory(broker_uris: tuple[str, str]) -> Iterator[Vhosts]:
    uri, mgmt = broker_uris
    with _mgmt(mgmt) as api:
        vhosts = Vhosts(uri, api, mgmt)
        try:
            yield vhosts
        finally:
            for name in list(vhosts.live):
                api.delete(f"/api/vhosts/{quote(name, safe='')}")


@pytest.fixture(scope="session")
def vhost(vhost_factory: Vhosts) -> str:
    """The session's vhost for tests that use the broker without running services."""
    return vhost_factory.make("test")


@pytest.fixture(scope="session")
def mgmt_api(broker_uris: tuple[str, str]) -> Iterator[httpx.Client]:
    with _mgmt(broker_uris[1]) as api:
        yield api


@pytest.fixture()
def stack_env(vhost: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Environment pointing gridbus at the test vhost and a unique Redis key prefix."""
    prefix = f"gbt{uuid.uuid4().hex[:8]}"
    env = {"AMQP_URI": vhost, "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    reset_settings()
    yield env
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    reset_settings()


@pytest.fixture()
def redis_client(stack_env: dict[str, str]) -> redis.Redis:
    return redis.Redis.from_url(stack_env["REDIS_URL"], decode_responses=True)


def wait_for(fn: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll `fn` until it returns something truthy (returned), or until `timeout`, when its
    last answer is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    return fn()


def copy_config(target: Path) -> Path:
    """A private copy of config/ for a stack of test services (tests then change files)."""
    for f in (REPO / "config").iterdir():
        if f.is_file():
            shutil.copy(f, target / f.name)
    return target


_MARK_BY_FOLDER = {"integration": pytest.mark.integration, "e2e": pytest.mark.e2e}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/integration or tests/e2e carries that folder's marker, so
    `-m "not integration and not e2e"` selects exactly the tests that need no broker,
    whether or not a file remembers to set `pytestmark`."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO).parts
        if len(parts) > 1 and parts[0] == "tests" and parts[1] in _MARK_BY_FOLDER:
            item.add_marker(_MARK_BY_FOLDER[parts[1]])
