"""`ruff check` is clean and `ruff format` applied (pyproject's rules): run with the unit tests too, so a change that
adds a finding is seen before it lands, not only by ./test.sh in CI. (mypy, slower, runs
in ./test.sh step 3.)"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_ruff_check_is_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", str(REPO)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_is_applied() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", str(REPO)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, "run `ruff format .`:\n" + done.stdout + done.stderr
