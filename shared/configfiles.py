"""Loading YAML configuration into pydantic models with errors that name file, line
and field, so a bad file is a clear startup error rather than a traceback."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file is invalid: `file:line: field: message`."""

    def __init__(self, path: Path | str, line: int | None, field: str, message: str) -> None:
        self.path, self.line, self.field, self.message = str(path), line, field, message
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {field or '(file)'}: {message}")


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Walk the YAML node tree along a pydantic error location; 1-based line."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    node, line = value, key.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def file_version(path: Path | str) -> tuple[str, int, int]:
    """(path, mtime in ns, size): a cache key that changes whenever the file does, so a
    loader cached on it reads a changed file again; ConfigError if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(path, None, "", f"cannot read: {exc.strerror}") from exc
    return str(path), st.st_mtime_ns, st.st_size


def read_yaml(path: Path | str) -> tuple[Any, yaml.Node | None]:
    """The parsed data and its node tree (for line numbers)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, None, "", f"cannot read: {exc.strerror}") from exc
    # libyaml when available: the pure-Python parser takes ~0.5 s on routes.yaml
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        node = yaml.compose(text, Loader=loader)
        data = yaml.load(text, Loader=loader)  # noqa: S506 — a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(path, mark.line + 1 if mark else None, "", f"not valid YAML: {exc}") from exc
    except ValueError as exc:  # e.g. an impossible date such as 2027-02-30
        raise ConfigError(path, None, "", f"invalid value: {exc}") from exc
    return data, node


def load_yaml_model(path: Path | str, model: type[M]) -> M:
    """Parse `path` as YAML and validate it as `model`, or raise ConfigError."""
    data, node = read_yaml(path)
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        raise ConfigError(path, _line_of(node, loc), ".".join(str(p) for p in loc), first["msg"]) from exc


def error_at(path: Path | str, node: yaml.Node | None, loc: tuple[Any, ...], message: str) -> ConfigError:
    """A ConfigError for a check made after validation (e.g. an unknown code)."""
    return ConfigError(path, _line_of(node, loc), ".".join(str(p) for p in loc), message)
