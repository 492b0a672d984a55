"""CPU per report of intake's, router's and the notifier's own code, in one process.

    python -m bench.bench_cpu --reports 300        # AMQP_URI, RABBITMQ_MANAGEMENT_URL, REDIS_URL

The pipeline benchmark's CPU per process is the figure that counts, but on a machine
that other work keeps busy it mostly measures the contention (a process that waits for a
CPU half the window amortises its timers over few reports). This one calls, for each
report in turn and in one green thread of an eventlet-patched process like the services',
the code a report goes through — intake's HTTP gate (API key, rate limit), parsing,
registration and its publish, the router's plan and publish, intake applying the
dispatch, the notifier planning the event and sending every delivery to a local webhook
sink — on the real broker (a throwaway vhost with the topology) and the real Redis (a
throwaway prefix), and adds up `time.process_time()` per step: this process's CPU only,
whatever else the machine does. Not in it: nameko's and kombu's consumer and WSGI
overhead, and the broker's and Redis's own CPU (the pipeline benchmark has those).
"""

import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Iterator  # noqa: E402

from bench.common import (  # noqa: E402
    REPO,
    bench_config_dir,
    delete_redis_prefix,
    free_port,
    make_report,
    sample_reports,
    throwaway_vhost,
)

STEPS = (
    "intake_gate",
    "intake_parse",
    "intake_register",
    "router_plan_publish",
    "intake_apply_dispatch",
    "intake_batches",
    "sla_clocks",
    "notifier_plan",
    "notifier_deliver",
)


def run(
    reports: int,
    amqp_uri: str,
    mgmt_url: str,
    redis_url: str,
    warmup: int = 20,
    profile: str | None = None,
    batch_every: int = 1,
) -> dict[str, Any]:
    from bench.pipeline import _serve_sink

    tag = uuid.uuid4().hex[:8]
    prefix = f"benchcpu{tag}"
    work = Path(tempfile.mkdtemp(prefix="gridbus-benchcpu-"))
    ctx = mp.get_context("spawn")
    sink_port = free_port()
    hits = ctx.Value("l", 0)  # kept referenced until the sink has started
    sink = ctx.Process(target=_serve_sink, args=(sink_port, hits), daemon=True)
    sink.start()
    try:
        with throwaway_vhost(amqp_uri, mgmt_url) as (vhost_uri, _):
            os.environ.update(
                {
                    "AMQP_URI": vhost_uri,
                    "REDIS_URL": redis_url,
                    "REDIS_KEY_PREFIX": prefix,
                    "CONFIG_DIR": str(bench_config_dir(REPO / "config", work / "config")),
                    "LOG_FORMAT": "json",
                    "LOG_LEVEL": "WARNING",
                    "WEBHOOK_SECRET": "bench-secret",
                    "WEBHOOK_URL_TEMPLATE": f"http://127.0.0.1:{sink_port}/hooks/{{dept}}",
                    "PUBLIC_BASE_URL": "http://127.0.0.1:8000",
                }
            )
            try:
                return _measure(reports, vhost_uri, tag, warmup, profile, batch_every)
            finally:
                delete_redis_prefix(redis_url, prefix)
    finally:
        sink.kill()


def _measure(
    reports: int, vhost_uri: str, tag: str, warmup: int, profile: str | None = None, batch_every: int = 1
) -> dict[str, Any]:
    from services.intake.auth import bearer_token, create_key, use_time
    from services.intake.boundary import HttpGate
    from services.intake.cases import apply_event
    from services.intake.publishing import publish_stored, register_report
    from services.intake.service import Domain
    from services.intake.validation import parse
    from services.notifier.service import NotifierConfig
    from services.router.service import DispatcherProvider
    from shared import topology
    from shared.amqpclient import connection
    from shared.bus import Bus, Outgoing
    from shared.config import get_settings
    from shared.logs import configure_logging
    from shared.models import Report
    from shared.redisdb import connect

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    with connection(vhost_uri) as conn:
        topology.declare(conn.channel(), topology.default_topology())
    client = connect(settings)
    intake_bus, router_bus = Bus(vhost_uri, "intake"), Bus(vhost_uri, "router")
    notifier_bus = Bus(vhost_uri, "notifier")
    domain, routing, notifier_config, gate = Domain(), DispatcherProvider(), NotifierConfig(), HttpGate()
    deadlines = _deadlines(client, Bus(vhost_uri, "sla"))
    for provider in (domain, routing, notifier_config, gate):
        provider.setup()
    # intake's outbox batches (records to publish, confirmed ids to remove) go when this
    # loop says, every `batch_every` reports, in their own step, not on its timer in another
    # step (a tree from before the batches has none: the step stays 0)
    completions = getattr(domain, "completions", None)
    if completions is not None:
        completions.interval_s = 3600.0
    token, _ = create_key(client, "grid_app", name="bench")
    headers = {"Authorization": f"Bearer {token}"}

    templates = sample_reports()
    bodies = [
        json.dumps(make_report(templates[i % len(templates)], tag, i), ensure_ascii=False).encode()
        for i in range(reports + warmup)
    ]
    spent = {s: 0.0 for s in STEPS}
    counts = {"deliveries": 0, "reports": 0}

    profiler = cProfile.Profile() if profile else None

    @contextlib.contextmanager
    def timed(step: str, measure: bool) -> Iterator[None]:
        profiling = profiler if measure and step == profile else None
        if profiling is not None:
            profiling.enable()
        t = time.process_time()
        yield
        if measure:
            spent[step] += time.process_time() - t
        if profiling is not None:
            profiling.disable()

    started = time.perf_counter()
    for i, body in enumerate(bodies):
        m = i >= warmup
        store, registrar = domain.for_client(client)
        with timed("intake_gate", m):
            # as ApiEntrypoint._authenticate for POST /v1/reports: key, role, rate limit, use in one script
            gate.limiter.admit(bearer_token(headers), ("grid_app", "ops"), use_time())
        with timed("intake_parse", m):
            report = parse(Report, body)
        with timed("intake_register", m):
            result = register_report(intake_bus, store, registrar, report, "http")
        registered = next(e for e in result.events if getattr(e, "event", "") == "case_registered")
        with timed("router_plan_publish", m):
            plan = routing.dispatcher.plan_event(registered, max_rejections=settings.max_rejections)
            assert plan is not None, "every bench report is routable"
            batch = [Outgoing(topology.EX_DISPATCH, key, order, kind="dispatch_order") for key, order in plan.orders]
            batch.append(Outgoing.event(plan.dispatched))
            router_bus.publish_batch(batch)
        with timed("intake_apply_dispatch", m):
            _, events, _ = apply_event(store, plan.dispatched)
            publish_stored(intake_bus, store, events)
        with timed("sla_clocks", m):  # both events sla.events gets for a report
            deadlines.handle(registered)
            deadlines.handle(plan.dispatched)
        notifier = notifier_config.notifier(client, notifier_bus)
        # as on_event, in two steps: the plan (recorded in Redis), then its deliveries sent
        # in-process (with any fallback channel, as the service does)
        with timed("notifier_plan", m):
            planned = notifier.plan(plan.dispatched)
        with timed("notifier_deliver", m):
            notifier.deliver_planned(plan.dispatched, planned)
        if completions is not None and (i + 1) % batch_every == 0:
            with timed("intake_batches", m):  # a 50 ms batch at 300 reports/s holds 15 reports'
                completions.flush()
        if m:
            counts["reports"] += 1
            counts["deliveries"] += len(planned)
    wall = time.perf_counter() - started
    if profiler is not None:  # where the step's CPU goes (cProfile inflates it; the figures above are without)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
    n = counts["reports"]
    per_report = {s: round(v / n * 1000, 3) for s, v in spent.items()}
    return {
        "reports": n,
        "deliveries_per_report": round(counts["deliveries"] / n, 3),
        "cpu_ms_per_report": per_report,
        "cpu_ms_per_report_by_service": {
            "intake": round(sum(v for k, v in per_report.items() if k.startswith("intake")), 3),
            "router": per_report["router_plan_publish"],
            "sla": per_report["sla_clocks"],
            "notifier": round(per_report["notifier_plan"] + per_report["notifier_deliver"], 3),
        },
        "wall_s": round(wall, 2),
        "load_average": os.getloadavg(),
    }


def _deadlines(client: Any, bus: Any) -> Any:
    """sla's `Deadlines` as its provider builds it (no timers started: the bench's reports
    fall due hours later)."""
    from services.sla.deadlines import Deadlines
    from shared.departments import load_departments
    from shared.grid import load_grid
    from shared.policies import load_policies
    from shared.worktime import load_calendar

    return Deadlines(
        client,
        load_policies(),
        load_calendar(),
        bus.publish_event,
        grid=load_grid(),
        departments=load_departments(),
        publish_many=bus.publish_events,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reports", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20, help="reports sent first and not counted")
    p.add_argument("--runs", type=int, default=1, help="repeat, fresh vhost each time; prints the median")
    p.add_argument("--out", help="result JSON file")
    p.add_argument("--profile", choices=STEPS, help="print cProfile's cumulative table of one step (to stderr)")
    p.add_argument(
        "--batch",
        type=int,
        default=1,
        help="reports per batch of intake's outbox work (records published, ids done): 1 is the least it saves",
    )
    args = p.parse_args(argv)
    amqp_uri = os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")
    mgmt = os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    results = [
        run(args.reports, amqp_uri, mgmt, redis_url, args.warmup, args.profile, max(1, args.batch))
        for _ in range(args.runs)
    ]
    median = {s: statistics.median(r["cpu_ms_per_report"][s] for r in results) for s in STEPS}
    out = {"runs": results, "median_cpu_ms_per_report": median}
    for step in STEPS:
        print(f"  {step:24} {median[step]:8.3f} ms CPU per report")
    print(f"  {'total':24} {sum(median.values()):8.3f} ms   (load average {os.getloadavg()[0]:.1f})")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
