"""The compact Redis encoding of a case's clocks (msgpack), split in two:

- the **firing document** (`pack_doc` / `unpack_doc`): exactly what firing a timer and
  applying a lifecycle event need — the case's category, severity, filing condition,
  grid, correlation id and status, its orders and their clocks. Positional arrays with
  trailing defaults left out; ids derivable from the case id (order `<case>/<round>/<dept>`,
  clock `<round>/<dept>/<a|h|e>`, ledger id) are not stored; instants are whole
  milliseconds relative to the first order's dispatch; a canonical UUID correlation id is
  16 bytes. About 110 bytes for a freshly dispatched one-department case (JSON was 790).
- the **history** (`pack_history` / `unpack_history`): the applied message ids (8-byte
  digests, `state.seen_id`) and the case's log, as a stream of msgpack items, so firing
  can *append* its log entries without reading them; rewritten and trimmed (SEEN_KEPT,
  LOG_KEPT) whenever a lifecycle event is applied. Not needed to fire.

A document from before this encoding (JSON, starts with `{`) is still read.
"""
from __future__ import annotations

import json
import uuid
from typing import Any

import msgpack

from services.sla.state import (
    LETTER,
    LOG_KEPT,
    SEEN_KEPT,
    CaseClocks,
    Clock,
    Order,
    clock_id,
    seen_id,
)
from shared.models import CaseStatus

FORMAT = 1
KIND_OF = {v: k for k, v in LETTER.items()}
STATES = ("running", "paused", "stopped", "breached")
STATUSES = tuple(s.value for s in CaseStatus)
MODES = ("service", "management", "enforcement")

# trailing positions at these defaults are left out
_ORDER_DEFAULTS = (None, None, None, None, 0, None, [], 1, None, True, None, None, None, 0, 0, "", False)
_CLOCK_DEFAULTS = (None, 1, 0, None, None, None, None, 0, 0, False, None, 0, None, "", None, None)


def _trim(values: list[Any], defaults: tuple[Any, ...], keep: int) -> list[Any]:
    n = len(values)
    while n > keep and _same(values[n - 1], defaults[n - 1]):
        n -= 1
    return values[:n]


def _same(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool) and (a is None) == (b is None)


def _num(x: float) -> int | float:
    return int(x) if x == int(x) else x


def _t(ts: float | None, base: int) -> int | None:
    return None if ts is None else round(ts * 1000) - base


def _ts(v: int | None, base: int) -> float | None:
    return None if v is None else (base + v) / 1000


def _corr(corr: str) -> str | bytes:
    try:
        u = uuid.UUID(corr)
    except ValueError:
        return corr
    return u.bytes if str(u) == corr else corr


def _pm(wf: float) -> int | float:
    p = round(wf * 1000)
    return p if p / 1000 == wf else wf


def _enum(value: str | None, table: tuple[str, ...]) -> int | str | None:
    if value is None:
        return None
    return table.index(value) if value in table else value


def _unenum(value: int | str | None, table: tuple[str, ...]) -> str | None:
    return table[value] if isinstance(value, int) else value


def pack_doc(case: CaseClocks) -> bytes:
    cid = case.case_id
    base = round(next(iter(case.orders.values())).dispatched * 1000) if case.orders else 0
    orders = []
    for o in case.orders.values():
        clocks = []
        for c in case.clocks.values():
            if c.order_id != o.order_id:
                continue
            lid = c.lid
            if lid and lid == f"{cid}|{c.id}|{c.token}":
                lid = 1
            clocks.append(_trim([
                c.letter, c.token, STATES.index(c.state), c.limit, _pm(c.wf), _t(c.due, base), _t(c.warn_at, base),
                _t(c.start, base), _num(c.used), c.warned, None if c.level == o.level else c.level, c.step,
                _t(c.ended, base), c.reason, lid or None,
                None if c.id == clock_id(cid, o.order_id, c.kind) else c.id,
            ], _CLOCK_DEFAULTS, 4))
        orders.append(_trim([
            None if o.order_id == f"{cid}/{o.round}/{o.dept}" else o.order_id, o.dept, o.level, o.policy,
            _t(o.dispatched, base), _enum(o.mode, MODES), clocks, o.round,
            None if o.street == case.street else o.street, o.active, _t(o.acked, base), _t(o.resolved, base),
            o.esc_level, o.esc_step, o.esc_repeats, o.esc_done, o.late,
        ], _ORDER_DEFAULTS, 4))
    # clocks not belonging to a known order (never made by the engine) are kept verbatim
    strays = [[k, vars(c)] for k, c in case.clocks.items() if c.order_id not in case.orders]
    grid: int | str = int(case.grid) if case.grid.isdigit() and str(int(case.grid)) == case.grid else case.grid
    doc = [FORMAT, _corr(case.corr), case.cat, grid, base, orders,
           None if case.sev == "normal" else case.sev,
           None if case.status == CaseStatus.dispatched.value else _enum(case.status, STATUSES),
           case.cond, None if case.street == case.grid[:9] else case.street, strays or None]
    while doc[-1] is None:
        doc.pop()
    return msgpack.packb(doc, use_bin_type=True)


def unpack_doc(case_id: str, raw: bytes | str) -> CaseClocks:
    if isinstance(raw, str):
        raw = raw.encode()
    if raw[:1] == b"{":  # the JSON document of before (history inside, message ids in full)
        case = CaseClocks.from_dict(json.loads(raw))
        case.seen = [seen_id(m) for m in case.seen]
        return case
    d = msgpack.unpackb(raw, raw=False)
    d += [None] * (11 - len(d))
    _fmt, corr, cat, grid, base, orders, sev, status, cond, street, strays = d
    grid = str(grid)
    case = CaseClocks(case_id=case_id, corr=str(uuid.UUID(bytes=corr)) if isinstance(corr, bytes) else corr,
                      cat=cat, sev=sev or "normal", cond=cond, grid=grid, street=street or grid[:9],
                      status=_unenum(status, STATUSES) if status is not None else CaseStatus.dispatched.value)
    for ov in orders:
        ov = ov + list(_ORDER_DEFAULTS[len(ov):])
        oid, dept, level, policy, disp, mode, clocks, rnd, ostreet, active, acked, resolved, \
            esc_level, esc_step, esc_repeats, esc_done, late = ov
        order_id = oid or f"{case_id}/{rnd}/{dept}"
        order = Order(order_id=order_id, dept=dept, street=ostreet or case.street, level=level, policy=policy,
                      round=rnd, dispatched=_ts(disp, base), active=active, acked=_ts(acked, base),  # type: ignore[arg-type]
                      resolved=_ts(resolved, base), mode=_unenum(mode, MODES), esc_level=esc_level,
                      esc_step=esc_step, esc_repeats=esc_repeats, esc_done=esc_done, late=late)
        case.orders[order_id] = order
        if dept not in case.depts:
            case.depts.append(dept)
        for cv in clocks:
            cv = cv + list(_CLOCK_DEFAULTS[len(cv):])
            letter, token, state, limit, wf, due, warn_at, start, used, warned, clevel, step, ended, reason, \
                lid, cid = cv
            kind = KIND_OF[letter]
            cid = cid or clock_id(case_id, order_id, kind)
            case.clocks[cid] = Clock(
                id=cid, order_id=order_id, kind=kind, level=order.level if clevel is None else clevel,
                limit=limit, wf=wf / 1000 if isinstance(wf, int) else wf, start=_ts(start, base), used=used,
                state=STATES[state], warned=warned, token=token, step=step, due=_ts(due, base),
                warn_at=_ts(warn_at, base), ended=_ts(ended, base), reason=reason,
                lid=f"{case_id}|{cid}|{token}" if lid == 1 else (lid or ""))
    for k, v in strays or []:
        case.clocks[k] = Clock(**v)
    return case


def pack_history(case: CaseClocks) -> bytes:
    """The whole history (trimmed): applied message ids, then the log."""
    out = bytearray()
    for s in case.seen[-SEEN_KEPT:]:
        out += msgpack.packb(bytes.fromhex(s), use_bin_type=True)
    out += pack_log(case.log[-LOG_KEPT:])
    return bytes(out)


def pack_log(entries: list[list[Any]]) -> bytes:
    """Log entries to append to a history."""
    return b"".join(msgpack.packb(e, use_bin_type=True) for e in entries)


def unpack_history(case: CaseClocks, raw: bytes | None) -> None:
    """Put the stored history into `case` (a case without one keeps what its document had)."""
    if not raw:
        return
    case.seen, case.log = [], []
    for item in _items(raw):
        if isinstance(item, bytes):
            case.seen.append(item.hex())
        else:
            case.log.append(item)
    del case.seen[:-SEEN_KEPT]
    del case.log[:-LOG_KEPT]


def _items(raw: bytes) -> Any:
    u = msgpack.Unpacker(raw=False)
    u.feed(raw)
    return u
