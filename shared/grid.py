"""The five-level grid registry (config/grid.yaml) and the lat/lon → unit-grid lookup.

Levels: 1 city · 2 district · 3 street · 4 community · 5 patch. A patch's commanders by
level are the people of every cell on its path, so escalation one level up is a lookup.
Polygons are WGS84 [lon, lat]; points on a shared edge resolve to the first patch listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import shapely
from pydantic import BaseModel, ConfigDict, Field, field_validator
from shapely.geometry import Polygon

from shared.config import get_settings
from shared.configfiles import error_at, file_version, load_yaml_model, read_yaml

LEVELS = {1: "city", 2: "district", 3: "street", 4: "community", 5: "patch"}


class GridError(ValueError):
    """A location that cannot be placed on the grid; the message says what to send."""


class OutsideDistrict(GridError):
    pass


class UnknownGrid(GridError):
    pass


@dataclass(frozen=True)
class Commander:
    name: str
    role: str
    phone: str
    wecom_user: str | None


@dataclass(frozen=True)
class Placement:
    """Where a report was placed: a patch, else the street whose outline holds the point,
    else the district (its triage). `code` is the patch's 15-digit code, the street's 9 or
    the district's 6; `street` the 9-digit street code, or the district code."""

    code: str
    street: str
    resolution: str  # patch | street | district
    name: str
    cell: "GridCell | None" = None


@dataclass(frozen=True)
class GridCell:
    code: str  # 15 digits
    name: str
    street: str  # 9 digits
    street_name: str
    community: str  # 12 digits
    community_name: str
    commanders: dict[int, list[Commander]]  # level 1..5 → people
    pilot: bool = False
    illustrative: bool = False

    def __hash__(self) -> int:  # the dict field would make the generated hash fail
        return hash(self.code)


# --------------------------------------------------------------------------- file format


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


Phone = Annotated[str, Field(pattern=r"^[0-9+\- ]{5,20}$")]
LonLat = tuple[Annotated[float, Field(ge=-180, le=180)], Annotated[float, Field(ge=-90, le=90)]]
Ring = Annotated[list[LonLat], Field(min_length=4)]


class CommanderSpec(_Strict):
    name: str = Field(min_length=1)
    role: str = Field(min_length=1)
    phone: Phone
    wecom_user: str | None = Field(None, pattern=r"^[A-Za-z0-9_.@\-]{1,64}$")


class PatchSpec(_Strict):
    code: str = Field(pattern=r"^\d{15}$")
    name: str = Field(min_length=1)
    illustrative: bool = False
    polygon: Ring | None = None
    commanders: list[CommanderSpec] = Field(min_length=1)


class CommunitySpec(_Strict):
    code: str = Field(pattern=r"^\d{12}$")
    name: str = Field(min_length=1)
    pilot: bool = False
    illustrative: bool = False
    commanders: list[CommanderSpec] = Field(min_length=1)
    patches: list[PatchSpec] = Field(min_length=1)


class StreetSpec(_Strict):
    code: str = Field(pattern=r"^\d{9}$")
    name: str = Field(min_length=1)
    illustrative: bool = False
    outline: Ring | None = Field(None, description="The street's area: a point in no mapped patch is placed here")
    commanders: list[CommanderSpec] = Field(min_length=1)
    communities: list[CommunitySpec] = Field(min_length=1)


class CitySpec(_Strict):
    code: str = Field(pattern=r"^\d{6}$")
    name: str
    commanders: list[CommanderSpec] = Field(min_length=1)


class NeighbourSpec(_Strict):
    """A neighbouring district or county, so that a report from outside can be told where to go."""

    code: str = Field(pattern=r"^\d{6}$")
    name: str = Field(min_length=1)
    illustrative: bool = False
    boundary: Ring


class DistrictSpec(_Strict):
    code: str = Field(pattern=r"^\d{6}$")
    name: str
    boundary_illustrative: bool = False
    boundary: Ring
    commanders: list[CommanderSpec] = Field(min_length=1)
    neighbours: list[NeighbourSpec] = Field(default_factory=list)


class GridFile(_Strict):
    city: CitySpec
    district: DistrictSpec
    streets: list[StreetSpec] = Field(min_length=1)

    @field_validator("streets")
    @classmethod
    def _unique_streets(cls, value: list[StreetSpec]) -> list[StreetSpec]:
        codes = [s.code for s in value]
        dup = {c for c in codes if codes.count(c) > 1}
        if dup:
            raise ValueError(f"duplicate street code(s) {', '.join(sorted(dup))}")
        return value


# --------------------------------------------------------------------------- registry


def _people(specs: list[CommanderSpec]) -> list[Commander]:
    return [Commander(s.name, s.role, s.phone, s.wecom_user) for s in specs]


class GridRegistry:
    """Read-only after construction."""

    def __init__(self, spec: GridFile, source: str = "") -> None:
        self.source = source
        self.district_code = spec.district.code
        self.district_name = spec.district.name
        self.city_code = spec.city.code
        self.boundary: Polygon = Polygon(spec.district.boundary)
        shapely.prepare(self.boundary)
        self.streets: dict[str, str] = {}
        self.communities: dict[str, str] = {}
        self._cells: dict[str, GridCell] = {}
        self._polygons: list[tuple[str, Polygon]] = []
        self._names: dict[str, str] = {spec.district.code: spec.district.name}
        city, district = _people(spec.city.commanders), _people(spec.district.commanders)
        self._area_commanders: dict[str, dict[int, list[Commander]]] = {spec.district.code: {1: city, 2: district}}
        self._outlines: list[tuple[str, Polygon]] = []
        self.neighbours: list[tuple[str, str, Polygon]] = []
        for n in spec.district.neighbours:
            poly = Polygon(n.boundary)
            shapely.prepare(poly)
            self.neighbours.append((n.code, n.name, poly))
        for street in spec.streets:
            self.streets[street.code] = street.name
            self._names[street.code] = street.name
            self._area_commanders[street.code] = {1: city, 2: district, 3: _people(street.commanders)}
            if street.outline:
                outline = Polygon(street.outline)
                shapely.prepare(outline)
                self._outlines.append((street.code, outline))
            for com in street.communities:
                self.communities[com.code] = com.name
                self._names[com.code] = com.name
                for patch in com.patches:
                    self._names[patch.code] = patch.name
                    self._cells[patch.code] = GridCell(
                        code=patch.code,
                        name=patch.name,
                        street=street.code,
                        street_name=street.name,
                        community=com.code,
                        community_name=com.name,
                        commanders={
                            1: city,
                            2: district,
                            3: _people(street.commanders),
                            4: _people(com.commanders),
                            5: _people(patch.commanders),
                        },
                        pilot=com.pilot,
                        illustrative=patch.illustrative,
                    )
                    if patch.polygon:
                        poly = Polygon(patch.polygon)
                        shapely.prepare(poly)
                        self._polygons.append((patch.code, poly))

    # -- queries

    def cell(self, code: str) -> GridCell | None:
        return self._cells.get(code)

    def cells(self) -> list[GridCell]:
        return list(self._cells.values())

    def name_of(self, code: str) -> str | None:
        """Name of a district/street/community/patch code."""
        return self._names.get(code)

    def is_known(self, code: str) -> bool:
        return code in self._names

    def outlines(self) -> list[tuple[str, list[tuple[float, float]]]]:
        """(patch code, [(lon, lat), …]) of every patch that has a polygon (maps)."""
        return [(code, [(x, y) for x, y in poly.exterior.coords]) for code, poly in self._polygons]

    def commanders(self, cell_code: str, level: int) -> list[Commander]:
        """The commanders of `level` for a patch, or for a street or the district (a case
        placed there: they have no community or patch level, so nobody below)."""
        if level not in LEVELS:
            raise ValueError(f"grid level must be 1..5, got {level}")
        cell = self._cells.get(cell_code)
        if cell is None:
            area = self._area_commanders.get(cell_code)
            if area is None:
                raise UnknownGrid(f"unknown grid cell {cell_code!r}")
            return list(area.get(level, []))
        return list(cell.commanders[level])

    def neighbour_of(self, lat: float, lon: float) -> tuple[str, str] | None:
        """(code, name) of the neighbouring district holding the point, when known."""
        for code, name, poly in self.neighbours:
            if shapely.intersects_xy(poly, lon, lat):
                return code, name
        return None

    def outside_message(self, lat: float, lon: float) -> str:
        where = self.neighbour_of(lat, lon)
        tail = (
            f"; it lies in {where[1]} ({where[0]}): report it to that district's platform"
            if where
            else "; the boundary data does not say which district holds it"
        )
        return f"location ({lat}, {lon}) is outside district {self.district_code} ({self.district_name}){tail}"

    def place(self, lat: float, lon: float, grid: str | None = None) -> Placement:
        """Every point of the district is accepted: a mapped (or named) patch, else the street
        whose outline holds the point (or the street/community code sent), else the district
        (its triage). OutsideDistrict names the neighbouring district when known; a malformed
        or unknown code sent in location.grid is still UnknownGrid."""
        if not self.in_district(lat, lon):
            raise OutsideDistrict(self.outside_message(lat, lon))
        try:
            cell = self.resolve(lat, lon, grid)
            return Placement(cell.code, cell.street, "patch", cell.name, cell)
        except UnknownGrid:
            if grid and len(grid) == 15 or grid and grid not in self._names:
                raise
        if grid and grid[:9] in self.streets:  # a street or community code without a mapped patch holding the point
            street = grid[:9]
            return Placement(street, street, "street", self.streets[street])
        # the district's own code sent (what a report placed at the district is given back): placed as without one
        for code, outline in self._outlines:
            if shapely.intersects_xy(outline, lon, lat):
                return Placement(code, code, "street", self.streets[code])
        return Placement(self.district_code, self.district_code, "district", self.district_name)

    def in_district(self, lat: float, lon: float) -> bool:
        return bool(shapely.intersects_xy(self.boundary, lon, lat))

    def resolve(self, lat: float, lon: float, grid: str | None = None) -> GridCell:
        """The patch a report belongs to; raises OutsideDistrict or UnknownGrid."""
        if not self.in_district(lat, lon):
            raise OutsideDistrict(
                f"location ({lat}, {lon}) is outside district {self.district_code} ({self.district_name})"
            )
        if grid:
            if not re.fullmatch(r"\d{6}(\d{3}){1,3}", grid) or not grid.startswith(self.district_code):
                raise UnknownGrid(
                    f"grid {grid!r} is not a 9/12/15-digit code of district {self.district_code} ({self.district_name})"
                )
            if len(grid) == 15:
                cell = self._cells.get(grid)
                if cell is None:
                    raise UnknownGrid(f"unknown unit-grid code {grid!r}: send a patch code of the grid registry")
                return cell
            if grid not in self._names:
                raise UnknownGrid(f"unknown {'street' if len(grid) == 9 else 'community'} code {grid!r}")
            found = self._locate(lat, lon, prefix=grid)
            if found is None:
                raise UnknownGrid(
                    f"location ({lat}, {lon}) is in no mapped patch of {grid} ({self._names[grid]}): "
                    "send location.grid as the 15-digit patch code"
                )
            return found
        found = self._locate(lat, lon)
        if found is None:
            raise UnknownGrid(
                f"location ({lat}, {lon}) is inside {self.district_name} but in no mapped patch: "
                "send location.grid (the 15-digit unit-grid code of the patch)"
            )
        return found

    def _locate(self, lat: float, lon: float, prefix: str = "") -> GridCell | None:
        for code, poly in self._polygons:
            if code.startswith(prefix) and shapely.intersects_xy(poly, lon, lat):
                return self._cells[code]
        return None


# --------------------------------------------------------------------------- loading


def _check(spec: GridFile, path: Path, node: Any) -> None:
    """Cross-field checks pydantic cannot see: codes nest, polygons are sane."""
    district = spec.district.code
    if not Polygon(spec.district.boundary).is_valid:
        raise error_at(
            path, node, ("district", "boundary"), "district boundary polygon is not valid (self-intersecting?)"
        )
    if spec.district.code[:4] != spec.city.code[:4]:
        raise error_at(path, node, ("district", "code"), f"{district} is not in city {spec.city.code}")
    boundary = Polygon(spec.district.boundary)
    seen: dict[str, tuple[Any, ...]] = {}
    mapped: list[tuple[tuple[Any, ...], Polygon]] = []

    def unique(code: str, loc: tuple[Any, ...]) -> None:
        if code in seen:
            raise error_at(path, node, loc, f"duplicate code {code} (also at {'.'.join(map(str, seen[code]))})")
        seen[code] = loc

    outlines: list[tuple[tuple[Any, ...], Polygon]] = []
    for i, n in enumerate(spec.district.neighbours):
        if not Polygon(n.boundary).is_valid:
            raise error_at(path, node, ("district", "neighbours", i, "boundary"), "polygon is not valid")
    for i, street in enumerate(spec.streets):
        loc = ("streets", i, "code")
        if not street.code.startswith(district):
            raise error_at(path, node, loc, f"street {street.code} is not in district {district}")
        unique(street.code, loc)
        if street.outline:
            oloc = ("streets", i, "outline")
            outline = Polygon(street.outline)
            if not outline.is_valid or outline.area == 0:
                raise error_at(path, node, oloc, "outline is not valid (self-intersecting or empty)")
            if not boundary.covers(outline):
                raise error_at(path, node, oloc, f"outline leaves the district {district} boundary")
            for other_loc, other in outlines:
                if outline.intersection(other).area > 1e-12:
                    raise error_at(path, node, oloc, f"outline overlaps {'.'.join(map(str, other_loc))}")
            outlines.append((oloc, outline))
        for j, com in enumerate(street.communities):
            cloc = ("streets", i, "communities", j, "code")
            if not com.code.startswith(street.code):
                raise error_at(path, node, cloc, f"community {com.code} is not in street {street.code}")
            unique(com.code, cloc)
            for k, patch in enumerate(com.patches):
                ploc = ("streets", i, "communities", j, "patches", k)
                if not patch.code.startswith(com.code):
                    raise error_at(path, node, ploc + ("code",), f"patch {patch.code} is not in community {com.code}")
                unique(patch.code, ploc + ("code",))
                if patch.polygon:
                    poly = Polygon(patch.polygon)
                    if not poly.is_valid or poly.area == 0:
                        raise error_at(
                            path, node, ploc + ("polygon",), "polygon is not valid (self-intersecting or empty)"
                        )
                    if not boundary.covers(poly):
                        raise error_at(
                            path, node, ploc + ("polygon",), f"polygon leaves the district {district} boundary"
                        )
                    for other_loc, other in mapped:
                        if poly.intersection(other).area > 1e-12:
                            other_code = ".".join(map(str, other_loc))
                            raise error_at(path, node, ploc + ("polygon",), f"polygon overlaps {other_code}")
                    mapped.append((ploc, poly))
        if street.outline:
            outline = Polygon(street.outline)
            for com in street.communities:
                for patch in com.patches:
                    if patch.polygon and not outline.covers(Polygon(patch.polygon)):
                        raise error_at(
                            path, node, ("streets", i, "outline"), f"outline does not cover its patch {patch.code}"
                        )


@lru_cache(maxsize=8)
def _load_cached(path: str, _mtime_ns: int, _size: int) -> GridRegistry:
    spec = load_yaml_model(path, GridFile)
    _, node = read_yaml(path)
    _check(spec, Path(path), node)
    return GridRegistry(spec, path)


def load_grid(path: Path | None = None) -> GridRegistry:
    """Load and validate grid.yaml (ConfigError naming file, line and field)."""
    path = Path(path or get_settings().config_dir / "grid.yaml")
    return _load_cached(*file_version(path))
