"""The folder markers are applied to every collected test (see tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def _collected(marker_expr: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", marker_expr, "tests"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {line.split("::")[0] for line in out.splitlines() if "::" in line}


def test_every_broker_test_carries_its_folder_marker() -> None:
    unmarked = _collected("not integration and not e2e")
    assert unmarked, "the unit tests should be selected"
    assert not {f for f in unmarked if f.startswith(("tests/integration/", "tests/e2e/"))}
    assert all(f.startswith("tests/integration/") for f in _collected("integration"))
