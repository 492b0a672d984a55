"""./test.sh and deploy/ci/validate.sh do what README "Test it" says: each step announced,
the deploy tools and validators skipped with GRIDBUS_SKIP_DEPLOY_CHECKS=1, the AsyncAPI CLI
(the 1.5 GB download) skipped with GRIDBUS_SKIP_ASYNCAPI=1. The scripts run for real, with
stand-ins for pip, pytest and the validators where noted."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("GRIDBUS_TOOLS", Path.home() / ".cache" / "gridbus-ci"))


def _stub(path: Path, log: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{path.name} $*" >> {log}\n', encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _checkout_with_stubs(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of test.sh beside stand-ins for .venv's pip/python and validate.sh that log calls."""
    log = tmp_path / "calls.log"
    shutil.copy(ROOT / "test.sh", tmp_path / "test.sh")
    for tool in (".venv/bin/pip", ".venv/bin/python", "deploy/ci/validate.sh"):
        _stub(tmp_path / tool, log)
    return tmp_path / "test.sh", log


def test_test_sh_runs_every_step_in_order(tmp_path: Path) -> None:
    script, log = _checkout_with_stubs(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "GRIDBUS_SKIP_DEPLOY_CHECKS"}
    out = subprocess.run([str(script), "tests/unit", "-x"], env=env, capture_output=True, text=True, check=True).stdout
    calls = [c.strip() for c in log.read_text().splitlines()]
    assert [c.split()[0] for c in calls] == [
        "pip",
        "validate.sh",
        "python",
        "python",
        "python",
        "python",
        "validate.sh",
    ]
    assert calls[1] == "validate.sh --install-only" and calls[6] == "validate.sh"
    assert calls[2:5] == ["python -m ruff check .", "python -m ruff format --check .", "python -m mypy"]
    assert calls[5] == "python -m pytest -q tests/unit -x"
    for n in range(1, 6):
        assert f"== [{n}/5]" in out
    assert "test.sh: done in" in out


def test_skip_deploy_checks_runs_only_pytest(tmp_path: Path) -> None:
    script, log = _checkout_with_stubs(tmp_path)
    out = subprocess.run(
        [str(script)], env={**os.environ, "GRIDBUS_SKIP_DEPLOY_CHECKS": "1"}, capture_output=True, text=True, check=True
    ).stdout
    assert [c.split()[0] for c in log.read_text().splitlines()] == ["pip", "python", "python", "python", "python"]
    assert "deploy tools: skipped (GRIDBUS_SKIP_DEPLOY_CHECKS=1)" in out


@pytest.mark.skipif(
    not (TOOLS / "venv" / "bin" / "kubernetes-validate").exists() or not shutil.which("promtool"),
    reason="deploy tools not installed (deploy/ci/validate.sh --install-only)",
)
def test_skip_asyncapi_leaves_out_the_npm_cli(tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "venv").symlink_to(TOOLS / "venv")  # the installed tools venv; no npm folder at all
    bin_dir = tmp_path / "bin"
    log = tmp_path / "npm.log"
    _stub(bin_dir / "npm", log)  # would record an install attempt
    env = {
        **os.environ,
        "GRIDBUS_TOOLS": str(tools),
        "GRIDBUS_SKIP_ASYNCAPI": "1",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        [str(ROOT / "deploy/ci/validate.sh"), "--install-only"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "AsyncAPI CLI: skipped (GRIDBUS_SKIP_ASYNCAPI=1)" in done.stdout
    assert not log.exists() and not (tools / "npm").exists()
