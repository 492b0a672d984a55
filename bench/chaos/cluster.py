"""The cluster run: what README "Scaling out" promises, on one machine, under load.

- RabbitMQ: three nodes `gbclu1..3@localhost` (one epmd, one cookie, distinct AMQP,
  management and distribution ports) that form a cluster by classic peer discovery; the
  quorum queues get a member on each node. The services reach the cluster through a TCP
  balancer (what a Kubernetes Service or a load balancer is in production) that sends
  each new connection to the first node that accepts it, the victim first so that every
  connection starts on the node that is lost.
- Redis: a master, a replica and three Sentinels (quorum 2) watching it as `gridbus`;
  the services get `REDIS_SENTINELS`.
- Faults: `rabbit-node` = kill -9 of one RabbitMQ node (kept down `node_down_s`, then
  started again to rejoin), `redis-master` = kill -9 of the current master, so that the
  Sentinels fail over to the replica (the old master is restarted and rejoins as a
  replica); and the service kills of the single-node run.

Ports: free ones of the reserved ranges (bench/chaos/nodes.py): AMQP and the balancer
5680-5689, management 15680-15689, distribution 25680-25689, one epmd 4380-4389, Redis
and Sentinels 6390-6399 (all loopback).
"""

from __future__ import annotations

import functools
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import redis
from redis.sentinel import Sentinel

from bench.chaos.nodes import (
    AMQP_PORTS,
    EPMD_PORTS,
    REDIS_PORTS,
    RabbitNode,
    RedisNode,
    kill_group,
    pick,
    port_open,
    wait_until,
)
from bench.chaos.run import ChaosRun, Fault
from bench.chaos.stack import SERVICES

MASTER_NAME = "gridbus"
COOKIE = "GRIDBUSCHAOSCLUSTERCOOKIE"
CLUSTER_TARGETS = (*SERVICES, "rabbit-node", "redis-master")


class TcpBalancer:
    """Forwards each accepted connection to the first backend port that accepts it."""

    def __init__(self, port: int, backends: list[int]) -> None:
        self.backends = backends
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(256)
        self.port = port
        self.closed = False
        self.links: list[tuple[socket.socket, socket.socket]] = []
        threading.Thread(target=self._accept, daemon=True, name="balancer").start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._link, args=(client,), daemon=True).start()

    def _link(self, client: socket.socket) -> None:
        for port in self.backends:
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=2)
                upstream.settimeout(None)
                break
            except OSError:
                continue
        else:
            client.close()
            return
        self.links.append((client, upstream))
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        for a, b in self.links:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass


class Sentinels:
    """Three redis-sentinel processes watching MASTER_NAME."""

    def __init__(self, base: Path, ports: list[int], master_port: int, log: Any) -> None:
        self.base, self.ports, self.master_port, self.log = base, ports, master_port, log
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        for p in self.ports:
            conf = self.base / f"sentinel-{p}.conf"
            conf.write_text(
                f"port {p}\nbind 127.0.0.1\ndir {self.base}\nprotected-mode no\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 2000\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self.procs.append(
                subprocess.Popen(
                    ["redis-server", str(conf), "--sentinel"],
                    stdout=self.log,
                    stderr=self.log,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        for p in self.ports:
            wait_until(functools.partial(port_open, p), 20, f"sentinel on {p}")

    def master(self) -> tuple[str, int] | None:
        for p in self.ports:
            try:
                found = Sentinel([("127.0.0.1", p)], socket_timeout=1).discover_master(MASTER_NAME)
                return found[0], int(found[1])
            except Exception:
                continue
        return None

    def stop(self) -> None:
        for proc in self.procs:
            kill_group(proc)


class ClusterRun(ChaosRun):
    """ChaosRun on a 3-node RabbitMQ cluster and Redis master + replica + 3 Sentinels."""

    targets = CLUSTER_TARGETS
    victim = 2  # index of the RabbitMQ node that is lost
    node_down_s = 20.0  # how long it stays lost before it is started again to rejoin

    def start_servers(self) -> str:
        base = self.dir
        names = [f"gbclu{i}" for i in (1, 2, 3)]
        taken: set[int] = set()
        epmd = pick(EPMD_PORTS, taken)
        taken.add(epmd)
        nodes_conf = "cluster_formation.peer_discovery_backend = classic_config\n" + "".join(
            f"cluster_formation.classic_config.nodes.{i + 1} = {n}@localhost\n" for i, n in enumerate(names)
        )
        self.nodes = [RabbitNode(base / n, name=n, epmd_port=epmd, log=self.log, extra_conf=nodes_conf) for n in names]
        for n in self.nodes:
            n.prepare(taken)
            cookie = n.base / "home" / ".erlang.cookie"
            cookie.write_text(COOKIE)
            cookie.chmod(0o400)
        errors: list[BaseException] = []

        def start(n: RabbitNode, delay: float) -> None:
            time.sleep(delay)
            try:
                n.start(timeout=180)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(n, i * 1.0), daemon=True) for i, n in enumerate(self.nodes)]
        for th in threads:
            th.start()
        self.redis = RedisNode(base / "redis-a", log=self.log)
        self.redis.prepare(taken)
        self.replica = RedisNode(base / "redis-b", log=self.log)
        self.replica.prepare(taken)
        self.replica.extra_args = ("--replicaof", "127.0.0.1", str(self.redis.port))
        sentinel_ports = [pick(REDIS_PORTS, taken) for _ in range(3)]
        self.redis.start()
        self.replica.start()
        self.sentinels = Sentinels(base, sentinel_ports, self.redis.port, self.log)
        self.sentinels.start()
        for th in threads:
            th.join()
        if errors:
            raise errors[0]
        wait_until(self._clustered, 120, "3 RabbitMQ nodes running in one cluster")
        victim = self.nodes[self.victim]
        order = [victim.amqp_port] + [n.amqp_port for n in self.nodes if n is not victim]
        self.balancer = TcpBalancer(pick(AMQP_PORTS, taken), order)
        return (
            f"rabbitmq cluster {', '.join(f'{n.nodename} :{n.amqp_port}' for n in self.nodes)} behind "
            f":{self.balancer.port}; redis master :{self.redis.port}, replica :{self.replica.port}, "
            f"sentinels :{', :'.join(map(str, sentinel_ports))}"
        )

    def _clustered(self) -> bool:
        with self.mgmt() as api:
            nodes = api.get("/api/nodes", params={"columns": "name,running"}).json()
        return sum(1 for n in nodes if n.get("running")) == 3

    def stop_servers(self) -> None:
        if getattr(self, "balancer", None) is not None:
            self.balancer.close()
        for n in getattr(self, "nodes", []):
            n.stop()
        if getattr(self, "sentinels", None) is not None:
            self.sentinels.stop()
        for r in (getattr(self, "redis", None), getattr(self, "replica", None)):
            if r is not None:
                r.stop()

    @property
    def amqp_uri(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.balancer.port}/"

    @property
    def mgmt_url(self) -> str:
        return self.nodes[0].mgmt_url

    def mgmt(self) -> httpx.Client:
        return self.nodes[0].api()  # never the victim

    def redis_env(self) -> dict[str, str]:
        return {
            "REDIS_URL": "",
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in self.sentinels.ports),
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
        }

    def redis_client(self, decode_responses: bool = True) -> redis.Redis:
        sentinel = Sentinel([("127.0.0.1", p) for p in self.sentinels.ports], socket_timeout=2)
        return sentinel.master_for(MASTER_NAME, decode_responses=decode_responses, socket_timeout=5)

    def inject_server(self, fault: Fault) -> tuple[str, ...]:
        if fault.target == "rabbit-node":
            victim = self.nodes[self.victim]
            victim.kill()
            self._note(fault=f"kill -9 rabbitmq node {victim.nodename}")
            time.sleep(self.node_down_s)
            took = victim.start(timeout=self.s.recover_s)
            self._note(restarted=victim.nodename, accepting_after_s=round(took, 1))
            wait_until(self._clustered, self.s.recover_s, "the lost node back in the cluster")
            return SERVICES
        if fault.target == "redis-master":
            where = self.sentinels.master()
            old = self.redis if where and where[1] == self.redis.port else self.replica
            new = self.replica if old is self.redis else self.redis
            old.kill()
            self._note(fault=f"kill -9 redis master :{old.port}")
            t = time.monotonic()
            wait_until(
                lambda: (self.sentinels.master() or ("", 0))[1] == new.port,
                60,
                f"sentinels failing over to :{new.port}",
            )
            self._note(failover_to=new.port, after_s=round(time.monotonic() - t, 1))
            old.extra_args = ("--replicaof", "127.0.0.1", str(new.port))
            old.start()
            self._note(restarted=f"redis :{old.port} as replica")
            return SERVICES
        raise ValueError(f"unknown fault target {fault.target!r} (one of {', '.join(self.targets)})")
