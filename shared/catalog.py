"""The category catalog (config/catalog.tsv): GB/T 47678.5-2026 plus local extensions.

Components (管理部件) and matters (管理事项) share 5-digit codes in classes 01–05
(01037 is both 路灯 and 路灯异常), so an entry is identified by (kind, code). A report
carries only the code; `Catalog.get(code)` then answers with the component where one
exists, because in classes 01–05 a report is about the state of a managed component.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Literal

from shared.config import get_settings
from shared.configfiles import ConfigError, file_version

KINDS = ("component", "matter")
Kind = Literal["component", "matter"]
COLUMNS = ("code", "kind", "class_code", "class_name", "name", "origin")
ORIGINS = ("national", "local")
_CODE = re.compile(r"^\d{5}$")
LOCAL_SUBCLASS_MIN = 900  # local extensions count down from 999; national ones count up


@dataclass(frozen=True)
class Category:
    code: str
    kind: str  # 'component' | 'matter'
    class_code: str
    class_name: str
    name: str
    local: bool

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.code)


class Catalog:
    """Immutable once built; safe to share between threads and to cache."""

    def __init__(self, categories: list[Category], source: str = "") -> None:
        self._items: tuple[Category, ...] = tuple(categories)
        self._by_key: dict[tuple[str, str], Category] = {c.key: c for c in self._items}
        self._by_code: dict[str, Category] = {}
        for c in self._items:
            # the component wins over the matter of the same code (see module docstring)
            if c.code not in self._by_code or c.kind == "component":
                self._by_code[c.code] = c
        self.source = source

    def get(self, code: str, kind: str | None = None) -> Category | None:
        if kind is None:
            return self._by_code.get(code)
        return self._by_key.get((kind, code))

    def kinds_of(self, code: str) -> tuple[str, ...]:
        return tuple(k for k in KINDS if (k, code) in self._by_key)

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def __iter__(self) -> Iterator[Category]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def codes(self) -> frozenset[str]:
        return frozenset(self._by_code)

    def class_codes(self, kind: str | None = None) -> list[str]:
        return sorted({c.class_code for c in self._items if kind is None or c.kind == kind})

    def tree(self) -> dict:
        """JSON-able class tree served by GET /v1/catalog."""
        classes: dict[tuple[str, str], dict] = {}
        for c in self._items:
            node = classes.setdefault(
                (c.kind, c.class_code),
                {"class_code": c.class_code, "class_name": c.class_name, "kind": c.kind, "categories": []},
            )
            node["categories"].append({"code": c.code, "name": c.name, "kind": c.kind, "local": c.local})
        ordered = [classes[k] for k in sorted(classes, key=lambda k: (KINDS.index(k[0]), k[1]))]
        for node in ordered:
            node["categories"].sort(key=lambda e: e["code"])
        return {"classes": ordered, "count": len(self._items)}


def parse_catalog(text: str, path: Path | str = "catalog.tsv") -> Catalog:
    """Parse the TSV; every problem is a ConfigError naming the line and column."""
    categories: list[Category] = []
    seen: dict[tuple[str, str], int] = {}
    class_names: dict[tuple[str, str], tuple[str, int]] = {}
    header_seen = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.split("\t")
        if not header_seen:
            if tuple(cells) != COLUMNS:
                raise ConfigError(
                    path, lineno, "header", f"expected columns {'/'.join(COLUMNS)}, got {'/'.join(cells)}"
                )
            header_seen = True
            continue
        if len(cells) != len(COLUMNS):
            raise ConfigError(path, lineno, "", f"expected {len(COLUMNS)} tab-separated columns, got {len(cells)}")
        code, kind, class_code, class_name, name, origin = (c.strip() for c in cells)
        if not _CODE.match(code):
            raise ConfigError(path, lineno, "code", f"{code!r} is not a 5-digit type code")
        if kind not in KINDS:
            raise ConfigError(path, lineno, "kind", f"{kind!r} is not one of {', '.join(KINDS)}")
        if class_code != code[:2]:
            raise ConfigError(path, lineno, "class_code", f"{class_code!r} does not match code {code}")
        if not class_name or not name:
            raise ConfigError(path, lineno, "name" if class_name else "class_name", "must not be empty")
        if origin not in ORIGINS:
            raise ConfigError(path, lineno, "origin", f"{origin!r} is not one of {', '.join(ORIGINS)}")
        local = origin == "local"
        if local and int(code[2:]) < LOCAL_SUBCLASS_MIN:
            raise ConfigError(
                path,
                lineno,
                "code",
                f"local extension {code} must use a subclass ≥ {LOCAL_SUBCLASS_MIN} (count down from 999)",
            )
        if (kind, code) in seen:
            raise ConfigError(path, lineno, "code", f"duplicate {kind} {code} (first on line {seen[(kind, code)]})")
        seen[(kind, code)] = lineno
        known = class_names.setdefault((kind, class_code), (class_name, lineno))
        if known[0] != class_name:
            raise ConfigError(
                path,
                lineno,
                "class_name",
                f"{class_name!r} differs from {known[0]!r} given for {kind} class {class_code} on line {known[1]}",
            )
        categories.append(Category(code, kind, class_code, class_name, name, local))
    if not header_seen:
        raise ConfigError(path, None, "header", "no header line")
    return Catalog(categories, str(path))


@lru_cache(maxsize=8)
def _load_cached(path: str, _mtime_ns: int, _size: int) -> Catalog:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, None, "", f"cannot read: {exc.strerror}") from exc
    return parse_catalog(text, path)


def load_catalog(path: Path | None = None) -> Catalog:
    """Load and validate; cached per file version, so a changed file is read again."""
    path = Path(path or get_settings().config_dir / "catalog.tsv")
    return _load_cached(*file_version(path))
