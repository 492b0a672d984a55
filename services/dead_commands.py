"""`gridbus dead list|show|replay`: the operator's tools for dead-letter queues
(shared/deadletters.py does the work; replay is idempotent by message id)."""

from __future__ import annotations

import json

import click

from shared.config import get_settings

COMMANDS: list[click.Command] = []
REASON_HELP = "Only this error kind (e.g. delivery_limit), or reason text containing it."


@click.group()
def dead() -> None:
    """Dead letters: what sits in `<queue>.dead`, why, and moving it back."""


COMMANDS.append(dead)


def _dead_queues() -> list[str]:
    from shared import topology

    return [q.name for q in topology.default_topology().queues if q.kind == "dead"]


def _queue_arg(queue: str) -> str:
    from shared.deadletters import dead_queue_of

    name = dead_queue_of(queue)
    if name not in _dead_queues():
        raise click.BadParameter(
            f"{queue!r} has no dead-letter queue in the topology (one of: {', '.join(q[:-5] for q in _dead_queues())})",
            param_hint="QUEUE",
        )
    return name


@dead.command("list")
@click.argument("queue", required=False)
@click.option("--all", "show_all", is_flag=True, help="Also list empty dead-letter queues.")
def dead_list(queue: str | None, show_all: bool) -> None:
    """Messages per dead-letter queue, counted by reason (error kind)."""
    from shared.deadletters import counts, depth

    uri = get_settings().amqp_uri
    queues = [_queue_arg(queue)] if queue else _dead_queues()
    total = 0
    for q in queues:
        n = depth(uri, q)
        if n is None:
            click.echo(f"{q:<34} (not declared: gridbus topology apply)")
            continue
        if not n and not show_all and not queue:
            continue
        by = counts(uri, q) if n else {}
        total += n
        click.echo(f"{q:<34} {n:>6}  " + "  ".join(f"{k}={v}" for k, v in sorted(by.items())))
    if not total:
        click.echo("no dead letters")


@dead.command("show")
@click.argument("queue")
@click.option("--reason", default=None, help=REASON_HELP)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message (headers and body).")
def dead_show(queue: str, reason: str | None, limit: int, as_json: bool) -> None:
    """Print dead letters of QUEUE with their headers and body; they stay in the queue."""
    from shared.deadletters import peek

    for dl in peek(get_settings().amqp_uri, _queue_arg(queue), limit=limit, reason=reason):
        d = dl.to_dict()
        if as_json:
            click.echo(json.dumps(d, ensure_ascii=False, default=str))
            continue
        try:
            case_id = json.loads(dl.body).get("case_id", "")
        except (ValueError, AttributeError):
            case_id = ""
        click.echo(f"--- {d['message_id'] or '(no message id)'}  case {case_id or '-'}  [{dl.kind}] {dl.reason}")
        for k, v in sorted(d["headers"].items()):
            click.echo(f"    {k}: {json.dumps(v, ensure_ascii=False, default=str)}")
        body = d["body"] if isinstance(d["body"], str) else repr(d["body"])
        click.echo(f"    body: {body[:2000]}")


@dead.command("replay")
@click.argument("queue")
@click.option("--reason", default=None, help=REASON_HELP)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many [all].")
def dead_replay(queue: str, reason: str | None, limit: int | None) -> None:
    """Move dead letters of QUEUE back to QUEUE (same message ids, so consumers drop any
    they already applied); each leaves the dead queue only once the broker confirmed it."""
    from shared.deadletters import replay

    result = replay(get_settings().amqp_uri, _queue_arg(queue), reason=reason, limit=limit)
    click.echo(f"replayed {len(result.replayed)} to {result.target}; {result.kept} not matching left in {result.queue}")
    if result.failed:
        raise click.ClickException(f"stopped: {result.failed}")
