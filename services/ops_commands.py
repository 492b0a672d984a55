"""Cross-service operator commands: topology, running the stack, the demo."""
from __future__ import annotations

import json

import click

from shared.config import get_settings

COMMANDS: list[click.Command] = []


def command(fn: click.Command) -> click.Command:
    COMMANDS.append(fn)
    return fn


@command
@click.group()
def topology() -> None:
    """RabbitMQ exchanges, queues and bindings."""


@topology.command("apply")
def topology_apply() -> None:
    """Declare every exchange, queue and binding (idempotent)."""
    from shared import topology as topo

    t = topo.apply(get_settings().amqp_uri)
    click.echo(f"declared {len(t.exchanges)} exchanges, {len(t.queues)} queues, {len(t.bindings)} bindings")


@topology.command("definitions")
@click.option("--vhost", default="/")
def topology_definitions(vhost: str) -> None:
    """Print RabbitMQ definitions JSON generated from the topology module."""
    from shared import topology as topo

    click.echo(json.dumps(topo.definitions(topo.default_topology(), vhost), indent=2, ensure_ascii=False))
