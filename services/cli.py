"""The `gridbus` command.

Each service folder may hold a `commands.py` exposing `COMMANDS: list[click.Command]`;
they are added here, so a service's operator commands live beside its code.
"""

from __future__ import annotations

import importlib

import click

SERVICES = ("intake", "router", "sla", "notifier", "archiver")


@click.group()
def main() -> None:
    """gridbus: real-time dispatch for grid-based urban management."""


def _register_service_commands() -> None:
    for name in SERVICES:
        try:
            module = importlib.import_module(f"services.{name}.commands")
        except ModuleNotFoundError as exc:
            if exc.name == f"services.{name}.commands":
                continue
            raise
        for command in getattr(module, "COMMANDS", []):
            main.add_command(command)
    from bench.commands import COMMANDS as BENCH_COMMANDS
    from services import dead_commands, ops_commands

    for command in [*ops_commands.COMMANDS, *dead_commands.COMMANDS, *BENCH_COMMANDS]:
        main.add_command(command)
    # intake's reports over cases join sla's `report` group (one `gridbus report …` for operators)
    from services.intake.reports.commands import REPORT_COMMANDS

    report = main.commands.get("report")
    if isinstance(report, click.Group):
        for command in REPORT_COMMANDS:
            report.add_command(command)


_register_service_commands()


if __name__ == "__main__":
    main()
