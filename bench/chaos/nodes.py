"""Private servers for fault runs: a RabbitMQ node and a Redis with AOF, on loopback ports
of their own, that can be killed with SIGKILL and started again on the same data.

Never the machine's own broker (5672) or Redis (6379): the RabbitMQ node gets its own
node name, ports, data and log directories, HOME (so its own Erlang cookie) and its own
epmd (on its own port, in the foreground so its PID is ours), as docs/design.md §10 describes.
Each server runs in a process group of its own, so a kill reaches every OS process of it
(beam, erl_child_setup, inet_gethost) and nothing of it outlives the run.
"""

from __future__ import annotations

import fcntl
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

import httpx

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
#: ports reserved for fault and cluster runs (never the machine's own 5672/15672/6379)
AMQP_PORTS = range(5680, 5690)
MGMT_PORTS = range(15680, 15690)
DIST_PORTS = range(25680, 25690)
EPMD_PORTS = range(4380, 4390)
REDIS_PORTS = range(6390, 6400)


class NodeError(RuntimeError):
    """A private server did not come up."""


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
        return True
    except OSError:
        return False


#: one lock file per port handed out; held (flock) for as long as the run that took it lives
LOCK_DIR = Path(tempfile.gettempdir()) / "gridbus-chaos-ports"
_held: dict[int, IO[bytes]] = {}


def reserve(port: int) -> bool:
    """Take the port's lock without waiting. A port stays ours while its server is down
    (killed, restarting): another run on the machine must not start its own server on it
    in the meantime. The kernel drops the lock when this process ends, however it ends."""
    if port in _held:
        return False
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    f = open(LOCK_DIR / f"{port}.lock", "ab")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return False
    _held[port] = f
    return True


def release(port: int) -> None:
    f = _held.pop(port, None)
    if f is not None:
        f.close()


def release_all() -> None:
    for port in list(_held):
        release(port)


def pick(ports: range, taken: set[int] | None = None) -> int:
    """The first port of a reserved range that no other run holds and nothing listens on;
    it is ours (locked) until `release`/`release_all` or the end of this process."""
    for p in ports:
        if taken is not None and p in taken:
            continue
        if not reserve(p):
            continue
        if not port_free(p):
            release(p)
            continue
        if taken is not None:
            taken.add(p)
        return p
    raise NodeError(f"no free port in {ports.start}-{ports.stop - 1}")


def _raise_nofile() -> None:
    """Child side: as many file descriptors as the hard limit allows (quorum queues and
    connections; a 1024-fd node blocks new connections, see .ci/run)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def kill_group(proc: subprocess.Popen | None, sig: int = signal.SIGKILL, wait: float = 10.0) -> None:
    """Signal the process group led by `proc` (started with start_new_session) and reap."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> float:
    """Seconds it took for `check` to pass; NodeError after `timeout`."""
    t0 = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except NodeError:
            raise
        except Exception:  # not up yet
            pass
        if time.monotonic() - t0 > timeout:
            raise NodeError(f"{what} not ready after {timeout:g} s")
        time.sleep(interval)


class ServerProcess:
    """What a server of our own can be asked, whatever it is: `proc` is the leader of its
    process group (started with start_new_session)."""

    proc: subprocess.Popen | None

    def kill(self) -> None:
        """kill -9 of the whole process group (a RabbitMQ node's epmd is not in it)."""
        kill_group(self.proc, signal.SIGKILL)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class RabbitNode(ServerProcess):
    """One RabbitMQ node of our own (management plugin on, for the HTTP API)."""

    base: Path
    name: str = "gbchaos"
    amqp_port: int = 0
    mgmt_port: int = 0
    dist_port: int = 0
    epmd_port: int = 0
    log: IO[bytes] | None = None
    proc: subprocess.Popen | None = None
    epmd: subprocess.Popen | None = None
    extra_conf: str = ""
    starts: int = 0
    _env: dict[str, str] = field(default_factory=dict)

    @property
    def nodename(self) -> str:
        return f"{self.name}@localhost"

    @property
    def amqp_uri(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def mgmt_url(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.mgmt_port}"

    def prepare(self, taken: set[int] | None = None) -> None:
        taken = taken if taken is not None else set()
        for attr, ports in (
            ("amqp_port", AMQP_PORTS),
            ("mgmt_port", MGMT_PORTS),
            ("dist_port", DIST_PORTS),
            ("epmd_port", EPMD_PORTS),
        ):
            if not getattr(self, attr):
                setattr(self, attr, pick(ports, taken))
            taken.add(getattr(self, attr))
        d = self.base
        for sub in ("home", "mnesia", "log", "plugins-expand"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "rabbitmq-env.conf").write_text("# empty: nothing from /etc/rabbitmq\n")
        (d / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.mgmt_port}\n"
            "loopback_users.guest = true\n"
            # the run's own quorum queues and connections: never blocked on fd accounting
            "vm_memory_high_watermark.relative = 0.6\ndisk_free_limit.absolute = 50MB\n"
            # queue depths in the management API within a second (the run polls them)
            "collect_statistics_interval = 1000\n" + self.extra_conf
        )
        self._env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": str(d / "home"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(d / "plugins-expand"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "rabbit.pid"),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_LOGS": str(d / "log" / f"{self.name}.log"),
            "ERL_CRASH_DUMP": str(d / "log" / "erl_crash.dump"),  # not in the caller's directory
        }

    @property
    def env(self) -> dict[str, str]:
        return dict(self._env)

    def _start_epmd(self) -> None:
        if self.epmd is not None and self.epmd.poll() is None:
            return
        self.epmd = subprocess.Popen(
            ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            env=self._env,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        wait_until(lambda: port_open(self.epmd_port), 10, f"epmd on {self.epmd_port}")

    def start(self, wait: bool = True, timeout: float = 90.0) -> float:
        """Start the node (on the data it had, after a kill); seconds until AMQP answers."""
        if not self._env:
            self.prepare()
        self._start_epmd()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [RABBITMQ_SERVER],
            env=self._env,
            stdout=self.log,
            stderr=self.log,
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_raise_nofile,
        )
        self.starts += 1
        if wait:
            self.wait_ready(timeout)
        return time.monotonic() - t0

    def wait_ready(self, timeout: float = 90.0) -> float:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise NodeError(
                    f"rabbitmq node {self.nodename} exited with {self.proc.returncode} (log: {self.base / 'log'})"
                )
            if not port_open(self.amqp_port):
                return False
            r = httpx.get(f"http://127.0.0.1:{self.mgmt_port}/api/overview", auth=("guest", "guest"), timeout=2)
            return r.status_code == 200

        return wait_until(ready, timeout, f"rabbitmq node {self.nodename}")

    def stop(self) -> None:
        """The end of a run: its data is thrown away, so no graceful shutdown is needed."""
        self.kill()
        kill_group(self.epmd, signal.SIGKILL)
        self.epmd = None

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.mgmt_port}", auth=("guest", "guest"), timeout=10)


@dataclass
class RedisNode(ServerProcess):
    """A redis-server of our own with AOF (appendfsync everysec), data in `base`."""

    base: Path
    port: int = 0
    log: IO[bytes] | None = None
    proc: subprocess.Popen | None = None
    appendfsync: str = "everysec"
    extra_args: tuple[str, ...] = ()
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def prepare(self, taken: set[int] | None = None) -> None:
        if not self.port:
            self.port = pick(REDIS_PORTS, taken)
        if taken is not None:
            taken.add(self.port)
        self.base.mkdir(parents=True, exist_ok=True)

    def start(self, wait: bool = True, timeout: float = 60.0) -> float:
        if not self.port:
            self.prepare()
        self.base.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.base),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
                *self.extra_args,
            ],
            stdout=self.log,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.starts += 1
        if wait:
            self.wait_ready(timeout)
        return time.monotonic() - t0

    def wait_ready(self, timeout: float = 60.0) -> float:
        import redis

        def ping() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise NodeError(f"redis-server on {self.port} exited with {self.proc.returncode}")
            c = redis.Redis(port=self.port, socket_timeout=1)
            try:
                return bool(c.ping())  # BusyLoadingError while it reads the AOF
            except redis.RedisError:
                return False
            finally:
                c.close()

        return wait_until(ping, timeout, f"redis on {self.port}")

    def stop(self) -> None:
        self.kill()
