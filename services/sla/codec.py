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
"""

from __future__ import annotations

from typing import Any

import msgpack

from services.sla.state import (
    LETTER,
    LOG_KEPT,
    SEEN_KEPT,
    CaseClocks,
    Clock,
    Order,
)
from shared.models import CaseStatus, Mode721

FORMAT = 1
KIND_OF = {v: k for k, v in LETTER.items()}
STATES = ("running", "paused", "stopped", "breached")
STATUSES = tuple(s.value for s in CaseStatus)
MODES = tuple(m.value for m in Mode721)  # stored by index, like STATUSES: the enum only ever grows at its end

# trailing positions at these defaults are left out
_ORDER_DEFAULTS: tuple[Any, ...] = (
    None,
    None,
    None,
    None,
    0,
    None,
    [],
    1,
    None,
    True,
    None,
    None,
    None,
    0,
    0,
    "",
    False,
)
_CLOCK_DEFAULTS: tuple[Any, ...] = (None, 1, 0, None, None, None, None, 0, 0, False, None, 0, None, "", None, None)


_STATE_NO = {s: i for i, s in enumerate(STATES)}
_MODE_NO = {m: i for i, m in enumerate(MODES)}
_STATUS_NO = {s: i for i, s in enumerate(STATUSES)}
_HEX = frozenset("0123456789abcdef-")


def _trim(values: list[Any], defaults: tuple[Any, ...], keep: int) -> list[Any]:
    n = len(values)
    while n > keep:
        v, d = values[n - 1], defaults[n - 1]
        if not (v is d or (v == d and type(v) is type(d))):
            break
        n -= 1
    return values[:n] if n < len(values) else values


def _num(x: float) -> int | float:
    return int(x) if x == int(x) else x


def _corr(corr: str) -> str | bytes:
    """A canonical (lower-case, hyphenated) UUID as its 16 bytes, anything else as it is."""
    if len(corr) == 36 and corr[8] == corr[13] == corr[18] == corr[23] == "-" and _HEX.issuperset(corr):
        return bytes.fromhex(corr.replace("-", ""))
    return corr


def _uncorr(v: str | bytes) -> str:
    if isinstance(v, bytes):
        h = v.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return v


def _pm(wf: float) -> int | float:
    p = round(wf * 1000)
    return p if p / 1000 == wf else wf


def pack_doc(case: CaseClocks) -> bytes:
    cid = case.case_id
    orders_in = case.orders
    base = round(next(iter(orders_in.values())).dispatched * 1000) if orders_in else 0
    by_order: dict[str, list[Clock]] = {}
    strays = []
    for k, c in case.clocks.items():
        if c.order_id in orders_in:
            by_order.setdefault(c.order_id, []).append(c)
        else:  # a clock of no known order (never made by the engine) is kept verbatim
            strays.append([k, vars(c)])
    orders = []
    for o in orders_in.values():
        oid = o.order_id
        short = oid[len(cid) + 1 :] if oid.startswith(cid + "/") else oid
        clocks = []
        for c in by_order.get(oid, ()):
            letter, token = LETTER[c.kind], c.token
            lid: str | int | None = c.lid
            if lid and lid == f"{cid}|{c.id}|{token}":
                lid = 1
            due, warn_at, start, ended = c.due, c.warn_at, c.start, c.ended
            head = [
                letter,
                token,
                _STATE_NO[c.state],
                c.limit,
                _pm(c.wf),
                None if due is None else round(due * 1000) - base,
                None if warn_at is None else round(warn_at * 1000) - base,
                None if start is None else round(start * 1000) - base,
            ]
            if (
                c.used
                or c.warned
                or c.level != o.level
                or c.step
                or ended is not None
                or c.reason
                or lid
                or c.id != f"{short}/{letter}"
            ):
                head += [
                    _num(c.used),
                    c.warned,
                    None if c.level == o.level else c.level,
                    c.step,
                    None if ended is None else round(ended * 1000) - base,
                    c.reason,
                    lid or None,
                    None if c.id == f"{short}/{letter}" else c.id,
                ]
            clocks.append(_trim(head, _CLOCK_DEFAULTS, 4))
        acked, resolved = o.acked, o.resolved
        orders.append(
            _trim(
                [
                    None if oid == f"{cid}/{o.round}/{o.dept}" else oid,
                    o.dept,
                    o.level,
                    o.policy,
                    round(o.dispatched * 1000) - base,
                    _MODE_NO.get(o.mode, o.mode),  # type: ignore[arg-type]
                    clocks,
                    o.round,
                    None if o.street == case.street else o.street,
                    o.active,
                    None if acked is None else round(acked * 1000) - base,
                    None if resolved is None else round(resolved * 1000) - base,
                    o.esc_level,
                    o.esc_step,
                    o.esc_repeats,
                    o.esc_done,
                    o.late,
                ],
                _ORDER_DEFAULTS,
                4,
            )
        )
    g = case.grid
    grid: int | str = int(g) if g.isascii() and g.isdigit() and g[0] != "0" else g
    status = case.status
    doc = [
        FORMAT,
        _corr(case.corr),
        case.cat,
        grid,
        base,
        orders,
        None if case.sev == "normal" else case.sev,
        None if status == "dispatched" else _STATUS_NO.get(status, status),
        case.cond,
        None if case.street == g[:9] else case.street,
        strays or None,
        case.rev or None,
    ]
    while doc[-1] is None:
        doc.pop()
    return msgpack.packb(doc, use_bin_type=True)


def unpack_doc(case_id: str, raw: bytes | str) -> CaseClocks:
    if isinstance(raw, str):
        raw = raw.encode()
    d = msgpack.unpackb(raw, raw=False)
    d += [None] * (12 - len(d))
    _fmt, corr, cat, grid, base, orders, sev, status, cond, street, strays, rev = d
    grid = str(grid)
    street = street or grid[:9]
    case = CaseClocks(
        case_id=case_id,
        corr=_uncorr(corr),
        cat=cat,
        sev=sev or "normal",
        cond=cond,
        grid=grid,
        street=street,
        status="dispatched" if status is None else STATUSES[status] if isinstance(status, int) else status,
        rev=rev or 0,
    )
    case_orders, case_clocks, depts = case.orders, case.clocks, case.depts
    for ov in orders:
        if len(ov) < 17:
            ov += _ORDER_DEFAULTS[len(ov) :]
        (
            oid,
            dept,
            level,
            policy,
            disp,
            mode,
            clocks,
            rnd,
            ostreet,
            active,
            acked,
            resolved,
            esc_level,
            esc_step,
            esc_repeats,
            esc_done,
            late,
        ) = ov
        order_id = oid or f"{case_id}/{rnd}/{dept}"
        order = Order(
            order_id,
            dept,
            ostreet or street,
            level,
            policy,
            rnd,
            (base + disp) / 1000,
            active,
            None if acked is None else (base + acked) / 1000,
            None if resolved is None else (base + resolved) / 1000,
            MODES[mode] if isinstance(mode, int) else mode,
            esc_level,
            esc_step,
            esc_repeats,
            esc_done,
            late,
        )
        case_orders[order_id] = order
        if dept not in depts:
            depts.append(dept)
        short = order_id[len(case_id) + 1 :] if order_id.startswith(case_id + "/") else order_id
        for cv in clocks:
            if len(cv) < 16:
                cv += _CLOCK_DEFAULTS[len(cv) :]
            (
                letter,
                token,
                state,
                limit,
                wf,
                due,
                warn_at,
                start,
                used,
                warned,
                clevel,
                step,
                ended,
                reason,
                lid,
                cid,
            ) = cv
            cid = cid or f"{short}/{letter}"
            case_clocks[cid] = Clock(
                cid,
                order_id,
                KIND_OF[letter],
                level if clevel is None else clevel,
                limit,
                wf / 1000 if isinstance(wf, int) else wf,
                None if start is None else (base + start) / 1000,
                used,
                STATES[state],
                warned,
                token,
                step,
                None if due is None else (base + due) / 1000,
                None if warn_at is None else (base + warn_at) / 1000,
                None if ended is None else (base + ended) / 1000,
                reason,
                f"{case_id}|{cid}|{token}" if lid == 1 else (lid or ""),
            )
    for k, v in strays or []:
        case_clocks[k] = Clock(**v)
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
    """Put the stored history into `case` (a case without one keeps its empty history)."""
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
