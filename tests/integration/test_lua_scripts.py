"""Every Lua script is a `.lua` file that ships with the package (shared/scripts.py): each one
the code names exists, compiles in the real Redis, and is there in a non-editable install."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from shared import scripts
from tests.conftest import REPO


def _named() -> set[tuple[str, str]]:
    """Every `Lua("<package>", "<name>")` in the code."""
    found = set()
    for top in ("shared", "services", "bench"):
        for path in (REPO / top).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Lua":
                    package, name = (ast.literal_eval(a) for a in node.args)
                    found.add((package, name))
    return found


def test_no_lua_left_in_python_strings() -> None:
    inline = [
        str(p.relative_to(REPO))
        for top in ("shared", "services", "bench")
        for p in (REPO / top).rglob("*.py")
        if "redis.call(" in p.read_text(encoding="utf-8")
    ]
    assert inline == []


def test_every_named_script_is_a_file_that_compiles(redis_client: redis.Redis) -> None:
    named = _named()
    assert len(named) >= 12
    files = {(str(p.parent.parent.relative_to(REPO)).replace("/", "."), p.stem) for p in REPO.glob("**/lua/*.lua")}
    assert named <= files
    for package, name in sorted(named):
        text = scripts.Lua(package, name).source
        assert "--#include" not in text, (package, name)
        # SCRIPT LOAD compiles the script: a syntax error (or an include gone wrong) fails here
        assert redis_client.script_load(text) == scripts.Lua(package, name).on(redis_client).sha


@pytest.mark.parametrize(
    ("lib", "function", "users"),
    [
        ("lease_claim", "lease_claim", {"claim_timers", "claim_digest"}),
        ("outbox_add", "outbox_add", {"register", "compare_and_set", "commit"}),
        ("key_lease", "key_lease_release", {"lease_release", "claim_delivery", "finish_delivery"}),
    ],
)
def test_a_shared_lua_function_is_one_file_its_users_include(lib: str, function: str, users: set[str]) -> None:
    text = scripts.source("shared", lib)
    found = set()
    for package, name in _named():
        raw = (REPO / package.replace(".", "/") / "lua" / f"{name}.lua").read_text(encoding="utf-8")
        if f"--#include shared:{lib}" in raw:
            found.add(name)
            assert text in scripts.Lua(package, name).source  # put in place of the line
        else:  # nobody keeps a copy of its own
            assert f"local function {function}" not in raw
    assert found == users


@pytest.mark.timeout(600)
def test_a_non_editable_install_carries_every_script(tmp_path: Path, redis_url: str) -> None:
    # from a copy of what the wheel is built from, so that the build leaves nothing in the work tree
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for top in ("shared", "services", "bench"):
        shutil.copytree(REPO / top, source / top, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(source)],
        check=True,
        capture_output=True,
    )
    probe = (
        "import json, sys, redis\n"
        "from shared import scripts\n"
        "assert scripts.__file__.startswith(sys.argv[1]), scripts.__file__\n"
        "r = redis.Redis.from_url(sys.argv[2])\n"
        "for package, name in json.loads(sys.argv[3]):\n"
        "    r.script_load(scripts.Lua(package, name).source)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", probe, str(target), redis_url, json.dumps(sorted(_named()))],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
