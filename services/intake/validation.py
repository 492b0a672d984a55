"""Turning untrusted bytes into a `Report`, or into one error per bad field."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
# an Idempotency-Key header (HTTP and Open311): what may be stored as part of a Redis key
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_.:\-]{1,40}$")


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class InvalidInput(ValueError):
    """The body cannot be accepted; `errors` names every bad field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.field or '(body)'}: {e.message}" for e in errors))

    def as_json(self) -> dict[str, Any]:
        return {"errors": [asdict(e) for e in self.errors]}


def _field_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int) and parts:
            parts[-1] = f"{parts[-1]}[{p}]"
        else:
            parts.append(str(p))
    return ".".join(parts)


def errors_of(exc: ValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors(include_url=False):
        msg = err["msg"]
        if err["type"] == "json_invalid":
            msg = f"body is not valid JSON: {err.get('ctx', {}).get('error', msg)}"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        out.append(FieldError(_field_path(tuple(err["loc"])), msg))
    return out


def parse(model: type[M], raw: bytes | str | dict[str, Any]) -> M:
    """Validate `raw` (JSON text or an already decoded dict) as `model`. A dict (an AMQP
    body) is validated as the JSON it came as, so that both channels accept exactly the
    same input (JSON-mode rules: a date-time is a string, never a datetime object)."""
    try:
        if isinstance(raw, dict):
            raw = json.dumps(raw, ensure_ascii=False)
        if isinstance(raw, (bytes, str)) and not raw.strip():
            raise InvalidInput([FieldError("", "body is empty; expected a JSON object")])
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidInput(errors_of(exc)) from None
