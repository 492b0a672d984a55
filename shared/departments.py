"""Partner departments (config/departments.yaml)."""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from shared.config import get_settings

GRID_STATION = "station"  # the street's grid station (城市管理工作站): triage


class Department(BaseModel):
    code: str = Field(pattern=r"^[a-z][a-z0-9]{1,19}$")
    name: str
    webhook: str | None = None


def load_departments(path: Path | None = None) -> list[Department]:
    path = path or get_settings().config_dir / "departments.yaml"
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    return [Department.model_validate(d) for d in data["departments"]]


def load_department_codes(path: Path | None = None) -> list[str]:
    return [d.code for d in load_departments(path)]
