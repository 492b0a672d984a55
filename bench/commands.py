"""`gridbus bench …`: the pipeline benchmark and the raw broker baseline.

Registered in services/cli.py from `bench.commands.COMMANDS`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

COMMANDS: list[click.Command] = []


def _settings():
    from shared.config import get_settings

    return get_settings()


@click.group()
def bench() -> None:
    """Benchmarks against the local RabbitMQ and Redis (each run in a throwaway vhost)."""


COMMANDS.append(bench)

from bench.chaos.cli import COMMANDS as CHAOS_COMMANDS  # noqa: E402 (`gridbus chaos …`)

COMMANDS.extend(CHAOS_COMMANDS)


@bench.command("pipeline")
@click.option("--rate", type=float, required=True, help="Reports offered per second (open loop).")
@click.option("--duration", type=float, default=20.0, show_default=True, help="Seconds of offering.")
@click.option("--transport", type=click.Choice(["http", "amqp"]), default="http", show_default=True)
@click.option("--concurrency", type=int, default=32, show_default=True, help="HTTP connections in the pool.")
@click.option(
    "--drain",
    "drain_s",
    type=float,
    default=None,
    help="Seconds to wait after the window for outstanding orders [max(10, duration)].",
)
@click.option(
    "--broker-count",
    type=int,
    default=3000,
    show_default=True,
    help="Messages per mode of the broker baseline run after the services stop.",
)
@click.option("--no-broker", is_flag=True, help="Skip the broker baseline (no ratio).")
@click.option("--profile", is_flag=True, help="py-spy record every service during the window.")
@click.option(
    "--trace",
    is_flag=True,
    help="Run the services under bench.trace: wall-clock timers around publish, Redis, parsing.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Result JSON file [bench/results/pipeline-<time>.json].",
)
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs).")
def pipeline_cmd(
    rate: float,
    duration: float,
    transport: str,
    concurrency: int,
    drain_s: float | None,
    broker_count: int,
    no_broker: bool,
    profile: bool,
    trace: bool,
    out: str | None,
    no_progress: bool,
) -> None:
    """Offer reports at RATE/s for DURATION s to a fresh four-service stack; measure
    throughput, latency to the department queue, backlog, errors, and the ratio to the
    raw broker measured in the same run."""
    from bench.common import result_path, write_result
    from bench.pipeline import run_pipeline, summary_lines

    s = _settings()
    result = run_pipeline(
        rate=rate,
        duration=duration,
        transport=transport,
        amqp_uri=s.amqp_uri,
        mgmt_url=s.rabbitmq_management_url,
        redis_url=s.redis_url,
        database_url=s.database_url,
        concurrency=concurrency,
        drain_s=drain_s,
        broker_count=broker_count,
        with_broker=not no_broker,
        profile=profile,
        trace=trace,
        progress=not no_progress,
        echo=click.echo,
    )
    path = write_result(result, result_path("pipeline", out))
    for line in summary_lines(result):
        click.echo(line)
    click.echo(f"result: {path}")


@bench.command("broker")
@click.option(
    "--size",
    type=int,
    default=1500,
    show_default=True,
    help="Message size in bytes (a dispatch order is about this size).",
)
@click.option("--count", type=int, default=5000, show_default=True, help="Messages per mode.")
@click.option(
    "--mode",
    "modes",
    multiple=True,
    type=click.Choice(["confirm_sync", "confirm_pipelined", "unconfirmed"]),
    help="Modes to run (repeatable) [all].",
)
@click.option(
    "--window", type=int, default=1000, show_default=True, help="Unconfirmed messages in flight for confirm_pipelined."
)
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None, help="Result JSON file [bench/results/broker-<time>.json]."
)
def broker_cmd(size: int, count: int, modes: tuple[str, ...], window: int, out: str | None) -> None:
    """Raw pika publish → quorum queue → consume: messages/s per hop, persistent,
    with per-message confirms, pipelined confirms, and none."""
    from bench.broker import MODES, broker_main
    from bench.common import result_path, write_result

    s = _settings()
    result = broker_main(s.amqp_uri, s.rabbitmq_management_url, size, count, modes or MODES, window, click.echo)
    path = write_result(result, result_path("broker", out))
    click.echo(json.dumps({m: r["hop_per_s"] for m, r in result["modes"].items()}))
    click.echo(f"result: {path}")


@bench.command("idle")
@click.option("--settle", type=float, default=10.0, show_default=True, help="Seconds after ready before measuring.")
@click.option("--window", type=float, default=30.0, show_default=True, help="Seconds measured.")
@click.option("--profile", is_flag=True, help="py-spy record every service during the window.")
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None, help="Result JSON file [bench/results/idle-<time>.json]."
)
def idle_cmd(settle: float, window: float, profile: bool, out: str | None) -> None:
    """A fresh stack left alone: CPU of each service at rest (target: all together < 2 %
    of one core), the timers that wake them, the broker traffic of its vhost."""
    from bench.common import result_path, write_result
    from bench.idle import run_idle, summary_lines

    s = _settings()
    result = run_idle(
        amqp_uri=s.amqp_uri,
        mgmt_url=s.rabbitmq_management_url,
        redis_url=s.redis_url,
        database_url=s.database_url,
        settle_s=settle,
        window_s=window,
        profile=profile,
        echo=click.echo,
    )
    path = write_result(result, result_path("idle", out))
    for line in summary_lines(result):
        click.echo(line)
    click.echo(f"result: {path}")


@bench.command("framework")
@click.option("--backlog", type=int, default=5000, show_default=True, help="Messages pre-filled for each run.")
@click.option("--warmup", type=int, default=200, show_default=True, help="Acks before the window opens.")
@click.option(
    "--variant",
    "variants",
    multiple=True,
    type=click.Choice(["nameko", "kombu", "kombu_eventlet", "amqp_batch", "nameko_prefetch"]),
    help="Consumers to run (repeatable) [all].",
)
@click.option(
    "--large-prefetch",
    type=int,
    default=100,
    show_default=True,
    help="Prefetch of amqp_batch (its batch size) and nameko_prefetch.",
)
@click.option("--profile", is_flag=True, help="Two more nameko runs under py-spy (200 Hz) for the breakdown.")
@click.option(
    "--baseline",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="A checkout (worktree) whose code each run also runs, just before this one's: a same-run before/after.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Result JSON file [bench/results/framework-<time>.json].",
)
def framework_cmd(
    backlog: int,
    warmup: int,
    variants: tuple[str, ...],
    large_prefetch: int,
    profile: bool,
    baseline: str | None,
    out: str | None,
) -> None:
    """The router's work drained from a backlog by nameko, a bare kombu and a bare py-amqp
    consumer, with and without the work: messages/s and CPU µs per message of the consumer
    and of RabbitMQ (bench/bench_framework.py)."""
    from bench.bench_framework import VARIANTS, run_framework, summary_lines
    from bench.common import result_path, write_result

    s = _settings()
    result = run_framework(
        s.amqp_uri,
        s.rabbitmq_management_url,
        s.redis_url,
        backlog=backlog,
        warmup=warmup,
        variants=variants or tuple(VARIANTS),
        profile=profile,
        large_prefetch=large_prefetch,
        baseline=Path(baseline) if baseline else None,
        echo=click.echo,
    )
    path = write_result(result, result_path("framework", out))
    for line in summary_lines(result)[len(result["runs"]) + 1 :]:
        click.echo(line)
    click.echo(f"result: {path}")
