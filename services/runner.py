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


def run_service(name: str) -> None:
    """Run one service in this process until SIGTERM/SIGINT (eventlet already patched:
    see services/serve.py)."""
    import eventlet
    from nameko.runners import ServiceRunner

    from shared.config import get_settings
    from shared.logs import configure_logging, get_logger
    from shared.metrics import serve_metrics

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level, service=name)
    log = get_logger("gridbus.runner")
    module_name, cls_name = SERVICE_CLASSES[name].split(":")
    service_cls = getattr(importlib.import_module(module_name), cls_name)

    runner = ServiceRunner(settings.nameko_config())
    runner.add_service(service_cls)
    # served before the consumers start, with the known label sets at 0: the first event counts
    serve_metrics(known_labels(name, next(iter(runner.containers))), settings.metrics_port(name), settings.metrics_host)

    stopping = eventlet.event.Event()

    def _stop(signum: int, _frame: object) -> None:
        if not stopping.ready():
            stopping.send(signum)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if name == "router":
        from services.router.reload import request_reload

        signal.signal(signal.SIGHUP, lambda _s, _f: request_reload())
    runner.start()
    log.info("service_started", metrics_port=settings.metrics_port(name),
             http=f"{settings.intake_http_host}:{settings.intake_http_port}" if name == "intake" else None)
    while not stopping.ready():
        try:
            stopping.wait()
        except OSError:  # EINTR from a signal during wait
            continue
    log.info("service_stopping")
    with eventlet.Timeout(20, False):
        runner.stop()
    log.info("service_stopped")


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
