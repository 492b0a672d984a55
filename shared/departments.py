"""Partner departments (config/departments.yaml): codes, liaisons per street, contacts.

The plan (§四(三)2) asks every partner to name one liaison (联络员) who handles the
street-level (level 3) share of its work; the notifier reaches that person, and the
department's duty desk through its contacts.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.config import get_settings
from shared.configfiles import file_version, load_yaml_model

GRID_STATION = "station"  # the street's grid station (城市管理工作站): triage

Channel = Literal["webhook", "wecom", "wecom_robot", "dingtalk_robot", "sms", "email"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Liaison(_Strict):
    """A department's person for one street (联络员)."""

    street: str = Field(pattern=r"^\d{9}$")
    name: str = Field(min_length=1)
    phone: str = Field(pattern=r"^[0-9+\- ]{5,20}$")
    wecom_user: str | None = Field(None, pattern=r"^[A-Za-z0-9_.@\-]{1,64}$")
    email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+$")


class Contact(_Strict):
    """Where the department as a whole is told (duty desk, group robot, mailbox)."""

    channel: Channel
    to: str = Field(min_length=1, description="URL, WeCom user id, phone number or e-mail address")
    name: str = ""


class Department(_Strict):
    code: str = Field(pattern=r"^[a-z][a-z0-9]{1,19}$")
    name: str
    full_name: str = ""
    webhook: str | None = None
    liaisons: list[Liaison] = Field(default_factory=list)
    contacts: list[Contact] = Field(default_factory=list)

    @field_validator("liaisons")
    @classmethod
    def _one_per_street(cls, value: list[Liaison]) -> list[Liaison]:
        streets = [x.street for x in value]
        dup = sorted({s for s in streets if streets.count(s) > 1})
        if dup:
            raise ValueError(f"more than one liaison for street(s) {', '.join(dup)}")
        return value

    def liaison(self, street: str) -> Liaison | None:
        """The liaison for a street (a 9-digit code, or any longer grid code inside it)."""
        street = street[:9]
        return next((x for x in self.liaisons if x.street == street), None)


class DepartmentsFile(_Strict):
    departments: list[Department] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "DepartmentsFile":
        codes = [d.code for d in self.departments]
        dup = sorted({c for c in codes if codes.count(c) > 1})
        if dup:
            raise ValueError(f"duplicate department code(s) {', '.join(dup)}")
        if GRID_STATION not in codes:
            raise ValueError(f"the grid station department {GRID_STATION!r} must be listed")
        return self


@lru_cache(maxsize=8)
def _load_cached(path: str, _mtime_ns: int, _size: int) -> tuple[Department, ...]:
    return tuple(load_yaml_model(path, DepartmentsFile).departments)


def load_departments(path: Path | None = None) -> list[Department]:
    """Load and validate departments.yaml (ConfigError naming file, line and field).
    Cached per file version: the router reloads its tree often, this file rarely changes."""
    path = Path(path or get_settings().config_dir / "departments.yaml")
    return list(_load_cached(*file_version(path)))


def load_department_codes(path: Path | None = None) -> list[str]:
    return [d.code for d in load_departments(path)]
