"""The Qixing grid registry: codes, commanders by level, lat/lon lookup, file errors."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from shared.config import DEFAULT_CONFIG_DIR
from shared.configfiles import ConfigError
from shared.departments import load_departments
from shared.grid import GridRegistry, OutsideDistrict, UnknownGrid, load_grid

SHIPPED = DEFAULT_CONFIG_DIR / "grid.yaml"
CHENSHAN_1 = (25.2800, 110.3120)  # inside 辰山社区第一片区
YANGJIAOSHAN_2 = (25.2590, 110.3390)  # inside 羊角山社区第二片区
IN_DISTRICT_UNMAPPED = (25.2672, 110.3251)  # docs/design.md §9's example point (穿山路)
OUTSIDE = (25.1, 110.2)


@pytest.fixture(scope="module")
def grid() -> GridRegistry:
    return load_grid(SHIPPED)


def test_the_design_example_patch_is_valid(grid: GridRegistry) -> None:
    cell = grid.cell("450305001001001")
    assert cell is not None
    assert (cell.street, cell.street_name) == ("450305001", "七星区街道")
    assert cell.community == "450305001001" and len(cell.code) == 15
    assert grid.cell("450305003001001") is not None  # docs/design.md §9's report


def test_streets_of_the_district(grid: GridRegistry) -> None:
    names = set(grid.streets.values())
    assert names == {"七星区街道", "东江街道", "穿山街道", "漓东街道", "朝阳乡", "华侨旅游经济区"}
    assert all(code.startswith("450305") and len(code) == 9 for code in grid.streets)
    assert grid.streets["450305001"] == "七星区街道"


@pytest.mark.parametrize("community", ["辰山社区", "羊角山社区"])
def test_pilot_communities_have_two_or_three_mapped_patches(grid: GridRegistry, community: str) -> None:
    cells = [c for c in grid.cells() if c.community_name == community]
    assert 2 <= len(cells) <= 3
    assert all(c.pilot for c in cells)
    for c in cells:
        assert any(code == c.code for code, _ in grid._polygons), f"{c.code} has no polygon"


def test_every_cell_has_commanders_on_all_five_levels(grid: GridRegistry) -> None:
    for cell in grid.cells():
        assert set(cell.commanders) == {1, 2, 3, 4, 5}
        for level, people in cell.commanders.items():
            assert people, f"{cell.code} has nobody at level {level}"
            assert all(p.phone and p.name and p.role for p in people)
        assert len(cell.commanders[5]) >= 2  # ≥ 2 城管队员 per patch (plan §四(一)5)


def test_commanders_lookup(grid: GridRegistry) -> None:
    street_chief = grid.commanders("450305001001001", 3)[0]
    assert "总管" in street_chief.role and street_chief.wecom_user
    assert grid.commanders("450305001001001", 1) == grid.commanders("450305400001001", 1)
    assert grid.commanders("450305001001001", 5) != grid.commanders("450305001001002", 5)
    with pytest.raises(ValueError):
        grid.commanders("450305001001001", 6)
    with pytest.raises(UnknownGrid):
        grid.commanders("450305001001999", 5)


def test_resolve_by_point(grid: GridRegistry) -> None:
    assert grid.resolve(*CHENSHAN_1).code == "450305001001001"
    assert grid.resolve(*YANGJIAOSHAN_2).code == "450305003002002"
    # on the shared edge of two patches: the first one listed, deterministically
    assert grid.resolve(25.2800, 110.3140).code == "450305001001001"


def test_resolve_outside_the_district(grid: GridRegistry) -> None:
    with pytest.raises(OutsideDistrict) as info:
        grid.resolve(*OUTSIDE)
    assert str(info.value) == "location (25.1, 110.2) is outside district 450305 (七星区)"
    with pytest.raises(OutsideDistrict):  # a grid code does not excuse a point outside
        grid.resolve(*OUTSIDE, grid="450305001001001")


def test_resolve_inside_but_unmapped_says_what_to_send(grid: GridRegistry) -> None:
    with pytest.raises(UnknownGrid, match="send location.grid"):
        grid.resolve(*IN_DISTRICT_UNMAPPED)


def test_resolve_with_a_patch_code(grid: GridRegistry) -> None:
    assert grid.resolve(*IN_DISTRICT_UNMAPPED, grid="450305003001001").code == "450305003001001"
    with pytest.raises(UnknownGrid, match="unknown unit-grid code"):
        grid.resolve(*IN_DISTRICT_UNMAPPED, grid="450305003001009")
    with pytest.raises(UnknownGrid, match="district 450305"):
        grid.resolve(*IN_DISTRICT_UNMAPPED, grid="450304001001001")


def test_resolve_with_a_street_or_community_code(grid: GridRegistry) -> None:
    assert grid.resolve(*CHENSHAN_1, grid="450305001001").code == "450305001001001"
    assert grid.resolve(*YANGJIAOSHAN_2, grid="450305003").code == "450305003002002"
    with pytest.raises(UnknownGrid, match="no mapped patch of 450305001"):
        grid.resolve(*YANGJIAOSHAN_2, grid="450305001")
    with pytest.raises(UnknownGrid, match="unknown community"):
        grid.resolve(*CHENSHAN_1, grid="450305001077")


def test_every_street_has_a_liaison_of_every_department(grid: GridRegistry) -> None:
    for dept in load_departments(DEFAULT_CONFIG_DIR / "departments.yaml"):
        for street in grid.streets:
            liaison = dept.liaison(street)
            assert liaison is not None, f"{dept.code} has no liaison for {street}"
            assert liaison.phone and liaison.wecom_user
        assert {x.street for x in dept.liaisons} <= set(grid.streets)
        assert dept.liaison("450305001001001") == dept.liaison("450305001")  # any code inside the street


def test_all_three_carriers_are_departments() -> None:
    codes = {d.code for d in load_departments(DEFAULT_CONFIG_DIR / "departments.yaml")}
    assert {"cmcc", "unicom", "telecom", "cable", "station"} <= codes
    assert {
        "cityman",
        "police",
        "natres",
        "ecology",
        "housing",
        "agri",
        "emergency",
        "market",
        "municipal",
        "sanitation",
        "drainage",
        "water",
        "gas",
        "lighting",
        "power",
    } <= codes


# ------------------------------------------------------------------ bad files


def _variant(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    edit(data)
    out = tmp_path / f"grid-{uuid.uuid4().hex[:8]}.yaml"  # a fresh name: load_grid caches by file
    out.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return out


def _line_of(path: Path, needle: str) -> int:
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            return n
    raise AssertionError(needle)


def test_bad_patch_code_names_line_and_field(tmp_path: Path) -> None:
    def edit(d):
        d["streets"][0]["communities"][0]["patches"][1]["code"] = "45030500100100X"

    path = _variant(tmp_path, edit)
    with pytest.raises(ConfigError) as info:
        load_grid(path)
    assert info.value.field == "streets.0.communities.0.patches.1.code"
    assert info.value.line == _line_of(path, "45030500100100X")


def test_patch_outside_its_community(tmp_path: Path) -> None:
    def edit(d):
        d["streets"][0]["communities"][0]["patches"][2]["code"] = "450305001002009"

    path = _variant(tmp_path, edit)
    with pytest.raises(ConfigError, match="not in community 450305001001") as info:
        load_grid(path)
    assert info.value.line == _line_of(path, "450305001002009")


def test_overlapping_polygons_are_refused(tmp_path: Path) -> None:
    def edit(d):
        patches = d["streets"][0]["communities"][0]["patches"]
        patches[1]["polygon"] = patches[0]["polygon"]

    path = _variant(tmp_path, edit)
    with pytest.raises(ConfigError, match="overlaps") as info:
        load_grid(path)
    assert info.value.field == "streets.0.communities.0.patches.1.polygon"


def test_polygon_outside_the_district_is_refused(tmp_path: Path) -> None:
    def edit(d):
        d["streets"][0]["communities"][0]["patches"][0]["polygon"] = [
            [110.1, 25.1],
            [110.2, 25.1],
            [110.2, 25.2],
            [110.1, 25.1],
        ]

    with pytest.raises(ConfigError, match="leaves the district"):
        load_grid(_variant(tmp_path, edit))


def test_missing_commanders_is_a_clear_error(tmp_path: Path) -> None:
    def edit(d):
        del d["streets"][1]["commanders"]

    path = _variant(tmp_path, edit)
    with pytest.raises(ConfigError) as info:
        load_grid(path)
    assert info.value.field == "streets.1.commanders"
    assert "Field required" in info.value.message


def test_duplicate_codes_are_refused(tmp_path: Path) -> None:
    def edit(d):
        d["streets"][1]["communities"][0]["code"] = "450305001001"

    with pytest.raises(ConfigError, match="not in street 450305002"):
        load_grid(_variant(tmp_path, edit))

    def edit2(d):
        d["streets"][0]["communities"][1]["code"] = "450305001001"
        for p in d["streets"][0]["communities"][1]["patches"]:
            p["code"] = "450305001001" + p["code"][-3:]

    with pytest.raises(ConfigError, match="duplicate code 450305001001"):
        load_grid(_variant(tmp_path, edit2))
