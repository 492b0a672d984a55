"""The grid-code crosswalk (config/crosswalk.yaml): gridbus's codes ↔ the city
social-governance grid's codes, for the city-platform bridge."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.config import get_settings
from shared.configfiles import file_version, load_yaml_model


class Crosswalk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: str = Field(min_length=1, description="The city grid's name")
    grids: dict[str, str] = Field(default_factory=dict, description="gridbus code → city grid code")

    @field_validator("grids")
    @classmethod
    def _codes(cls, value: dict[str, str]) -> dict[str, str]:
        for ours in value:
            if not (ours.isdigit() and len(ours) in (6, 9, 12, 15)):
                raise ValueError(f"{ours!r} is not a 6/9/12/15-digit gridbus code")
        seen: dict[str, str] = {}
        for ours, city in value.items():
            if city in seen:
                raise ValueError(f"city code {city!r} is given for both {seen[city]} and {ours}")
            seen[city] = ours
        return value

    def to_city(self, code: str) -> str | None:
        """The city code of the longest listed prefix of a gridbus code (a patch not listed
        falls back to its community, street or district)."""
        for n in (15, 12, 9, 6):
            if len(code) >= n and code[:n] in self.grids:
                return self.grids[code[:n]]
        return None

    def from_city(self, city: str) -> str | None:
        for ours, theirs in self.grids.items():
            if theirs == city:
                return ours
        return None


@lru_cache(maxsize=4)
def _load(path: str, _mtime_ns: int, _size: int) -> Crosswalk:
    return load_yaml_model(path, Crosswalk)


def load_crosswalk(path: Path | None = None) -> Crosswalk:
    """Load and validate crosswalk.yaml (ConfigError naming file, line and field); an
    absent file is an empty crosswalk."""
    path = Path(path or get_settings().config_dir / "crosswalk.yaml")
    if not path.exists():
        return Crosswalk(system="none")
    return _load(*file_version(path))
