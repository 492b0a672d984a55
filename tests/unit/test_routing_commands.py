"""`gridbus routes test|show` and the checks that keep rule maintainers out of trouble."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import main
from services.router.compiler import load_routing_tree
from shared.config import DEFAULT_CONFIG_DIR
from shared.configfiles import ConfigError

ROUTES = DEFAULT_CONFIG_DIR / "routes.yaml"


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_routes_test_prints_path_and_receivers() -> None:
    result = run(
        "routes",
        "test",
        "--category",
        "01031",
        "--grid",
        "450305001001001",
        "--attr",
        "asset_owner=cmcc",
        "--at",
        "2026-11-27T10:00:00+08:00",
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "component 01031 通信立杆" in out
    assert "✓ root/telecom/cmcc" in out
    assert "cmcc" in out and "policy=default" in out and "level=3" in out and "route=root/telecom/cmcc" in out


def test_verify_passes_and_fails() -> None:
    ok = run("routes", "test", "--category", "01037", "--attr", "hazard=漏电", "--verify", "power,lighting")
    assert ok.exit_code == 0 and "verify: ok (lighting,power)" in ok.output
    bad = run("routes", "test", "--category", "01037", "--verify", "lighting,power")
    assert bad.exit_code == 1
    assert "verify: FAILED — expected lighting,power, got lighting" in bad.output


def test_time_kind_and_exclusion_options() -> None:
    night = run("routes", "test", "--category", "06028", "--at", "2026-11-27T23:00:00+08:00", "--verify", "police")
    assert night.exit_code == 0, night.output
    naive = run("routes", "test", "--category", "06028", "--at", "2026-11-27T23:00:00", "--verify", "police")
    assert naive.exit_code == 0, naive.output  # a naive time is district time
    matter = run("routes", "test", "--category", "01037", "--kind", "matter")
    assert "matter 01037 路灯异常" in matter.output
    disputed = run("routes", "test", "--category", "01037", "--exclude", "lighting", "--verify", "station")
    assert disputed.exit_code == 0 and "争议件" in disputed.output


def test_unknown_category_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["routes", "test", "--category", "99999"])
    assert result.exit_code == 2 and "not a code of the catalog" in result.output


def test_a_changed_file_can_be_tested_before_it_goes_live(tmp_path: Path) -> None:
    changed = tmp_path / "routes.yaml"
    changed.write_text(
        ROUTES.read_text(encoding="utf-8").replace(
            "      depts: [lighting]\n      sla_policy: lighting",
            "      depts: [municipal]\n      sla_policy: lighting",
        ),
        encoding="utf-8",
    )
    live = run("routes", "test", "--category", "01037", "--verify", "lighting")
    assert live.exit_code == 0
    trial = run("routes", "test", "--routes", str(changed), "--category", "01037", "--verify", "lighting")
    assert trial.exit_code == 1 and "got municipal" in trial.output


def test_an_invalid_file_is_reported_with_line(tmp_path: Path) -> None:
    bad = tmp_path / "routes.yaml"
    text = ROUTES.read_text(encoding="utf-8").replace("depts: [lighting]\n", "depts: [lightning]\n", 1)
    bad.write_text(text, encoding="utf-8")
    line = next(n for n, x in enumerate(text.splitlines(), 1) if "lightning" in x)
    result = CliRunner().invoke(main, ["routes", "show", "--routes", str(bad)])
    assert result.exit_code == 2
    assert f"routes.yaml:{line}:" in result.output and "unknown department 'lightning'" in result.output


def test_routes_show_prints_the_tree() -> None:
    result = run("routes", "show")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[1].startswith("root: always → station")
    assert any(x.strip().startswith("cmcc: asset_owner=") for x in lines)
    assert "intentionally triaged: 01022" in result.output


def test_a_route_hidden_by_an_earlier_one_is_refused(tmp_path: Path) -> None:
    text = ROUTES.read_text(encoding="utf-8")
    marker = "    # ---------------------------------------------------------------- 09 街面秩序\n"
    hidden = marker + '    - {name: lamps_again, match: {category: ["01037"]}, depts: [municipal]}\n'
    path = tmp_path / "routes.yaml"
    path.write_text(text.replace(marker, hidden), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_routing_tree(path)
    assert "never reached" in info.value.message and "root/lighting" in info.value.message
    assert info.value.line == next(
        n for n, x in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if "lamps_again" in x
    )


def test_a_conditional_earlier_route_does_not_hide_later_ones(tmp_path: Path) -> None:
    text = ROUTES.read_text(encoding="utf-8")
    marker = "    # ---------------------------------------------------------------- gas\n"
    extra = (
        '    - {name: lamps_at_night, match: {category: ["01037"], active_time_intervals: [night]}, '
        "depts: [municipal]}\n"
    )
    path = tmp_path / "routes.yaml"
    path.write_text(text.replace(marker, extra + marker), encoding="utf-8")
    tree = load_routing_tree(path)
    assert any(n.path == "root/lamps_at_night" for n in tree.nodes())
