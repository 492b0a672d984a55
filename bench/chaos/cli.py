"""`gridbus chaos run`: a fault run on private servers (bench/chaos/run.py), its table
printed and its result written to bench/results/chaos-<time>.json."""

from __future__ import annotations

import signal
import sys

import click

from bench.chaos.run import TARGETS, ChaosRun, Scenario, default_faults, table_head, table_row


@click.group()
def chaos() -> None:
    """Fault runs: own RabbitMQ node and Redis (AOF), kill -9 under load, then checks."""


@chaos.command("run")
@click.option("--reports", type=int, default=3000, show_default=True, help="Reports offered over HTTP.")
@click.option("--rate", type=float, default=25.0, show_default=True, help="Reports per second.")
@click.option(
    "--faults",
    default=",".join(TARGETS),
    show_default=True,
    help="Comma-separated targets killed in this order (services, broker, redis); '' for none.",
)
@click.option(
    "--first", "first_s", type=float, default=8.0, show_default=True, help="Seconds into the load of the first fault."
)
@click.option(
    "--spacing",
    "spacing_s",
    type=float,
    default=15.0,
    show_default=True,
    help="Seconds between faults (a broker restart alone takes 12-15 s).",
)
@click.option(
    "--drain",
    "drain_s",
    type=float,
    default=120.0,
    show_default=True,
    help="Longest wait after the load for the queues to empty and cases to leave `registered`.",
)
@click.option("--runs", type=int, default=1, show_default=True, help="Repeat the run (fresh servers each time).")
@click.option("--seed", type=int, default=0, show_default=True, help="Restart delays (2-3 s) are drawn from it.")
@click.option("--keep", is_flag=True, help="Keep the run's directory (logs) even when it passed.")
@click.option("--log-level", default="WARNING", show_default=True, help="LOG_LEVEL of the services.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Result JSON [bench/results/chaos-<time>.json] (with --runs, one file per run).",
)
def run_cmd(
    reports: int,
    rate: float,
    faults: str,
    first_s: float,
    spacing_s: float,
    drain_s: float,
    runs: int,
    seed: int,
    keep: bool,
    log_level: str,
    out: str | None,
) -> None:
    """Offer REPORTS at RATE/s to a supervised stack (intake, router, sla, notifier, archiver
    on a PostgreSQL database of the run's own) on a private RabbitMQ node and Redis while
    killing each target once (restart 2-3 s later); then check that nothing accepted was
    lost, stuck, left without clocks, dispatched twice, dead-lettered for a transient reason
    or missing from the archive, and that every killed piece came back healthy. Exit 1 on
    any finding."""
    _run(ChaosRun, TARGETS, reports, rate, faults, first_s, spacing_s, drain_s, runs, seed, keep, out, log_level)


def _run(
    cls: type[ChaosRun],
    allowed: tuple[str, ...],
    reports: int,
    rate: float,
    faults: str,
    first_s: float,
    spacing_s: float,
    drain_s: float,
    runs: int,
    seed: int,
    keep: bool,
    out: str | None,
    log_level: str = "WARNING",
) -> None:
    from bench.common import result_path, write_result

    targets = tuple(t.strip() for t in faults.split(",") if t.strip())
    unknown = [t for t in targets if t not in allowed]
    if unknown:
        raise click.BadParameter(
            f"unknown target(s) {unknown}; choose from {', '.join(allowed)}", param_hint="--faults"
        )
    # SIGTERM (a CI timeout, `kill`) ends the run through its clean-up like Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    kind = "chaos-cluster" if cls is not ChaosRun else "chaos"
    rows, all_ok = [], True
    for i in range(runs):
        scenario = Scenario(
            reports=reports,
            rate=rate,
            drain_s=drain_s,
            seed=seed + i,
            log_level=log_level,
            faults=default_faults(targets, first_s, spacing_s, seed + i),
        )
        with cls(scenario, echo=click.echo, keep=keep) as run:
            result = run.execute()
        path = write_result(result, result_path(kind, out if runs == 1 else None))
        rows.append(table_row(result, f"{i + 1}: {reports}@{rate:g}/s, {len(targets)} faults"))
        all_ok &= result["ok"]
        click.echo(f"result: {path}" + ("" if result["ok"] else f"  (logs kept in {result['workdir']})"))
    click.echo(table_head())
    for row in rows:
        click.echo(row)
    if not all_ok:
        raise SystemExit(1)


@chaos.command("cluster")
@click.option("--reports", type=int, default=1500, show_default=True, help="Reports offered over HTTP.")
@click.option("--rate", type=float, default=20.0, show_default=True, help="Reports per second.")
@click.option(
    "--faults",
    default="rabbit-node,redis-master",
    show_default=True,
    help="Comma-separated targets in this order: rabbit-node, redis-master, or a service.",
)
@click.option("--first", "first_s", type=float, default=10.0, show_default=True)
@click.option("--spacing", "spacing_s", type=float, default=30.0, show_default=True)
@click.option("--drain", "drain_s", type=float, default=120.0, show_default=True)
@click.option("--runs", type=int, default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the run's directory (logs) even when it passed.")
@click.option("--log-level", default="WARNING", show_default=True, help="LOG_LEVEL of the services.")
@click.option("--out", type=click.Path(dir_okay=False), default=None)
def cluster_cmd(
    reports: int,
    rate: float,
    faults: str,
    first_s: float,
    spacing_s: float,
    drain_s: float,
    runs: int,
    seed: int,
    keep: bool,
    log_level: str,
    out: str | None,
) -> None:
    """The same checks on a 3-node RabbitMQ cluster (behind a TCP balancer) and Redis
    master + replica + 3 Sentinels: one RabbitMQ node lost (20 s, then it rejoins) and the
    Redis master killed so that the Sentinels fail over, under load."""
    from bench.chaos.cluster import CLUSTER_TARGETS, ClusterRun

    _run(
        ClusterRun,
        CLUSTER_TARGETS,
        reports,
        rate,
        faults,
        first_s,
        spacing_s,
        drain_s,
        runs,
        seed,
        keep,
        out,
        log_level,
    )


COMMANDS = [chaos]
