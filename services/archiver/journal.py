"""The journal's compact copy of a message: each fact is stored once.

The journal row's columns carry the envelope (message id, kind, case id, when); the body
keeps the rest, without the values at their model's default (pydantic fills them back in) and
without what a derived table holds already:

- `case_recorded`: the document is the `cases` row (its timeline `case_timeline`), so
  only the version and the idempotency key stay;
- `clocks_recorded`: the ledger entries are `ledger` rows, the ended ones `ledger_ended`,
  the document `clocks`; the indicator increments (`counts`) stay: they are summed
  into `indicator_months` and kept nowhere else one by one;
- case events (`case_registered`, `case_dispatched`, `case_updated`, …): the case summary
  they carry is the case's own (`cases.doc`);
- `notification_sent` and `dispatch_order`: the `notifications` and `orders` row is the
  whole message.

`expand` gives back the message as its model parses it, as far as the body holds it
(tests/integration/test_archiver.py checks the round trip).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

ENVELOPE = ("message_id", "case_id", "event", "kind", "occurred_at")
IN_OTHER_TABLES = ("notification_sent", "dispatch_order")


def compact(kind: str, body: dict[str, Any], parsed: BaseModel | None = None) -> dict[str, Any]:
    """What the journal stores of a message; `parsed` is its model (events), whose
    defaults are left out."""
    if kind in IN_OTHER_TABLES:
        return {}
    if kind == "case_recorded":
        return {k: body[k] for k in ("version", "idempotency_key") if body.get(k) is not None}
    drop = set(ENVELOPE)
    if kind == "clocks_recorded":
        drop |= {"doc", "history", "ledger", "ledger_ended"}
    elif kind.startswith("case_"):
        drop.add("case")
    full = parsed.model_dump(mode="json", exclude_defaults=True) if parsed is not None else body
    return {k: v for k, v in full.items() if k not in drop}


def expand(
    kind: str, message_id: str, case_id: str | None, occurred_at: datetime, body: dict[str, Any]
) -> dict[str, Any]:
    """The journal row as a message body again (the parts stored elsewhere left out)."""
    out: dict[str, Any] = {"message_id": message_id, "case_id": case_id or "", "occurred_at": occurred_at.isoformat()}
    out["kind" if kind == "dispatch_order" else "event"] = kind
    return {**out, **body}
