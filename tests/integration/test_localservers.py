"""`gridbus up` without servers and without Docker: private Redis and PostgreSQL from
the installed binaries, on the configured ports, data kept under the given folder, and
stopped again; a missing binary gets the exact install command. (The private RabbitMQ
node takes 20–60 s to boot here: checked by the documented `./run.sh` run in README's
"Try it", not in CI.)"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest
import redis

from services import localservers
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def test_private_redis_keeps_its_data_between_runs(tmp_path: Path) -> None:
    if not localservers.installed("redis"):
        pytest.skip("redis-server is not installed")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    for run in range(2):
        private = localservers.Private(tmp_path)
        private.start(["redis"], "amqp://guest:guest@127.0.0.1:1/", "http://127.0.0.1:1", url, "")
        try:
            client = redis.Redis.from_url(url)
            if run == 0:
                client.set("k", "kept")
            else:
                assert client.get("k") == b"kept"
            client.close()
        finally:
            private.graceful_stop()
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    assert (tmp_path / "redis").is_dir()


def test_private_postgres_with_trust_for_the_configured_user() -> None:
    if not localservers.installed("postgres"):
        pytest.skip("PostgreSQL is not installed")
    # as root the server runs as `postgres`, which must reach the folder (pytest's tmp is 0700)
    tmp_path = Path(tempfile.mkdtemp(prefix="gridbus-pg-"))
    tmp_path.chmod(0o755)
    port = free_port()
    dsn = f"postgresql://gridbus@127.0.0.1:{port}/postgres"
    private = localservers.Private(tmp_path)
    private.start(["postgres"], "", "", "", dsn)
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            assert conn.execute("select current_user").fetchone() == ("gridbus",)
    finally:
        private.graceful_stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2)
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_what_to_install_is_named_exactly() -> None:
    hint = localservers.install_hint(["rabbitmq", "postgres"])
    assert "sudo apt-get install -y rabbitmq-server postgresql" in hint
    assert "AMQP_URI" in hint and "DATABASE_URL" in hint
