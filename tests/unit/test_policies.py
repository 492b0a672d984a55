"""SLA policies: the shipped sla.yaml, policy resolution and file errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from shared.configfiles import ConfigError
from shared.policies import Policy, PolicyBook, load_policies, match_condition, normalise
from shared.worktime import ClockUnit, Limit

REPO = Path(__file__).resolve().parents[2]
SLA_YAML = REPO / "config" / "sla.yaml"
DATA = REPO.parent / "shared" / "data"
CATALOG = DATA / "gbt47678.5-2026_catalog.tsv"
YUNCHENG = DATA / "yuncheng_filing_standard_components.tsv"


def L(text: str) -> Limit:
    return Limit.parse(text)


@pytest.fixture(scope="module")
def book() -> PolicyBook:
    return load_policies(SLA_YAML)


def _tsv(path: Path) -> list[list[str]]:
    lines = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines()]
    rows = [line.split("\t") for line in lines if line and not line.startswith("#")]
    return rows[1:]  # header


# --------------------------------------------------------------------------- shipped file


def test_named_policies(book: PolicyBook) -> None:
    assert {"default", "urgent", "emergency", "cleaning", "repair", "enforcement", "demo"} <= book.names()


@pytest.mark.skipif(not CATALOG.exists(), reason="catalog data not beside the repo")
def test_every_event_of_classes_06_to_10_has_a_policy(book: PolicyBook) -> None:
    matters = {r[0] for r in _tsv(CATALOG) if r[1] == "matter" and r[2] in {"06", "07", "08", "09", "10"}}
    assert len(matters) == 97
    assert matters <= book.categories()
    for code in matters:
        policy = book.for_case(code, None, "normal")
        assert policy.source.startswith("gridbus"), code


@pytest.mark.skipif(not YUNCHENG.exists(), reason="Yuncheng data not beside the repo")
def test_every_yuncheng_row_is_a_condition(book: PolicyBook) -> None:
    moved = {"0506": "01069", "0507": "01070", "0508": "01071"}
    rows = _tsv(YUNCHENG)
    assert len(rows) == 279
    checked = 0
    for cls, _cname, sub, _sname, condition, limit, *_ in rows:
        if cls + sub == "0504":  # 液化气站: no counterpart in the new catalog
            continue
        code = moved.get(cls + sub, cls + "0" + sub)
        policy = book.for_case(code, condition, "normal")
        assert policy.condition == condition.strip(), (code, condition)
        assert policy.handle_limit == L(limit.replace("种植季节", "")), (code, condition)
        checked += 1
    assert checked == 276


def test_defaults(book: PolicyBook) -> None:
    policy = book.for_case("01037", None, "normal")
    assert policy.ack_limit == L("1工作时")
    assert policy.urgent_ack_limit == L("15m")
    assert policy.warn_fraction == 0.8
    assert policy.repeat == 2
    assert [str(x) for x in policy.ladder] == ["1wd", "4wh", "2wh", "2wh"]
    assert policy.escalate_until == "resolved"


# --------------------------------------------------------------------------- resolution


def test_filing_condition_selects_the_row(book: PolicyBook) -> None:
    cover = "01001"  # old 01 01 上水井盖 → new 01001 供水井盖
    assert book.for_case(cover, "缺失、移位、开裂，存在安全隐患的", "normal").handle_limit == L("2紧急工作时")
    assert book.for_case(cover, "破损超过25c㎡", "normal").handle_limit == L("4工作时")
    assert book.for_case(cover, "弹跳产生声响，翻盖明显影响安全", "normal").handle_limit == L("2工作日")
    policy = book.for_case(cover, "破损超过25c㎡", "normal")
    assert policy.name == "01001#2" and "上水井盖" in policy.source


@pytest.mark.parametrize(
    "text",
    ["破损超过 25 c㎡", "破损超过25cm2", "破损超过２５ｃｍ²", "破损超过25CM2。"],
)
def test_condition_matching_ignores_width_spaces_punctuation(book: PolicyBook, text: str) -> None:
    assert book.for_case("01001", text, "normal").condition == "破损超过25c㎡"


def test_condition_substring_match_prefers_the_closest_row(book: PolicyBook) -> None:
    policy = book.for_case("01037", "单盏不亮", "normal")
    assert policy.handle_limit == L("2工作日")
    # a fuller description containing the row's text
    policy = book.for_case("01037", "穿山路路灯单盏不亮", "normal")
    assert policy.condition == "单盏不亮"
    # a fragment of a row
    assert book.for_case("01001", "翻盖明显影响安全", "normal").handle_limit == L("2工作日")


def test_unmatched_condition_falls_back_to_the_category_default(book: PolicyBook) -> None:
    # docs/design.md §9's example names a condition the standard doesn't have
    policy = book.for_case("01037", "连续3盏以上不亮", "normal")
    assert policy.condition is None and policy.name == "01037"
    assert policy.handle_limit == L("1工作日")  # lower median of 2wh,1wd,1wd,2wd,2wd,3wd
    assert book.for_case("01001", None, "normal").handle_limit == L("2工作日")


def test_urgent_severity(book: PolicyBook) -> None:
    policy = book.for_case("01001", None, "urgent")
    assert policy.ack_limit == L("15m")
    assert policy.handle_limit == L("2紧急工作时")  # the category's emergency row
    assert all(step.unit is ClockUnit.urgent_hours for step in policy.ladder)
    # a named condition keeps its own limit; only the acknowledge limit tightens
    named = book.for_case("01001", "破损超过25c㎡", "urgent")
    assert (named.ack_limit, named.handle_limit) == (L("15m"), L("4工作时"))
    # a category with no emergency row keeps its default handling limit
    assert book.for_case("01040", None, "urgent").handle_limit == book.for_case("01040", None, "normal").handle_limit


def test_named_policy_overrides_the_standard(book: PolicyBook) -> None:
    policy = book.for_case("01037", "单盏不亮", "normal", "urgent")
    assert policy.name == "urgent"
    assert (policy.ack_limit, policy.handle_limit) == (L("15m"), L("2h"))
    assert policy.source == "sla.yaml policies.urgent"
    acknowledge_only = book.for_case("01037", "单盏不亮", "normal", "acknowledge_only")
    assert acknowledge_only.handle_limit == L("2工作日")  # not set by the policy: the standard's
    assert acknowledge_only.escalate_until == "acknowledged"
    assert book.for_case("01037", "单盏不亮", "normal", "default") == book.for_case("01037", "单盏不亮", "normal")


def test_unknown_policy_name_warns_and_falls_back(book: PolicyBook) -> None:
    with capture_logs() as logs:
        policy = book.for_case("01001", "破损超过25c㎡", "normal", "no-such-policy")
    assert policy == book.for_case("01001", "破损超过25c㎡", "normal")
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["sla.policy.unknown_name"]


def test_category_lookup_falls_back_to_class_then_defaults(book: PolicyBook) -> None:
    assert book.for_case("06999", None, "normal").handle_limit == L("1工作日")  # class 06
    assert book.for_case("09999", None, "normal").handle_limit == L("2工作时")  # class 09
    unknown = book.for_case("99001", None, "normal")
    assert unknown.handle_limit == L("3工作日") and "defaults" in unknown.source


def test_ladder_steps_by_level(book: PolicyBook) -> None:
    policy = book.for_case("01037", None, "normal")
    assert [str(policy.step_limit(level)) for level in (4, 3, 2, 1)] == ["1wd", "4wh", "2wh", "2wh"]
    short = policy.model_copy(update={"ladder": [L("1wd")]})
    assert short.step_limit(1) == L("1wd")
    with pytest.raises(ValueError):
        policy.step_limit(5)


def test_policy_serialises_limits_as_text(book: PolicyBook) -> None:
    policy = book.for_case("01001", "破损超过25c㎡", "urgent")
    data = policy.model_dump(mode="json")
    assert data["ack_limit"] == "15m" and data["handle_limit"] == "4wh"
    assert Policy.model_validate(data) == policy


def test_normalise_and_match() -> None:
    assert normalise("破损超过 25c㎡，") == normalise("破损超过25cm2")
    assert match_condition([], "x") is None


# --------------------------------------------------------------------------- bad files

MINIMAL = """\
defaults:
  ack: 1工作时
  urgent_ack: 15m
  handle: 3工作日
  ladder: [1工作日]
policies:
  fast: {handle: 2h}
categories:
  "01001":
    default: 2工作日
    conditions:
      - {when: 破损, handle: 4工作时}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sla.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_file(tmp_path: Path) -> None:
    book = load_policies(_write(tmp_path, MINIMAL))
    assert book.names() == {"default", "fast"}
    assert book.for_case("01001", "破损", "normal").handle_limit == L("4wh")


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "message"),
    [
        ("handle: 4工作时}", "handle: 4 days}", 12, "categories.01001.conditions.0.handle", "time limit"),
        ("default: 2工作日", "default: 2", 10, "categories.01001.default", "needs a unit"),
        ("  ack: 1工作时", "  ack: 1工作时\n  bogus: 1", 3, "defaults.bogus", "Extra inputs"),
        ("fast: {handle: 2h}", "fast: {handle: 2h, warn_fraction: 1.5}", 7, "policies.fast.warn_fraction", ""),
        ('  "01001":', '  "1001":', 9, "categories.1001", "5-digit"),
        ('  "01001":', "  01001:", 9, "categories.01001", "quoted"),
        ("    default: 2工作日", "    base: nope\n    default: 2工作日", 10, "categories.01001.base", "unknown policy"),
        ("  ladder: [1工作日]", "  ladder: []", 5, "defaults.ladder", ""),
    ],
)
def test_bad_sla_yaml_names_line_and_field(
    tmp_path: Path, old: str, new: str, line: int, field: str, message: str
) -> None:
    assert old in MINIMAL
    path = _write(tmp_path, MINIMAL.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_policies(path)
    assert (err.value.line, err.value.field) == (line, field), str(err.value)
    assert message in err.value.message
    assert str(err.value).startswith(f"{path}:{line}: ")


def test_not_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_policies(_write(tmp_path, "defaults: [\n"))
    assert err.value.line is not None
