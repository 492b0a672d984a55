"""Private RabbitMQ, Redis and PostgreSQL for `gridbus up` on a machine without them
running and without Docker: started from the installed binaries, on the ports of
AMQP_URI / REDIS_URL / DATABASE_URL, with their data under a project-local folder
(`.gridbus/data/`, kept between runs), and stopped when `gridbus up` stops.

The RabbitMQ node is run as docs/design.md §10 describes (its own node name, HOME, data,
log and epmd; bench/chaos/nodes.py's `RabbitNode`); never a machine's own server, which
would have answered in the first place. When a binary is missing, `install_hint` says
exactly what to install.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import unquote, urlparse

from bench.chaos.nodes import RABBITMQ_SERVER, NodeError, RabbitNode, RedisNode, kill_group, wait_until

PACKAGES = {"rabbitmq": "rabbitmq-server", "redis": "redis-server", "postgres": "postgresql"}


class Server(Protocol):
    def start(self, wait: bool = True, timeout: float = 90.0) -> float: ...


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian layout)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def installed(name: str) -> bool:
    if name == "rabbitmq":
        return os.access(RABBITMQ_SERVER, os.X_OK) and shutil.which("epmd") is not None
    if name == "redis":
        return shutil.which("redis-server") is not None
    return postgres_bin() is not None


def install_hint(names: list[str]) -> str:
    pkgs = " ".join(PACKAGES[n] for n in names)
    variables = ", ".join({"rabbitmq": "AMQP_URI", "redis": "REDIS_URL", "postgres": "DATABASE_URL"}[n] for n in names)
    return (
        f"To run them privately without Docker, install them: `sudo apt-get install -y {pkgs}` "
        f"(Debian/Ubuntu), then run ./run.sh again; or install Docker; or point "
        f"{variables} "
        f"at running servers."
    )


@dataclass
class PostgresNode:
    """A PostgreSQL cluster of our own (trust authentication on loopback). As root it
    runs as the `postgres` user, which PostgreSQL requires."""

    base: Path
    port: int
    user: str
    log: IO[bytes] | None = None
    proc: subprocess.Popen | None = None

    def _as_server_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", "postgres", "--", *argv]

    def start(self, wait: bool = True, timeout: float = 90.0) -> float:
        bindir = postgres_bin()
        if bindir is None:
            raise NodeError("PostgreSQL is not installed")
        data = self.base / "pgdata"
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
            reach = subprocess.run(self._as_server_user(["test", "-w", str(self.base)]), capture_output=True)
            if reach.returncode != 0:
                raise NodeError(
                    f"the postgres user cannot reach {self.base} (a parent folder is private, e.g. "
                    f"/root): run gridbus from a folder others may enter, or set DATABASE_URL"
                )
        if not (data / "PG_VERSION").exists():
            subprocess.run(
                self._as_server_user(
                    [
                        str(bindir / "initdb"),
                        "-D",
                        str(data),
                        "-U",
                        self.user,
                        "--auth=trust",
                        "--encoding=UTF8",
                        "--locale=C.UTF-8",
                    ]
                ),
                check=True,
                stdout=self.log,
                stderr=self.log,
            )
        self.proc = subprocess.Popen(
            self._as_server_user(
                [
                    str(bindir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-k",
                    str(self.base),
                ]
            ),
            stdout=self.log,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if not wait:
            return 0.0

        def accepting() -> bool:  # the port opens before recovery ends ("the database system is starting up")
            if self.proc is not None and self.proc.poll() is not None:
                raise NodeError(f"postgres on {self.port} exited with {self.proc.returncode}")
            return (
                subprocess.run(
                    [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
                ).returncode
                == 0
            )

        return wait_until(accepting, timeout, f"postgres on {self.port}")

    def stop(self) -> None:
        kill_group(self.proc, signal.SIGINT, wait=30)  # fast shutdown
        self.proc = None


class Private:
    """The private servers one `gridbus up` started."""

    def __init__(self, base: Path) -> None:
        self.base = base.resolve()  # the servers run with other working directories
        self.started: list[tuple[str, object]] = []
        self.log_path = base / "servers.log"

    def start(self, names: list[str], amqp_uri: str, mgmt_url: str, redis_url: str, database_url: str) -> None:
        """Start each of `names` (rabbitmq, redis, postgres) on its configured port."""
        self.base.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        for name in names:
            if name == "rabbitmq":
                a, m = urlparse(amqp_uri), urlparse(mgmt_url)
                if unquote(a.username or "guest") != "guest":
                    raise NodeError("a private RabbitMQ has only the guest user: use amqp://guest:guest@…")
                node = RabbitNode(
                    self.base / "rabbitmq",
                    name="gridbus-local",
                    amqp_port=a.port or 5672,
                    mgmt_port=m.port or 15672,
                    log=log,
                )
                node.start(timeout=120)
                self.started.append((name, node))
            elif name == "redis":
                node_r = RedisNode(self.base / "redis", port=urlparse(redis_url).port or 6379, log=log)
                node_r.base.mkdir(parents=True, exist_ok=True)
                node_r.start()
                self.started.append((name, node_r))
            elif name == "postgres":
                d = urlparse(database_url)
                node_p = PostgresNode(
                    self.base / "postgres", port=d.port or 5432, user=unquote(d.username or "postgres"), log=log
                )
                node_p.start()
                self.started.append((name, node_p))

    def graceful_stop(self) -> None:
        """Stop in reverse order, each letting its data reach the disk."""
        for name, node in reversed(self.started):
            if name == "postgres":
                node.stop()  # type: ignore[attr-defined]
            elif name == "redis":
                kill_group(node.proc, signal.SIGTERM, wait=20)  # type: ignore[attr-defined]
            else:
                kill_group(node.proc, signal.SIGTERM, wait=30)  # type: ignore[attr-defined]
                kill_group(node.epmd, signal.SIGTERM, wait=5)  # type: ignore[attr-defined]
        self.started.clear()
