"""Cross-service operator commands: topology, running the stack, the demo."""

from __future__ import annotations

import json
import time
from typing import TypeVar

import click

from services.runner import SERVICE_CLASSES
from shared.config import get_settings

C = TypeVar("C", bound=click.Command)  # a command or a group: the decorator gives it back as it is

COMMANDS: list[click.Command] = []


def command(fn: C) -> C:
    COMMANDS.append(fn)
    return fn


@command
@click.group()
def topology() -> None:
    """RabbitMQ exchanges, queues and bindings."""


@topology.command("apply")
@click.option(
    "--users/--no-users",
    default=True,
    help="Also create each department's RabbitMQ user with its permissions (management API).",
)
def topology_apply(users: bool) -> None:
    """Declare every exchange, queue and binding, and the departments' users (idempotent).

    A department user's password comes from GRIDBUS_DEPT_PASSWORD_<CODE> (or _FILE);
    otherwise a new user gets a generated one, printed here once.
    """
    from shared import topology as topo
    from shared.broker_users import apply_users
    from shared.departments import load_department_codes

    settings = get_settings()
    t = topo.apply(settings.amqp_uri)
    click.echo(f"declared {len(t.exchanges)} exchanges, {len(t.queues)} queues, {len(t.bindings)} bindings")
    if users:
        for r in apply_users(settings.rabbitmq_management_url, settings.amqp_uri, load_department_codes()):
            extra = f"  password (shown once): {r.password}" if r.password else ""
            click.echo(f"user {r.user}: {'created' if r.created else 'permissions updated'}{extra}")


@topology.command("definitions")
@click.option("--vhost", default="/")
def topology_definitions(vhost: str) -> None:
    """Print RabbitMQ definitions JSON generated from the topology module."""
    from shared import topology as topo

    click.echo(json.dumps(topo.definitions(topo.default_topology(), vhost), indent=2, ensure_ascii=False))


@command
@click.command("run")
@click.argument("service", type=click.Choice(list(SERVICE_CLASSES)))
def run(service: str) -> None:
    """Run one service in the foreground (what a container runs)."""
    import os
    import sys

    # a fresh interpreter: eventlet must patch before anything is imported
    os.execv(sys.executable, [sys.executable, "-m", "services.serve", service])


def startup_warnings() -> list[str]:
    """Configuration warnings the services would each log at start (e.g. an unknown
    holiday year), collected once here so that `gridbus up` shows each one once."""
    import warnings

    from shared.worktime import load_calendar

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import structlog

        structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # the warnings, not their log lines
        load_calendar()
    return list(dict.fromkeys(str(w.message) for w in caught))


@command
@click.command("up")
@click.option("--demo", is_flag=True, help="Feed the demo reports once the stack is up.")
@click.option("--exit-after-demo", is_flag=True, help="Stop the stack after the demo (for scripts).")
@click.option(
    "--log-file",
    default=".gridbus/services.log",
    show_default=True,
    help="Where the services' logs go ('-': this terminal).",
)
@click.option(
    "--reset/--no-reset",
    default=True,
    show_default=True,
    help="Withdraw the previous demo's open cases first, so that the demo dispatches anew.",
)
def up(demo: bool, exit_after_demo: bool, log_file: str, reset: bool) -> None:
    """Run the services (the bridge too when it is configured) in the foreground,
    restarting any that dies (with back-off); Ctrl-C or SIGTERM stops them all and waits
    for them.

    RabbitMQ, Redis or PostgreSQL not answering: started by Docker Compose where Docker
    exists, otherwise privately from the installed binaries (services/localservers.py)."""
    from pathlib import Path

    from services import demo as demo_mod
    from services import localservers
    from services.runner import Stop, Supervisor, stop_on_signals

    stop_on_signals()
    missing = demo_mod.missing_dependencies(get_settings())
    settings = get_settings()  # missing_dependencies may have pointed us at a compose broker
    endpoints = demo_mod.dependency_endpoints(settings)
    absent = [n for n in missing if not localservers.installed(n)]
    problems = [demo_mod.DEPENDENCY_HINTS[n].format(*endpoints[n]) for n in missing]
    if absent:
        problems.append(localservers.install_hint(absent))
    problems += demo_mod.busy_ports(settings)
    if absent or problems[len(missing) :]:
        for p in problems:
            click.echo(p, err=True)
        raise SystemExit(2)
    private = localservers.Private(Path(".gridbus/data"))
    if missing:
        click.echo(
            f"{', '.join(missing)} not answering and no Docker: starting private server(s) from the installed "
            f"binaries, data in {private.base}/ (log {private.log_path}); they stop with gridbus"
        )
        try:
            private.start(
                missing, settings.amqp_uri, settings.rabbitmq_management_url, settings.redis_url, settings.database_url
            )
            if "postgres" in missing:
                from services.archiver import db

                db.ensure_database(settings.database_url)
                db.migrate(settings.database_url)
        except BaseException as exc:  # Ctrl-C or SIGTERM (Stop) included: stop what did start
            private.graceful_stop()
            if isinstance(exc, (KeyboardInterrupt, Stop)):
                raise SystemExit(1) from None
            raise click.ClickException(f"could not start a private server: {exc} (see {private.log_path})") from None
    for warning in startup_warnings():
        click.echo(f"warning: {warning}", err=True)
    log_handle = None
    if log_file != "-":
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        log_handle = open(log_file, "a", encoding="utf-8")
    supervisor = Supervisor(
        stdout=log_handle.fileno() if log_handle else None, echo=lambda line: click.echo(line, err=True)
    )
    try:
        procs = supervisor.start()
        click.echo("started " + ", ".join(f"{n} (pid {p})" for n, p in supervisor.pids().items()), err=True)
        try:
            demo_mod.wait_until_ready(settings, procs)
        except SystemExit:
            if log_handle:
                log_handle.flush()
                tail = Path(log_file).read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
                click.echo("\n".join(tail), err=True)
            raise
        click.echo(
            f"gridbus is up: intake API http://{settings.intake_http_host}:{settings.intake_http_port}, "
            f"console /console, metrics on :{settings.intake_metrics_port}-{settings.notifier_metrics_port}"
            f"{f', service logs in {log_file}' if log_handle else ''}. Ctrl-C stops."
        )
        if demo:
            demo_mod.run_demo(settings, echo=click.echo, reset=reset)
            click.echo("")
            for line in demo_mod.next_steps(settings, log_file if log_handle else None):
                click.echo(line)
            if exit_after_demo:
                if not demo_mod.wait_for_notifier(settings):
                    click.echo("(the notifier was still busy; it finishes its deliveries at the next start)", err=True)
                return
        while True:  # a service that exits is restarted (see its log for why it exited)
            supervisor.poll()
            time.sleep(0.5)
    except (KeyboardInterrupt, Stop):
        click.echo("stopping…", err=True)
    finally:
        supervisor.stop()
        private.graceful_stop()
        click.echo("stopped", err=True)
        if log_handle:
            log_handle.close()


@command
@click.command("demo")
@click.option(
    "--reset/--no-reset",
    default=True,
    show_default=True,
    help="Withdraw the previous demo's open cases first, so that the demo dispatches anew.",
)
def demo(reset: bool) -> None:
    """Feed a running stack a few realistic reports and print what happens to each."""
    from services import demo as demo_mod

    settings = get_settings()
    demo_mod.run_demo(settings, echo=click.echo, reset=reset)
    click.echo("")
    for line in demo_mod.next_steps(settings, None):
        click.echo(line)


def _table(channels: bool) -> str:
    """README's tables from the settings object (shared/config.py): a secret may also come
    from the file named by `<VARIABLE>_FILE`, and its default is not shown."""
    from pydantic import SecretStr

    from shared.config import Settings, marked, variable

    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if marked(field, "channel") != channels:
            continue
        default = "" if field.annotation is SecretStr else "./config" if name == "config_dir" else field.default
        secret = " (or `_FILE`)" if marked(field, "secret") else ""
        rows.append(f"| `{variable(name, field)}`{secret} | `{default}` | {field.description} |")
    return "\n".join(rows)


def settings_table() -> str:
    """The configuration table of README.md."""
    return _table(channels=False)


def channel_settings_table() -> str:
    """README's table of the notification channels' settings."""
    return _table(channels=True)


@command
@click.command("config")
def config_table() -> None:
    """Print every configuration variable with its default (README's tables)."""
    click.echo(settings_table())
    click.echo()
    click.echo(channel_settings_table())


@command
@click.group()
def audit() -> None:
    """The audit stream: every event, kept by RabbitMQ."""


@audit.command("show")
@click.option("--case", "case_id", help="Only this case's events.")
@click.option("--offset", default="first", help="first | last | next | a stream offset number.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
def audit_show(case_id: str | None, offset: str, as_json: bool) -> None:
    """Print events from the audit stream (oldest first)."""
    from shared.audit import read_audit

    start: str | int = int(offset) if offset.isdigit() else offset
    for event in read_audit(get_settings().amqp_uri, start, case_id):
        if as_json:
            click.echo(json.dumps(event, ensure_ascii=False))
            continue
        what = event.get("event", "?")
        detail = {
            k: event[k]
            for k in ("to_status", "action", "actor", "dept", "deadline", "from_level", "to_level", "reason", "note")
            if event.get(k) not in (None, "", [])
        }
        if what == "case_dispatched":
            detail["to"] = [f"{a['dept']}@L{a['level']}" for a in event.get("assignments", [])]
        click.echo(
            f"{event.get('occurred_at', '')[:19]}  {event.get('case_id', '')}  {what:<18} "
            f"{json.dumps(detail, ensure_ascii=False)}"
        )


@command
@click.command("rebuild")
@click.option(
    "--catch-up/--no-catch-up",
    default=True,
    help="First archive the tail of the gridbus.audit stream the archive has not seen.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def rebuild(catch_up: bool, quiet: bool) -> None:
    """Restore Redis from the archive after it lost everything (idempotent; run with the
    services stopped, then start them): cases, case numbers, clocks and timers, ledger,
    indicators, notifier done-markers, API keys."""
    from zoneinfo import ZoneInfo

    from tqdm import tqdm

    from services import rebuild as rb
    from services.archiver import db
    from services.sla.deadlines import Deadlines
    from shared.departments import load_departments
    from shared.grid import load_grid
    from shared.policies import load_policies
    from shared.redisdb import connect
    from shared.worktime import load_calendar

    settings = get_settings()
    tz = ZoneInfo(settings.timezone)

    def progress(items, desc, total):
        return items if quiet else tqdm(items, desc=desc, total=total, unit=" rows", leave=True)

    db.prepare(settings.database_url)
    client = connect(settings)
    with db.connect(settings.database_url) as conn:
        tail = 0
        if catch_up:
            tail = rb.catch_up(conn, settings.amqp_uri, tz, progress)
        report = rb.restore(conn, client, settings.case_hot_days, tz, progress)
        report.tail = tail
        conn.commit()
    deadlines = Deadlines(
        client, load_policies(), load_calendar(), lambda _e: None, grid=load_grid(), departments=load_departments()
    )
    _cases, report.timers = deadlines.rebuild()
    for line in report.lines():
        click.echo(line)
