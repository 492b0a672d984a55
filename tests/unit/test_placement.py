"""Every location in the district is accepted: patch, else street outline, else district
triage; outside, the neighbouring district is named (illustrative boundary data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.configfiles import ConfigError
from shared.grid import GridRegistry, OutsideDistrict, UnknownGrid, load_grid

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def grid() -> GridRegistry:
    return load_grid(REPO / "config" / "grid.yaml")


@pytest.mark.parametrize(
    "lat,lon,grid_code,code,resolution",
    [
        (25.2800, 110.3120, None, "450305001001001", "patch"),  # 辰山社区第一片区 polygon
        (25.2900, 110.3100, None, "450305001", "street"),  # 七星区街道 outline, no patch
        (25.2672, 110.3251, None, "450305002", "street"),  # docs/design.md §9's point (穿山路), 东江 outline
        (25.2400, 110.3400, None, "450305003", "street"),  # 穿山街道
        (25.2100, 110.3800, None, "450305400", "street"),  # 华侨旅游经济区
        (25.1750, 110.4000, None, "450305", "district"),  # in the district, in no outline
        (25.2900, 110.3100, "450305001001", "450305001", "street"),  # a community code, no patch holds it
        (25.2000, 110.3500, "450305003001001", "450305003001001", "patch"),  # a patch code is taken as sent
        (25.2900, 110.3100, "450305", "450305001", "street"),  # the district's code: placed as without a code
        (25.1750, 110.4000, "450305", "450305", "district"),  # (was a KeyError: a 500 for a report)
    ],
)
def test_every_point_of_the_district_is_placed(
    grid: GridRegistry, lat: float, lon: float, grid_code: str | None, code: str, resolution: str
) -> None:
    place = grid.place(lat, lon, grid_code)
    assert (place.code, place.resolution) == (code, resolution)
    assert place.street == code[:9] if resolution != "district" else place.street == "450305"


def test_outside_names_the_neighbour(grid: GridRegistry) -> None:
    with pytest.raises(OutsideDistrict, match="象山区 \\(450304\\)"):
        grid.place(25.2000, 110.2500)
    with pytest.raises(OutsideDistrict, match="灵川县"):
        grid.place(25.4000, 110.5000)
    with pytest.raises(OutsideDistrict, match="does not say which district"):
        grid.place(39.9, 116.4)  # Beijing: no boundary data


def test_bad_codes_are_still_refused(grid: GridRegistry) -> None:
    with pytest.raises(UnknownGrid, match="unknown unit-grid code"):
        grid.place(25.2900, 110.3100, "450305003001009")
    with pytest.raises(UnknownGrid, match="district 450305"):
        grid.place(25.2900, 110.3100, "450304001001001")


def test_commanders_of_a_street_or_the_district(grid: GridRegistry) -> None:
    assert [c.name for c in grid.commanders("450305001", 3)] == ["蒋卫东", "陈晓燕"]
    assert grid.commanders("450305001", 5) == []
    assert grid.commanders("450305", 2)[0].name == "黄海波"


def test_outline_must_cover_its_patches(tmp_path: Path) -> None:
    text = (REPO / "config" / "grid.yaml").read_text(encoding="utf-8")
    bad = text.replace(
        "outline: [[110.3050, 25.2650], [110.3250, 25.2650], [110.3250, 25.3000], "
        "[110.3050, 25.3000], [110.3050, 25.2650]]",
        "outline: [[110.3050, 25.2650], [110.3150, 25.2650], [110.3150, 25.3000], "
        "[110.3050, 25.3000], [110.3050, 25.2650]]",
    )
    assert bad != text
    (tmp_path / "grid.yaml").write_text(bad, encoding="utf-8")
    with pytest.raises(ConfigError, match="does not cover its patch 450305001001002"):
        load_grid(tmp_path / "grid.yaml")
