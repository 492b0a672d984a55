"""The category catalog: the national standard in full, local extensions, file errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shared.catalog import Catalog, load_catalog, parse_catalog
from shared.config import DEFAULT_CONFIG_DIR
from shared.configfiles import ConfigError

SHIPPED = DEFAULT_CONFIG_DIR / "catalog.tsv"
NATIONAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "gbt47678.5-2026_catalog.tsv"
HEADER = "code\tkind\tclass_code\tclass_name\tname\torigin\n"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(SHIPPED)


def test_all_national_entries_plus_local_extensions(catalog: Catalog) -> None:
    national = [c for c in catalog if not c.local]
    local = [c for c in catalog if c.local]
    assert len(national) == 403
    assert sum(c.kind == "component" for c in national) == 153
    assert sum(c.kind == "matter" for c in national) == 250
    assert len(local) >= 4
    assert len(catalog) == 403 + len(local)


@pytest.mark.skipif(not NATIONAL.exists(), reason="the published catalog is not beside the checkout")
def test_national_entries_equal_the_published_catalog(catalog: Catalog) -> None:
    published = set()
    for line in NATIONAL.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or line.startswith("code\t") or not line.strip():
            continue
        published.add(tuple(line.split("\t")))
    ours = {(c.code, c.kind, c.class_code, c.class_name, c.name) for c in catalog if not c.local}
    assert ours == published


@pytest.mark.parametrize("name", ["非法经营燃气", "违规室内装饰装修", "建筑垃圾撒漏", "一氧化碳中毒隐患"])
def test_the_plans_matters_are_local_extensions(catalog: Catalog, name: str) -> None:
    hits = [c for c in catalog if c.name == name]
    assert len(hits) == 1
    entry = hits[0]
    assert entry.local and entry.kind == "matter"
    assert int(entry.code[2:]) >= 900  # counted down from 999
    assert entry.code[:2] == entry.class_code


def test_local_codes_never_collide_with_national_ones(catalog: Catalog) -> None:
    national = {(c.kind, c.code) for c in catalog if not c.local}
    for c in catalog:
        if c.local:
            assert (c.kind, c.code) not in national
            # the class must exist nationally, with the same name
            same_class = [n for n in catalog if not n.local and n.kind == c.kind and n.class_code == c.class_code]
            assert same_class and same_class[0].class_name == c.class_name


def test_get_prefers_the_component_for_a_shared_code(catalog: Catalog) -> None:
    assert catalog.get("01037").name == "路灯"
    assert catalog.get("01037").kind == "component"
    assert catalog.get("01037", "matter").name == "路灯异常"
    assert catalog.get("06001").kind == "matter"  # matters only from class 06 on
    assert catalog.get("06001", "component") is None
    assert catalog.get("99999") is None
    assert "01037" in catalog and "99999" not in catalog
    assert catalog.kinds_of("01037") == ("component", "matter")


def test_tree_is_json_and_counts_everything(catalog: Catalog) -> None:
    tree = catalog.tree()
    json.dumps(tree, ensure_ascii=False)
    assert tree["count"] == len(catalog)
    assert sum(len(c["categories"]) for c in tree["classes"]) == len(catalog)
    keys = [(c["kind"], c["class_code"]) for c in tree["classes"]]
    assert keys[0] == ("component", "01") and keys[-1] == ("matter", "10")
    assert len(keys) == 15
    first = tree["classes"][0]
    assert set(first) == {"class_code", "class_name", "kind", "categories"}
    assert set(first["categories"][0]) == {"code", "name", "kind", "local"}
    assert any(e["local"] for c in tree["classes"] for e in c["categories"])


def test_load_is_cached_until_the_file_changes(tmp_path: Path) -> None:
    f = tmp_path / "catalog.tsv"
    f.write_text(HEADER + "01037\tcomponent\t01\t市政公用设施\t路灯\tnational\n", encoding="utf-8")
    first = load_catalog(f)
    assert load_catalog(f) is first
    f.write_text(
        HEADER + "01037\tcomponent\t01\t市政公用设施\t路灯\tnational\n"
        "01038\tcomponent\t01\t市政公用设施\t地灯\tnational\n",
        encoding="utf-8",
    )
    os.utime(f, ns=(1, 1))  # a different mtime even on a coarse clock
    second = load_catalog(f)
    assert len(second) == 2


@pytest.mark.parametrize(
    "rows, line, field, words",
    [
        ("0103\tcomponent\t01\t市政公用设施\t路灯\tnational\n", 2, "code", "5-digit"),
        ("01037\tthing\t01\t市政公用设施\t路灯\tnational\n", 2, "kind", "component"),
        ("01037\tcomponent\t02\t市政公用设施\t路灯\tnational\n", 2, "class_code", "does not match"),
        ("01037\tcomponent\t01\t市政公用设施\t路灯\n", 2, "", "6 tab-separated"),
        (
            "01037\tcomponent\t01\t市政公用设施\t路灯\tnational\n01037\tcomponent\t01\t市政公用设施\t路灯\tnational\n",
            3,
            "code",
            "duplicate",
        ),
        (
            "01037\tcomponent\t01\t市政公用设施\t路灯\tnational\n01038\tcomponent\t01\t市政设施\t地灯\tnational\n",
            3,
            "class_name",
            "differs",
        ),
        ("06100\tmatter\t06\t市容环境类\t新事项\tlocal\n", 2, "code", "999"),
        ("06999\tmatter\t06\t市容环境类\t新事项\tregional\n", 2, "origin", "national, local"),
    ],
)
def test_bad_rows_name_line_and_field(rows: str, line: int, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_catalog(HEADER + rows, "x.tsv")
    assert info.value.line == line
    assert info.value.field == field
    assert words in info.value.message
    assert str(info.value).startswith(f"x.tsv:{line}:")


def test_bad_header_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected columns"):
        parse_catalog("code\tkind\n", "x.tsv")
    with pytest.raises(ConfigError, match="cannot read"):
        load_catalog(tmp_path / "missing.tsv")
