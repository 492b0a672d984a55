"""One consumer of the framework benchmark (bench/bench_framework.py), in a process of its own.

    python -m bench.framework_child VARIANT --count N --warmup W --out FILE [--no-work] ...

VARIANT is how `router.cases` is consumed (AMQP_URI names the benchmark's vhost):

- `nameko`: the deployed RouterService in a nameko ServiceRunner (eventlet, `consume_reliably`,
  EntrypointMetrics, health checks, structlog as in production); `--prefetch` sets
  max_workers (nameko's basic.qos), the deployed 30 when not given;
- `kombu`: a kombu Consumer and a blocking drain loop, no nameko, no eventlet; one message
  at a time: work, one confirm round for its batch, ack;
- `kombu_eventlet`: the same under eventlet's monkey patching (what eventlet costs apart
  from nameko);
- `amqp_batch`: py-amqp (shared/amqpclient.py): whatever the prefetch window holds is taken
  at once, its messages' work published with one confirm round, then one ack-multiple.

`spawn` (no broker in the loop) writes to `--out` the CPU µs of one nameko worker — a
greenthread, a WorkerContext, every dependency's worker_setup / get_dependency /
worker_result / teardown — around a handler that does nothing, for the deployed router's
dependencies and for a service with none, and of a bare eventlet greenthread, `--count`
of each, `--prefetch` at a time.

The work is the router's own (`services.router.routing.route` + `Bus.publish_batch` +
`record`); `--no-work` only acks (the nameko variant then runs a service whose handler does
nothing). The process writes, at the `--warmup`-th and the `--count`-th acked message, its own
CPU time, the clock and RabbitMQ's CPU (`--rabbit-pid`, /proc) to `--out`, then exits.
"""

import sys
import warnings

VARIANTS = ("nameko", "kombu", "kombu_eventlet", "amqp_batch")

if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] in ("nameko", "kombu_eventlet", "spawn"):
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    import eventlet

    eventlet.monkey_patch()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.common import cpu_seconds  # noqa: E402


class Counter:
    """Acked messages, with a snapshot of the clocks at the warm-up mark and at the end."""

    def __init__(self, total: int, warmup: int, rabbit_pid: int | None, out: Path) -> None:
        self.total, self.warmup, self.rabbit_pid, self.out = total, warmup, rabbit_pid, out
        self.count = 0
        self.marks: dict[str, dict[str, Any]] = {}
        self.done = False

    def _snapshot(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "t": time.monotonic(),
            "cpu_s": time.process_time(),
            "rabbit_cpu_s": cpu_seconds(self.rabbit_pid) if self.rabbit_pid else None,
        }

    def tick(self, n: int = 1) -> None:
        self.count += n
        if "mark" not in self.marks and self.count >= self.warmup:
            self.marks["mark"] = self._snapshot()
            self.out.write_text(json.dumps(self.marks))
        if not self.done and self.count >= self.total:
            self.marks["end"] = self._snapshot()
            self.out.write_text(json.dumps(self.marks))
            self.done = True


def _router_work() -> Any:
    """(route, record, dispatcher, bus, max_rejections) as the deployed router has them."""
    from services.router.compiler import load_routing_tree
    from services.router.dispatch import Dispatcher
    from services.router.routing import record, route
    from shared.bus import Bus
    from shared.catalog import load_catalog
    from shared.config import get_settings
    from shared.policies import load_policies
    from shared.worktime import load_calendar

    s = get_settings()
    catalog = load_catalog()
    dispatcher = Dispatcher(load_routing_tree(catalog=catalog), catalog, load_policies(), load_calendar())
    bus = Bus(s.amqp_uri, service="router")
    bus.warm_up()
    return route, record, dispatcher, bus, s.max_rejections


def run_nameko(counter: Counter, work: bool, prefetch: int | None) -> None:
    import eventlet
    from kombu.message import Message
    from nameko.runners import ServiceRunner

    from services.router.service import RouterService
    from shared import topology
    from shared.config import get_settings
    from shared.nameko_ext import GridbusService, consume_reliably

    class NoWorkRouter(GridbusService):
        """The router's entrypoint with nothing in it: nameko's and our glue's cost alone."""

        name = "router"

        @consume_reliably(topology.Q_ROUTER_CASES)
        def route_case(self, body: Any) -> None:
            return None

    acked = Message.ack

    def ack(self: Message, multiple: bool = False) -> None:  # counts what the consumer settles
        acked(self, multiple)
        counter.tick()

    Message.ack = ack  # type: ignore[method-assign]
    config = get_settings().nameko_config()
    if prefetch:
        config["max_workers"] = prefetch
    runner = ServiceRunner(config)
    runner.add_service(RouterService if work else NoWorkRouter)
    runner.start()
    while not counter.done:
        eventlet.sleep(0.05)


def run_kombu(counter: Counter, work: bool, prefetch: int) -> None:
    from kombu import Connection, Consumer

    from shared import topology
    from shared.config import get_settings
    from shared.nameko_ext import kombu_queue

    tools: Any = _router_work() if work else (None,) * 5
    route, record, dispatcher, bus, max_rejections = tools

    def on_message(body: Any, message: Any) -> None:
        if work:
            routed = route(dispatcher, body, max_rejections)
            bus.publish_batch(routed.batch)
            record(routed)
        message.ack()
        counter.tick()

    with Connection(get_settings().amqp_uri) as conn:
        channel = conn.channel()
        channel.basic_qos(0, prefetch, False)
        consumer = Consumer(channel, queues=[kombu_queue(topology.Q_ROUTER_CASES)], callbacks=[on_message])
        consumer.consume()
        while not counter.done:
            try:
                conn.drain_events(timeout=10)
            except socket.timeout:
                return


def run_amqp_batch(counter: Counter, work: bool, prefetch: int) -> None:
    from shared import topology
    from shared.amqpclient import channel, connect
    from shared.config import get_settings

    tools: Any = _router_work() if work else (None,) * 5
    route, record, dispatcher, bus, max_rejections = tools
    conn = connect(get_settings().amqp_uri)
    ch = channel(conn)
    ch.basic_qos(0, prefetch, False)
    arrived: list[Any] = []
    ch.basic_consume(topology.Q_ROUTER_CASES, callback=arrived.append)
    while not counter.done:
        try:
            conn.drain_events(timeout=10)
            while len(arrived) < prefetch:  # what is already on the socket joins this batch
                conn.drain_events(timeout=0)
        except socket.timeout:
            if not arrived:
                return
        batch, arrived[:] = list(arrived), []
        if work:
            routed = [route(dispatcher, json.loads(m.body), max_rejections) for m in batch]
            bus.publish_batch([o for r in routed for o in r.batch])  # one confirm round for the batch
            for r in routed:
                record(r)
        ch.basic_ack(batch[-1].delivery_tag, multiple=True)
        counter.tick(len(batch))
    conn.close()


def run_spawn(count: int, at_once: int) -> dict[str, float]:
    """CPU µs per message of nameko's worker machinery and of a bare greenthread."""
    import eventlet
    from nameko.containers import ServiceContainer
    from nameko.extensions import Entrypoint

    from shared.config import get_settings
    from shared.nameko_ext import GridbusService

    class Call(Entrypoint):  # an entrypoint that is only ever called from here
        pass

    call = Call.decorator

    class Bare:
        name = "bare"

        @call
        def handle(self, body: Any) -> None:
            return None

    class LikeRouter(GridbusService):  # the router's dependencies (topology, metrics, health, bus)
        name = "router"

        @call
        def handle(self, body: Any) -> None:
            return None

    def per_message(spawn: Any, waitall: Any) -> float:
        done, started = 0, time.process_time()
        while done < count:
            for _ in range(at_once):
                spawn()
            waitall()
            done += at_once
        return round((time.process_time() - started) / done * 1e6, 2)

    out: dict[str, float] = {}
    config = get_settings().nameko_config()
    for label, cls in (("nameko_worker_no_dependencies", Bare), ("nameko_worker_router_dependencies", LikeRouter)):
        container = ServiceContainer(cls, config)
        for dependency in container.dependencies:  # no start: nothing consumes, the entrypoint is called below
            dependency.setup()
        entrypoint = next(iter(container.entrypoints))

        def spawn(c: Any = container, e: Any = entrypoint) -> None:
            c.spawn_worker(e, ({},), {})

        per_message(spawn, container._worker_pool.waitall)  # warm
        out[label] = per_message(spawn, container._worker_pool.waitall)
    pool = eventlet.GreenPool(at_once)
    per_message(lambda: pool.spawn(lambda: None), pool.waitall)
    out["eventlet_greenthread"] = per_message(lambda: pool.spawn(lambda: None), pool.waitall)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("variant", choices=(*VARIANTS, "spawn"))
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--prefetch", type=int, default=None)
    ap.add_argument("--no-work", action="store_true")
    ap.add_argument("--rabbit-pid", type=int, default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    from shared.config import get_settings
    from shared.logs import configure_logging

    s = get_settings()
    configure_logging(s.log_format, s.log_level, service="router")
    counter = Counter(args.count, args.warmup, args.rabbit_pid, args.out)
    prefetch = args.prefetch or s.nameko_config()["max_workers"]
    work = not args.no_work
    if args.variant == "spawn":
        args.out.write_text(json.dumps(run_spawn(args.count, prefetch)))
        sys.stderr.flush()
        os._exit(0)
    if args.variant == "nameko":
        run_nameko(counter, work, args.prefetch)
    elif args.variant in ("kombu", "kombu_eventlet"):
        run_kombu(counter, work, prefetch)
    else:
        run_amqp_batch(counter, work, prefetch)
    sys.stderr.flush()
    os._exit(0 if counter.done else 1)  # nothing to stop cleanly: the benchmark purges the queues


if __name__ == "__main__":
    main()
