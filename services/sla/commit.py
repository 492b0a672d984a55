"""The arguments of sla's compare-and-commit (services/sla/lua/commit.lua), built from types.

A commit is a list of `CaseWrite`s — for each case what it must still be in Redis (the
document and, for events in, the history as they were read) and what to write (the
document into its live bucket or to the closed key, the history set or appended) — and
what goes with them: timers armed, cancelled and done (their leases released), events
into the outbox, ledger entries and indicator counters. `Commit.blob()` packs it as the
script reads it: one msgpack value, each case as nine strings whose fifth is a four-letter
mode, one letter per enum below (the enums' values are those letters).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import msgpack


class DocCheck(Enum):
    """What the case's document must still be for the commit to go ahead."""

    AS_READ = "y"  # the bytes read (live bucket, else the closed key)
    ABSENT = "n"  # none (a case seen for the first time)


class HistoryCheck(Enum):
    UNCHECKED = "-"  # firing: the history is only appended to, never read
    AS_READ = "y"
    ABSENT = "n"


class DocWrite(Enum):
    NONE = "-"  # nothing written (a stale timer: only its lease is released)
    LIVE = "L"  # into the live bucket (a clock runs or is paused); a closed copy is deleted
    CLOSED = "C"  # to the closed key, with its TTL and the history's; out of the live bucket


class HistoryWrite(Enum):
    NONE = "-"
    SET = "S"  # the whole (trimmed) history, replacing it
    APPEND = "A"  # log entries after what is there


def pack(values: list[Any]) -> bytes:
    """Arguments for a Lua script as one msgpack value (Redis' cmsgpack reads no bin type:
    bytes go as raw strings)."""
    return msgpack.packb(values, use_bin_type=False)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(slots=True)
class CaseWrite:
    """One case's part of a commit. `where`: its live bucket, case id, closed key, history key."""

    where: list[str]
    doc_was: bytes | None  # the document as read (None: there was none)
    doc: DocWrite = DocWrite.NONE
    doc_bytes: bytes = b""
    check_history: bool = False  # compare the history with `history_was` (events in)
    history_was: bytes | None = None
    history: HistoryWrite = HistoryWrite.NONE
    history_bytes: bytes = b""

    @property
    def doc_check(self) -> DocCheck:
        return DocCheck.ABSENT if self.doc_was is None else DocCheck.AS_READ

    @property
    def history_check(self) -> HistoryCheck:
        if not self.check_history:
            return HistoryCheck.UNCHECKED
        return HistoryCheck.ABSENT if self.history_was is None else HistoryCheck.AS_READ

    def mode(self) -> str:
        return self.doc_check.value + self.history_check.value + self.doc.value + self.history.value

    def args(self) -> list[Any]:
        return [
            *self.where,
            self.mode(),
            self.doc_was or b"",
            self.history_was or b"",
            self.doc_bytes,
            self.history_bytes,
        ]


@dataclass
class Commit:
    """Everything one call of the commit script writes, atomically, if no case changed."""

    now: float
    keep_closed_s: int
    cases: list[CaseWrite] = field(default_factory=list)
    arm: list[tuple[str, float]] = field(default_factory=list)  # (timer name, due)
    cancel: list[str] = field(default_factory=list)  # timers out of due and leased
    done: list[str] = field(default_factory=list)  # timers fired: their leases released
    outbox: list[tuple[str, str]] = field(default_factory=list)  # (message id, event JSON)
    ledger: list[dict[str, Any]] = field(default_factory=list)  # entries with "id" and "breached_at"
    ledger_ended: list[tuple[str, float]] = field(default_factory=list)  # (entry id, ended at)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (hash key, field) → increment

    def count(self, key: str, name: str, n: int) -> None:
        self.counts[(key, name)] = self.counts.get((key, name), 0) + n

    def blob(self) -> bytes:
        """ARGV[1] of the commit script."""
        cases: list[Any] = []
        for c in self.cases:
            cases += c.args()
        return pack(
            [
                repr(self.now),
                str(self.keep_closed_s),
                cases,
                [x for name, due in self.arm for x in (repr(due), name)],
                list(self.cancel),
                list(self.done),
                [x for message_id, body in self.outbox for x in (message_id, body)],
                [x for e in self.ledger for x in (e["id"], dumps(e), repr(e["breached_at"]))],
                [x for lid, at in self.ledger_ended for x in (lid, repr(at))],
                [x for (key, name), n in self.counts.items() for x in (key, name, str(n))],
            ]
        )
