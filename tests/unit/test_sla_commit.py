"""The typed builder of sla's commit arguments (services/sla/commit.py): each case's mode
comes from the enums, and the packed blob is laid out as services/sla/lua/commit.lua reads it."""

from __future__ import annotations

import re

import msgpack
import pytest

from services.sla.commit import CaseWrite, Commit, DocCheck, DocWrite, HistoryCheck, HistoryWrite
from tests.conftest import REPO

WHERE = ["gb:sla:live:7", "450305-20261127-000001", "gb:sla:case:450305-20261127-000001", "gb:sla:hist:4503"]


@pytest.mark.parametrize(
    ("write", "mode"),
    [
        (CaseWrite(WHERE, None), "n---"),  # a stale firing of a case that is gone: compared only
        (CaseWrite(WHERE, b"doc"), "y---"),  # a stale firing: the document must still be as read
        (
            CaseWrite(
                WHERE, None, DocWrite.LIVE, b"new", check_history=True, history=HistoryWrite.SET, history_bytes=b"h"
            ),
            "nnLS",
        ),  # events in, a new case: neither document nor history may have appeared meanwhile
        (
            CaseWrite(
                WHERE, b"doc", DocWrite.LIVE, b"d2", check_history=True, history_was=b"h", history=HistoryWrite.SET
            ),
            "yyLS",
        ),
        (CaseWrite(WHERE, b"doc", DocWrite.CLOSED, b"d2", history=HistoryWrite.APPEND, history_bytes=b"log"), "y-CA"),
        (CaseWrite(WHERE, b"doc", DocWrite.LIVE, b"d2"), "y-L-"),  # fired, nothing logged
    ],
)
def test_each_case_mode_comes_from_its_checks_and_writes(write: CaseWrite, mode: str) -> None:
    assert write.mode() == mode
    assert write.args() == [
        *WHERE,
        mode,
        write.doc_was or b"",
        write.history_was or b"",
        write.doc_bytes,
        write.history_bytes,
    ]


def test_the_history_is_compared_only_when_asked() -> None:
    w = CaseWrite(WHERE, b"doc", history_was=b"h")
    assert w.history_check is HistoryCheck.UNCHECKED and w.doc_check is DocCheck.AS_READ
    w.check_history = True
    assert w.history_check is HistoryCheck.AS_READ
    w.history_was = None
    assert w.history_check is HistoryCheck.ABSENT


def test_the_blob_is_laid_out_as_the_script_reads_it() -> None:
    c = Commit(1000.5, 7776000, done=["t-done"])
    c.cases.append(CaseWrite(WHERE, b"doc", DocWrite.LIVE, b"d2", history=HistoryWrite.APPEND, history_bytes=b"l"))
    c.cases.append(CaseWrite(WHERE, None))
    c.arm += [("t-a", 1010.25), ("t-b", 1020.0)]
    c.cancel.append("t-old")
    c.outbox.append(("m1", '{"event":"deadline_warning"}'))
    c.ledger.append({"id": "L1", "breached_at": 999.5, "dept": "gas"})
    c.ledger_ended.append(("L0", 1000.0))
    c.count("gb:sla:ind:2026-11", "dept|gas|breached", 1)
    c.count("gb:sla:ind:2026-11", "dept|gas|breached", 2)  # the same counter adds up
    c.count("gb:sla:ind:2026-11", "street|450305001|breached", 1)
    assert msgpack.unpackb(c.blob(), raw=False) == [
        "1000.5",
        "7776000",
        [*WHERE, "y-LA", "doc", "", "d2", "l", *WHERE, "n---", "", "", "", ""],
        ["1010.25", "t-a", "1020.0", "t-b"],
        ["t-old"],
        ["t-done"],
        ["m1", '{"event":"deadline_warning"}'],
        ["L1", '{"id":"L1","breached_at":999.5,"dept":"gas"}', "999.5"],
        ["L0", "1000.0"],
        ["gb:sla:ind:2026-11", "dept|gas|breached", "3", "gb:sla:ind:2026-11", "street|450305001|breached", "1"],
    ]


def test_every_letter_the_builder_sends_is_one_the_script_reads() -> None:
    lua = (REPO / "services/sla/lua/commit.lua").read_text(encoding="utf-8")
    code = "\n".join(line.split("--")[0] for line in lua.splitlines())
    compared = set(re.findall(r"[=~]= '(.)'", code))
    for enum in (DocCheck, HistoryCheck, DocWrite, HistoryWrite):
        for member in enum:
            assert member.value in compared or member.value == "-", (enum.__name__, member)
    assert "-" in compared  # "no history check" is the one compared by inequality
