"""Running services: one per process (`gridbus run <service>`), or all four
(`gridbus up`) as supervised child processes: restarted with back-off when one dies,
all stopped and waited for on Ctrl-C / SIGTERM."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from shared.metrics import Known

SERVICE_CLASSES = {
    "intake": "services.intake.service:IntakeService",
    "router": "services.router.service:RouterService",
    "sla": "services.sla.service:SlaService",
    "notifier": "services.notifier.service:NotifierService",
    "archiver": "services.archiver.service:ArchiverService",
    "bridge": "services.bridge.service:BridgeService",
}
#: run only when configured (BRIDGE_HTTP_URL / BRIDGE_AMQP_EXCHANGE): `gridbus up` and
#: `start_all` leave them out otherwise
OPTIONAL = ("bridge",)


def run_service(name: str) -> int:
    """Run one service in this process until SIGTERM/SIGINT (eventlet already patched:
    see services/serve.py). Returns 0 after a signal; ends the process with status 1 when
    the service can no longer do its job — its nameko container died (e.g. an extension's thread
    raised), or a fatal health check failed too long (consumers detached from the broker
    for CONSUMER_REATTACH_SECONDS, sla's tick loop stopped) — so that its supervisor
    restarts it instead of keeping a process that answers HTTP but consumes nothing."""
    import eventlet
    from nameko.runners import ServiceRunner

    from shared.config import get_settings
    from shared.health import HEALTH
    from shared.logs import configure_logging, get_logger
    from shared.metrics import serve_metrics

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level, service=name)
    log = get_logger("gridbus.runner")
    module_name, cls_name = SERVICE_CLASSES[name].split(":")
    service_cls = getattr(importlib.import_module(module_name), cls_name)

    started = eventlet.event.Event()
    # /healthz answers from the start, failing until every extension has started
    HEALTH.register("started", lambda: (started.ready(), "started" if started.ready() else "starting"))
    runner = ServiceRunner(settings.nameko_config())
    runner.add_service(service_cls)
    # served before the consumers start, with the known label sets at 0: the first event counts
    serve_metrics(
        known_labels(name, next(iter(runner.containers))),
        settings.metrics_port(name),
        settings.metrics_host,
        health=HEALTH,
    )

    stopping = eventlet.event.Event()  # sends ("signal", signum) or ("failed", reason)

    def _stop(signum: int, _frame: object) -> None:
        if not stopping.ready():
            stopping.send(("signal", signum))

    def _watch_containers() -> None:
        try:
            runner.wait()
            reason = "container stopped"
        except Exception as exc:  # what killed the container
            reason = f"container died: {type(exc).__name__}: {exc}"
        if not stopping.ready():
            stopping.send(("failed", reason))

    def _watchdog() -> None:
        while not stopping.ready():
            eventlet.sleep(WATCHDOG_INTERVAL_S)
            fatal = HEALTH.fatal()
            if fatal and not stopping.ready():
                stopping.send(("failed", "; ".join(fatal)))

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if name == "router":
        from services.router.reload import request_reload

        signal.signal(signal.SIGHUP, lambda _s, _f: request_reload())
    runner.start()
    started.send(True)
    eventlet.spawn(_watch_containers)
    eventlet.spawn(_watchdog)
    log.info(
        "service_started",
        metrics_port=settings.metrics_port(name),
        http=f"{settings.intake_http_host}:{settings.intake_http_port}" if name == "intake" else None,
    )
    while not stopping.ready():
        try:
            stopping.wait()
        except OSError:  # EINTR from a signal during wait
            continue
    why, detail = stopping.wait()
    if why == "failed":
        log.critical("service_failed", reason=detail, action="exiting so that the supervisor restarts it")
        # unacked messages go back to the queue when the connection drops: no graceful stop,
        # and no waiting on threads that may be what is stuck (a kill can hang in them)
        with eventlet.Timeout(3, False):
            runner.kill()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    log.info("service_stopping")
    with eventlet.Timeout(20, False):
        runner.stop()
    log.info("service_stopped")
    return 0


WATCHDOG_INTERVAL_S = 1.0


def known_labels(name: str, container: object) -> "Known":
    """The label values a service's metrics start with at 0 (shared/metrics.py `Known`)."""
    from services.notifier.channels.base import ChannelName
    from shared.catalog import load_catalog
    from shared.departments import load_department_codes
    from shared.grid import load_grid
    from shared.metrics import Known

    entrypoints = sorted({e.method_name for e in getattr(container, "entrypoints", ())})
    return Known(
        service=name,
        entrypoints=tuple(entrypoints),
        depts=tuple(load_department_codes()),
        streets=tuple(load_grid().streets),
        category_classes=tuple(load_catalog().class_codes()),
        channels=tuple(c.value for c in ChannelName),
    )


def default_services(env: dict[str, str] | None = None) -> tuple[str, ...]:
    """The services `start_all` starts: the core ones, and the bridge when it is configured."""
    merged = {**os.environ, **(env or {})}
    bridge = bool(merged.get("BRIDGE_HTTP_URL") or merged.get("BRIDGE_AMQP_EXCHANGE"))
    return tuple(n for n in SERVICE_CLASSES if n not in OPTIONAL or (n == "bridge" and bridge))


def start_all(
    services: Sequence[str] | None = None, env: dict[str, str] | None = None, stdout: int | None = None
) -> list[subprocess.Popen]:
    """Start each service as its own child process (default: `default_services`)."""
    procs = []
    for name in services if services is not None else default_services(env):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "services.serve", name],
                env={**os.environ, **(env or {})},
                stdout=stdout,
                stderr=stdout,
            )
        )
    return procs


def stop_all(procs: Sequence[subprocess.Popen], timeout: float = 25.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Stop(Exception):
    """SIGTERM (or a second Ctrl-C) asked the supervisor to stop."""


class Supervisor:
    """The children of `gridbus up`: one process per service, each restarted with back-off
    when it dies (1 s doubling up to `backoff_max`; a child that ran `stable_after` seconds
    starts the back-off again from 1 s), so that one failing service — which exits on
    purpose when it can no longer do its job — does not take the whole stack down."""

    def __init__(
        self,
        services: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        stdout: Any = None,
        echo: Callable[[str], None] = print,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        stable_after: float = 60.0,
    ) -> None:
        self.services = list(services if services is not None else default_services(env))
        self.env, self.stdout, self.echo = env, stdout, echo
        self.backoff_base, self.backoff_max, self.stable_after = backoff_base, backoff_max, stable_after
        self.procs: dict[str, subprocess.Popen] = {}
        self.started_at: dict[str, float] = {}
        self.failures: dict[str, int] = {name: 0 for name in self.services}
        self.restart_at: dict[str, float] = {}
        self.restarts: dict[str, int] = {name: 0 for name in self.services}

    def _spawn(self, name: str) -> None:
        self.procs[name] = start_all([name], env=self.env, stdout=self.stdout)[0]
        self.started_at[name] = time.monotonic()

    def start(self) -> list[subprocess.Popen]:
        for name in self.services:
            self._spawn(name)
        return list(self.procs.values())

    def poll(self) -> None:
        """Notice dead children and restart those whose back-off has passed."""
        now = time.monotonic()
        for name, proc in list(self.procs.items()):
            if name in self.restart_at:
                if now >= self.restart_at[name]:
                    del self.restart_at[name]
                    self.restarts[name] += 1
                    self._spawn(name)
                    self.echo(f"{name} restarted (pid {self.procs[name].pid}, restart {self.restarts[name]})")
                continue
            code = proc.poll()
            if code is None:
                continue
            ran = now - self.started_at[name]
            self.failures[name] = 1 if ran >= self.stable_after else self.failures[name] + 1
            delay = min(self.backoff_max, self.backoff_base * 2 ** (self.failures[name] - 1))
            self.restart_at[name] = now + delay
            self.echo(f"{name} (pid {proc.pid}) exited with {code} after {ran:.0f} s; restarting in {delay:g} s")

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items() if p.poll() is None}

    def stop(self, timeout: float = 25.0) -> None:
        self.restart_at.clear()
        stop_all(list(self.procs.values()), timeout)


def stop_on_signals() -> None:
    """SIGTERM stops `gridbus up` the way Ctrl-C does: the first signal raises `Stop` in
    the main thread (whatever it is doing), later ones are ignored so that stopping the
    children is not itself interrupted."""

    def _handler(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
