"""The routing-tree engine on small trees: Alertmanager semantics, matchers, exclusion,
and configuration errors that name file, line and field. The shipped tree is tested in
test_routing_table.py."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from services.router.compiler import load_routing_tree
from services.router.tree import RoutingInput, RoutingTree
from shared.catalog import Catalog, load_catalog
from shared.config import DEFAULT_CONFIG_DIR
from shared.configfiles import ConfigError
from shared.grid import load_grid

CST = timezone(timedelta(hours=8))
DAY = datetime(2026, 11, 25, 10, 0, tzinfo=CST)  # a Wednesday
NIGHT = datetime(2026, 11, 25, 23, 30, tzinfo=CST)
DEPTS = [
    "station",
    "cityman",
    "police",
    "gas",
    "emergency",
    "market",
    "lighting",
    "power",
    "cmcc",
    "unicom",
    "telecom",
    "sanitation",
    "municipal",
    "housing",
]

TREE = """\
version: 1
time_intervals:
  night:
    - times: [{start: "22:00", end: "24:00"}, {start: "00:00", end: "06:00"}]
  weekend:
    - weekdays: ["saturday:sunday"]
intentionally_triaged: ["01023"]
route:
  name: root
  depts: [station]
  sla_policy: default
  mode: service
  level: 3
  routes:
    - name: telecom
      match: {category: ["01031", "01007"]}
      depts: [station]
      routes:
        - {name: cmcc, match: {attrs: {asset_owner: [cmcc, 移动]}}, depts: [cmcc]}
        - {name: unicom, match: {attrs: {asset_owner: unicom}}, depts: [unicom]}
        - {name: manhole, match: {category: ["01007"]}, sla_policy: manhole}
    - name: lighting
      match: {category_regex: "010(37|38)"}
      depts: [lighting]
      sla_policy: lighting
      routes:
        - {name: leak, match: {attrs_regex: {hazard: "leak|漏电"}}, depts: [lighting, power], sla_policy: urgent}
        - {name: no_photo, match: {attrs_absent: [photo]}, level: 4}
    - name: components
      match: {category_prefix: ["02"], kind: component}
      depts: [municipal]
    - name: gas
      match: {category: ["09999"]}
      mode: enforcement
      level: 2
      routes:
        - {name: cityman, continue: true, depts: [cityman]}
        - {name: market, continue: true, depts: [market]}
        - {name: safety, match: {severity: urgent}, depts: [emergency, gas]}
    - name: noise
      match: {category: ["06028"]}
      depts: [cityman]
      routes:
        - {name: night, match: {active_time_intervals: [night]}, depts: [police]}
    - name: interior
      match: {category: ["08999"]}
      depts: [housing]
      routes:
        - {name: weekdays, match: {inactive_time_intervals: [weekend]}, sla_policy: weekday}
    - name: pilot_clean
      match: {category: ["06010"], grid_prefix: ["450305001001"]}
      depts: [sanitation]
      level: 5
    - name: clean
      match: {category: ["06010"]}
      depts: [sanitation]
"""


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(DEFAULT_CONFIG_DIR / "catalog.tsv")


@pytest.fixture(scope="module")
def grid():
    return load_grid(DEFAULT_CONFIG_DIR / "grid.yaml")


def _write(tmp_path: Path, text: str, name: str = "routes.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def tree(tmp_path: Path, catalog: Catalog, grid) -> RoutingTree:
    return load_routing_tree(_write(tmp_path, TREE), catalog=catalog, departments=DEPTS, grid=grid)


def inp(
    category: str,
    kind: str = "matter",
    grid: str = "450305002001001",
    severity: str = "normal",
    at: datetime = DAY,
    exclude: tuple[str, ...] = (),
    **attrs: str,
) -> RoutingInput:
    return RoutingInput(category, kind, grid, severity, attrs, at, frozenset(exclude))


def depts(receivers) -> list[str]:
    return [r.dept for r in receivers]


# ------------------------------------------------------------------ semantics


def test_first_matching_child_wins_and_inherits(tree: RoutingTree) -> None:
    [r] = tree.route(inp("01031", "component", asset_owner="cmcc"))
    assert (r.dept, r.route, r.sla_policy, r.mode, r.level) == ("cmcc", "root/telecom/cmcc", "default", "service", 3)
    assert "asset_owner=cmcc" in r.reason


def test_owner_wins_over_a_later_sibling(tree: RoutingTree) -> None:
    # 01007 also matches `manhole`, but `cmcc` comes first and does not continue
    [r] = tree.route(inp("01007", "component", asset_owner="移动"))
    assert r.route == "root/telecom/cmcc" and r.sla_policy == "default"
    [r] = tree.route(inp("01007", "component"))
    assert (r.dept, r.route, r.sla_policy) == ("station", "root/telecom/manhole", "manhole")


def test_a_route_without_matching_children_handles_it_itself(tree: RoutingTree) -> None:
    [r] = tree.route(inp("01031", "component", asset_owner="unknown"))
    assert (r.dept, r.route) == ("station", "root/telecom")


def test_root_catches_everything_else(tree: RoutingTree) -> None:
    [r] = tree.route(inp("07001"))
    assert (r.dept, r.route, r.level) == ("station", "root", 3)
    assert "triage" in r.reason
    [r] = tree.route(inp("12345"))  # not even a catalog code
    assert r.dept == "station"
    assert tree.intentionally_triaged == frozenset({"01023"})


def test_regex_is_anchored_and_attrs_regex_and_absent(tree: RoutingTree) -> None:
    assert tree.route(inp("01037", "component", photo="x"))[0].route == "root/lighting"
    assert tree.route(inp("01037", "component"))[0].route == "root/lighting/no_photo"
    assert tree.route(inp("01037", "component"))[0].level == 4
    assert depts(tree.route(inp("01038", "component", hazard="地灯漏电", photo="x"))) == ["lighting"]  # fullmatch
    assert depts(tree.route(inp("01038", "component", hazard="漏电"))) == ["lighting", "power"]
    assert depts(tree.route(inp("01039", "component"))) == ["station"]


def test_kind_and_prefix(tree: RoutingTree) -> None:
    assert depts(tree.route(inp("02014", "component"))) == ["municipal"]
    assert depts(tree.route(inp("02014", "matter"))) == ["station"]


def test_continue_fans_out_joint_dispatch(tree: RoutingTree) -> None:
    rs = tree.route(inp("09999"))
    assert depts(rs) == ["cityman", "market"]
    assert all(r.mode == "enforcement" and r.level == 2 for r in rs)
    assert [r.route for r in rs] == ["root/gas/cityman", "root/gas/market"]
    assert "joint dispatch" in rs[0].reason
    assert depts(tree.route(inp("09999", severity="urgent"))) == ["cityman", "market", "emergency", "gas"]


def test_time_intervals_in_local_time(tree: RoutingTree) -> None:
    assert depts(tree.route(inp("06028", at=DAY))) == ["cityman"]
    assert depts(tree.route(inp("06028", at=NIGHT))) == ["police"]
    # 15:30 UTC is 23:30 in Guilin
    assert depts(tree.route(inp("06028", at=datetime(2026, 11, 25, 15, 30, tzinfo=timezone.utc)))) == ["police"]
    assert depts(tree.route(inp("06028", at=datetime(2026, 11, 25, 5, 59, tzinfo=CST)))) == ["police"]
    assert depts(tree.route(inp("06028", at=datetime(2026, 11, 25, 6, 0, tzinfo=CST)))) == ["cityman"]
    assert depts(tree.route(inp("06028", at=datetime(2026, 11, 25, 22, 0, tzinfo=CST)))) == ["police"]


def test_inactive_time_intervals(tree: RoutingTree) -> None:
    assert tree.route(inp("08999", at=DAY))[0].sla_policy == "weekday"
    saturday = datetime(2026, 11, 28, 10, 0, tzinfo=CST)
    assert tree.route(inp("08999", at=saturday))[0].sla_policy == "default"


def test_grid_prefix(tree: RoutingTree) -> None:
    [r] = tree.route(inp("06010", grid="450305001001002"))
    assert (r.route, r.level) == ("root/pilot_clean", 5)
    [r] = tree.route(inp("06010", grid="450305001002001"))
    assert (r.route, r.level) == ("root/clean", 3)


# ------------------------------------------------------------------ re-routing


def test_exclusion_falls_back_to_the_parent(tree: RoutingTree) -> None:
    [r] = tree.route(inp("06028", at=NIGHT, exclude=("police",)))
    assert (r.dept, r.route) == ("cityman", "root/noise")
    assert "re-routed excluding police" in r.reason


def test_exclusion_drops_one_of_a_joint_dispatch(tree: RoutingTree) -> None:
    assert depts(tree.route(inp("09999", severity="urgent", exclude=("market", "gas")))) == ["cityman", "emergency"]
    assert depts(tree.route(inp("01038", "component", hazard="leak", exclude=("power",)))) == ["lighting"]


def test_everything_excluded_is_a_dispute_at_the_station(tree: RoutingTree) -> None:
    [r] = tree.route(inp("06028", at=NIGHT, exclude=("police", "cityman")))
    assert (r.dept, r.route) == ("station", "root")
    assert "disputed" in r.reason and "争议件" in r.reason and "cityman, police" in r.reason
    # even the station itself rejecting does not leave the case without a receiver
    [r] = tree.route(inp("01031", "component", exclude=("station",)))
    assert r.dept == "station" and "disputed" in r.reason


def test_a_route_appearing_twice_in_a_fan_out_dispatches_once(tmp_path: Path, catalog: Catalog) -> None:
    text = TREE.replace(
        "- {name: market, continue: true, depts: [market]}",
        "- {name: market, continue: true, depts: [cityman, market]}",
    )
    t = load_routing_tree(_write(tmp_path, text), catalog=catalog, departments=DEPTS)
    assert depts(t.route(inp("09999"))) == ["cityman", "market"]


# ------------------------------------------------------------------ explain / describe


def test_explain_lists_the_visited_path(tree: RoutingTree) -> None:
    lines = tree.explain(inp("01031", "component", asset_owner="unicom"))
    text = "\n".join(lines)
    assert lines[0].startswith("✓ root")
    assert "✗ root/telecom/cmcc" in text and "✓ root/telecom/unicom" in text
    assert "→ root/telecom/unicom: unicom" in text
    assert "→ root:" in "\n".join(tree.explain(inp("07001")))
    disputed = "\n".join(tree.explain(inp("06028", at=NIGHT, exclude=("police", "cityman"))))
    assert "every department excluded" in disputed and "disputed" in disputed


def test_describe_shows_inherited_options(tree: RoutingTree) -> None:
    lines = tree.describe()
    assert lines[0].startswith("root: always → station")
    assert any("cmcc: asset_owner=cmcc|移动 → cmcc (sla=default, mode=service, level=3)" in x for x in lines)
    assert any("[continue]" in x for x in lines)


def test_loading_is_pure(tmp_path: Path, catalog: Catalog) -> None:
    path = _write(tmp_path, TREE)
    a = load_routing_tree(path, catalog=catalog, departments=DEPTS)
    b = load_routing_tree(path, catalog=catalog, departments=DEPTS)
    assert a is not b and a.root is not b.root
    assert a.route(inp("09999")) == b.route(inp("09999"))


# ------------------------------------------------------------------ configuration errors


def _error(tmp_path: Path, catalog: Catalog, text: str, grid=None) -> ConfigError:
    path = _write(tmp_path, text, "bad.yaml")
    with pytest.raises(ConfigError) as info:
        load_routing_tree(path, catalog=catalog, departments=DEPTS, grid=grid)
    assert info.value.path == str(path)
    return info.value


def _line(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if needle in line)


@pytest.mark.parametrize(
    "old, new, needle, field, words",
    [
        (
            "depts: [cmcc]}",
            "depts: [cmc]}",
            "depts: [cmc]",
            "route.routes.0.routes.0.depts.0",
            "unknown department 'cmc'",
        ),
        (
            'category: ["09999"]',
            'category: ["09997"]',
            '"09997"',
            "route.routes.3.match.category.0",
            "not a code of the catalog",
        ),
        (
            'category_prefix: ["02"]',
            'category_prefix: ["11"]',
            '["11"]',
            "route.routes.2.match.category_prefix.0",
            "matches no catalog entry",
        ),
        (
            'category_regex: "010(37|38)"',
            'category_regex: "010(37"',
            "010(37",
            "route.routes.1.match.category_regex",
            "invalid regex",
        ),
        (
            "active_time_intervals: [night]",
            "active_time_intervals: [nite]",
            "[nite]",
            "route.routes.4.routes.0.match.active_time_intervals.0",
            "unknown time interval",
        ),
        (
            '{start: "00:00", end: "06:00"}',
            '{start: "06:00", end: "01:00"}',
            '"06:00", end: "01:00"',
            "time_intervals.night.0.times.1",
            "must be before end",
        ),
        ('["saturday:sunday"]', '["saturday:sundae"]', "sundae", "time_intervals.weekend.0.weekdays", "not valid"),
        (
            'category: ["01031", "01007"]',
            'category: [01031, "01007"]',
            "[01031,",
            "route.routes.0.match.category",
            "quote category codes",
        ),
        ("mode: enforcement", "mode: force", "mode: force", "route.routes.3.mode", "service"),
        ("level: 2", "level: 7", "level: 7", "route.routes.3.level", "less than or equal to 5"),
        (
            'intentionally_triaged: ["01023"]',
            'intentionally_triaged: ["01016"]',
            "01016",
            "intentionally_triaged.0",
            "not a code",
        ),
        (
            "{name: market, continue",
            "{name: cityman, continue",
            "name: cityman, continue: true, depts: [market]",
            "route.routes.3.routes.1.name",
            "repeats sibling",
        ),
        (
            '{name: manhole, match: {category: ["01007"]}',
            '{name: manhole, match: {category: ["01037"]}',
            '"01037"]}, sla',
            "route.routes.0.routes.2.match",
            "can never match",
        ),
        (
            "  depts: [station]\n  sla_policy: default",
            "  depts: [cityman]\n  sla_policy: default",
            "depts: [cityman]",
            "route.depts",
            "station",
        ),
        (
            "  sla_policy: default\n  mode: service\n  level: 3\n",
            "  mode: service\n  level: 3\n",
            "route:",
            "route",
            "must set sla_policy",
        ),
        (
            'grid_prefix: ["450305001001"]',
            'grid_prefix: ["450305009001"]',
            "450305009001",
            "route.routes.6.match.grid_prefix.0",
            "grid registry",
        ),
        (
            'grid_prefix: ["450305001001"]',
            'grid_prefix: ["4503050"]',
            "4503050",
            "route.routes.6.match.grid_prefix",
            "6/9/12/15-digit",
        ),
        ("    - name: clean\n", "    - name: Clean!\n", "Clean!", "route.routes.7.name", "pattern"),
        (
            "      depts: [sanitation]\n      level: 5",
            "      depts: [sanitation]\n      lvl: 5",
            "lvl: 5",
            "route.routes.6.lvl",
            "Extra inputs",
        ),
    ],
)
def test_bad_files_name_line_and_field(
    tmp_path: Path, catalog: Catalog, grid, old: str, new: str, needle: str, field: str, words: str
) -> None:
    assert old in TREE, old
    text = TREE.replace(old, new, 1)
    err = _error(tmp_path, catalog, text, grid=grid)
    assert err.field == field
    assert words in err.message
    assert err.line == _line(text, needle), str(err)


def test_root_takes_no_matchers(tmp_path: Path, catalog: Catalog) -> None:
    text = TREE.replace("  name: root\n", "  name: root\n  match: {severity: urgent}\n")
    err = _error(tmp_path, catalog, text)
    assert err.field == "route.match" and "matches everything" in err.message


def test_not_yaml_and_missing_file(tmp_path: Path, catalog: Catalog) -> None:
    err = _error(tmp_path, catalog, "route: [unclosed\n")
    assert "not valid YAML" in err.message and err.line
    with pytest.raises(ConfigError, match="cannot read"):
        load_routing_tree(tmp_path / "nope.yaml", catalog=catalog, departments=DEPTS)


def test_unknown_time_zone(tmp_path: Path, catalog: Catalog) -> None:
    text = TREE.replace(
        '    - weekdays: ["saturday:sunday"]', '    - weekdays: ["saturday:sunday"]\n      location: Mars/Olympus'
    )
    err = _error(tmp_path, catalog, text)
    assert err.field == "time_intervals.weekend.0.location" and "unknown time zone" in err.message
