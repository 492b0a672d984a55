"""Running services: one per process (`gridbus run <service>`), or all four
(`gridbus up`) as child processes that stop cleanly on Ctrl-C / SIGTERM."""
from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from shared.metrics import Known

SERVICE_CLASSES = {
    "intake": "services.intake.service:IntakeService",
    "router": "services.router.service:RouterService",
    "sla": "services.sla.service:SlaService",
    "notifier": "services.notifier.service:NotifierService",
}


def run_service(name: str) -> int:
    """Run one service in this process until SIGTERM/SIGINT (eventlet already patched:
    see services/serve.py). Returns the exit status: 0 after a signal, 1 when the service
    can no longer do its job — its nameko container died (e.g. an extension's thread
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
    serve_metrics(known_labels(name, next(iter(runner.containers))), settings.metrics_port(name), settings.metrics_host,
                  health=HEALTH)

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
    log.info("service_started", metrics_port=settings.metrics_port(name),
             http=f"{settings.intake_http_host}:{settings.intake_http_port}" if name == "intake" else None)
    while not stopping.ready():
        try:
            stopping.wait()
        except OSError:  # EINTR from a signal during wait
            continue
    why, detail = stopping.wait()
    if why == "failed":
        log.critical("service_failed", reason=detail, action="exiting so that the supervisor restarts it")
        # unacked messages go back to the queue when the connection drops; no graceful stop
        with eventlet.Timeout(3, False):
            runner.kill()
        return 1
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
    return Known(service=name, entrypoints=tuple(entrypoints), depts=tuple(load_department_codes()),
                 streets=tuple(load_grid().streets), category_classes=tuple(load_catalog().class_codes()),
                 channels=tuple(c.value for c in ChannelName))


def start_all(services: Sequence[str] = tuple(SERVICE_CLASSES), env: dict[str, str] | None = None,
              stdout: int | None = None) -> list[subprocess.Popen]:
    """Start each service as its own child process."""
    procs = []
    for name in services:
        procs.append(subprocess.Popen([sys.executable, "-m", "services.serve", name],
                                      env={**os.environ, **(env or {})}, stdout=stdout, stderr=stdout))
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
