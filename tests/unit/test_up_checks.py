"""`gridbus up`'s checks before it starts anything: a busy port is named with the
process holding it; configuration warnings are collected once."""

import os
import socket

from services.demo import busy_ports, port_holder
from services.ops_commands import startup_warnings
from shared.config import Settings


def test_a_busy_port_names_the_process_holding_it() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_holder(port).startswith(f"pid {os.getpid()} ")
        settings = Settings(
            intake_http_port=port,
            intake_metrics_port=0,
            router_metrics_port=0,
            sla_metrics_port=0,
            notifier_metrics_port=0,
        )
        problems = busy_ports(settings)
    assert len(problems) == 1
    assert problems[0].startswith(f"port {port} (intake's HTTP API, INTAKE_HTTP_PORT) is in use by pid {os.getpid()}")
    assert "set INTAKE_HTTP_PORT" in problems[0]


def test_free_ports_pass() -> None:
    assert (
        busy_ports(
            Settings(
                intake_http_port=0,
                intake_metrics_port=0,
                router_metrics_port=0,
                sla_metrics_port=0,
                notifier_metrics_port=0,
            )
        )
        == []
    )


def test_an_unknown_holiday_year_is_warned_once() -> None:
    from datetime import datetime

    from shared.worktime import load_calendar

    calendar = load_calendar()
    this_year = datetime.now(calendar.tz).year
    unknown = [y for y in (this_year, this_year + 1) if y not in calendar.known_years()]
    warnings = startup_warnings()
    assert [sum(f"holidays of {y} are unknown" in w for w in warnings) for y in unknown] == [1] * len(unknown)
    assert len(warnings) == len(unknown)
