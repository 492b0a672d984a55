"""SLA policies: which limits apply to a case, read from config/sla.yaml.

A policy is resolved in layers, each overriding the one before:

1. `defaults` of sla.yaml (acknowledge limit, urgent acknowledge limit, warning
   fraction, escalation ladder, repeat count, handling limit for unknown categories);
2. the category's standard: its `base` named policy (default `default`), then the
   handling limit of the matched filing condition, or of the category when no
   condition matches. Lookup is by the 5-digit code, then by its 2-digit class
   (`"06"` entries), then `defaults`;
3. the named policy the routing tree chose (`policy_name`), if any; `default` is the
   empty policy, i.e. "the category's standard as it is". An unknown name logs a
   warning and is ignored, so a typo in routes.yaml degrades to the standard rather
   than failing a dispatch (validate routes.yaml against `PolicyBook.names()`);
4. urgent severity replaces the acknowledge limit by the urgent one (15 min).

Filing conditions (`filing_condition` of the report) are matched to the category's
rows: exactly, then after normalisation (NFKC, case, spaces and punctuation
removed), then by substring either way, preferring the closest in length (ties: the
first row). No match: the category's `default` handling limit, which the seeded file
sets to the lower median of the category's working-clock rows (never the most lenient
row, and not the strictest, which is usually a narrow special case). The emergency
rows (紧急工作时) apply only when named, or when the severity is urgent and no row was
named (the category's `urgent` limit).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Literal

import structlog
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.configfiles import error_at, read_yaml
from shared.worktime import ClockUnit, Limit, load_model

log = structlog.get_logger(__name__)

# patch 5 → community 4 → street 3 → district 2 → city 1
TOP_LEVEL, BOTTOM_LEVEL = 1, 5
CONTINUOUS = (ClockUnit.urgent_hours, ClockUnit.seconds)


class Policy(BaseModel):
    """The limits that apply to one assignment of a case."""

    model_config = ConfigDict(frozen=True)

    name: str
    ack_limit: Limit
    handle_limit: Limit
    warn_fraction: float = Field(0.8, gt=0, lt=1)
    ladder: list[Limit] = Field(
        min_length=1,
        description="Handling limit given at each escalation step: the commander of level 4, 3, 2, 1 "
        "(community, street, district, city); the last entry serves any further step",
    )
    repeat: int = Field(
        2,
        ge=0,
        description="After a breach at the top of the ladder (city, level 1) the last ladder limit is "
        "re-armed and the breach re-notified this many times, then escalation stops",
    )
    urgent_ack_limit: Limit = Limit.parse("15m")
    escalate_until: Literal["acknowledged", "resolved"] = Field(
        "resolved", description="Escalation of a handling breach stops when the case reaches this state"
    )
    category: str | None = None
    condition: str | None = Field(None, description="The filing condition row that set handle_limit")
    source: str = Field("", description="Where the handling limit comes from, for `sla explain`")

    def step_limit(self, to_level: int) -> Limit:
        """The handling limit for the commander of grid level `to_level` (4 … 1)."""
        if not TOP_LEVEL <= to_level < BOTTOM_LEVEL:
            raise ValueError(f"escalation goes to levels 4 … 1, not {to_level}")
        index = BOTTOM_LEVEL - 1 - to_level
        return self.ladder[min(index, len(self.ladder) - 1)]


# --------------------------------------------------------------------------- file format


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PolicySpec(_Strict):
    """A named policy: only the fields it sets override the layers below it."""

    ack: Limit | None = None
    urgent_ack: Limit | None = None
    handle: Limit | None = None
    warn_fraction: float | None = Field(None, gt=0, lt=1)
    ladder: list[Limit] | None = Field(None, min_length=1, max_length=4)
    repeat: int | None = Field(None, ge=0, le=20)
    escalate_until: Literal["acknowledged", "resolved"] | None = None
    note: str = ""


class Defaults(_Strict):
    ack: Limit
    urgent_ack: Limit
    handle: Limit = Field(description="Handling limit of a category sla.yaml does not know")
    warn_fraction: float = Field(0.8, gt=0, lt=1)
    ladder: list[Limit] = Field(min_length=1, max_length=4)
    urgent_ladder: list[Limit] | None = Field(
        None,
        min_length=1,
        max_length=4,
        description="Ladder of a case whose handling limit runs on a continuous clock: a 2-hour "
        "emergency should not escalate into working days",
    )
    repeat: int = Field(2, ge=0, le=20)
    escalate_until: Literal["acknowledged", "resolved"] = "resolved"


class ConditionSpec(_Strict):
    when: str = Field(min_length=1)
    handle: Limit
    closing: str = ""
    note: str = ""


class CategorySpec(_Strict):
    name: str = ""
    source: str = ""
    base: str = "default"
    default: Limit = Field(description="Handling limit when no filing condition matches")
    urgent: Limit | None = Field(None, description="Handling limit of an urgent case naming no condition")
    conditions: list[ConditionSpec] = Field(default_factory=list)


_CODE = re.compile(r"\d{2}|\d{5}")
_CODE_RULE = "must be a 5-digit type code or a 2-digit class code"


class SlaFile(_Strict):
    defaults: Defaults
    policies: dict[str, PolicySpec] = Field(default_factory=dict)
    categories: dict[str, CategorySpec] = Field(default_factory=dict)

    @field_validator("categories")
    @classmethod
    def _codes(cls, value: dict[str, CategorySpec]) -> dict[str, CategorySpec]:
        for code in value:
            if not _CODE.fullmatch(code):
                raise ValueError(f"category key {code!r} {_CODE_RULE}")
        return value

    @model_validator(mode="after")
    def _default_policy(self) -> "SlaFile":
        self.policies.setdefault("default", PolicySpec(note="the category's standard as it is"))
        return self


# --------------------------------------------------------------------------- matching

_DROP = re.compile(r"[\s\W_]+", re.UNICODE)


def normalise(text: str) -> str:
    """Compare filing conditions by content: full-width/half-width, case, spaces and
    punctuation do not matter (`破损超过25c㎡` == `破损超过 25cm2`)."""
    return _DROP.sub("", unicodedata.normalize("NFKC", text).casefold())


def match_condition(conditions: list[ConditionSpec], text: str) -> int | None:
    """Index of the row `text` names, or None."""
    for i, row in enumerate(conditions):
        if row.when == text:
            return i
    wanted = normalise(text)
    if len(wanted) < 2:
        return None
    keys = [normalise(row.when) for row in conditions]
    for i, key in enumerate(keys):
        if key == wanted:
            return i
    best: tuple[float, int] | None = None
    for i, key in enumerate(keys):
        if key and (wanted in key or key in wanted):
            closeness = min(len(key), len(wanted)) / max(len(key), len(wanted))
            if best is None or closeness > best[0]:
                best = (closeness, i)
    return best[1] if best else None


# --------------------------------------------------------------------------- the book


class PolicyBook:
    """All policies of sla.yaml; `for_case` answers which one applies."""

    def __init__(self, spec: SlaFile, path: Path | str = "sla.yaml") -> None:
        self.spec = spec
        self.path = Path(path)

    def names(self) -> set[str]:
        """Names a route may give as its `sla_policy`."""
        return set(self.spec.policies)

    def categories(self) -> set[str]:
        return set(self.spec.categories)

    def _category(self, category: str) -> tuple[str | None, CategorySpec | None]:
        for key in (category, category[:2]):
            if key in self.spec.categories:
                return key, self.spec.categories[key]
        return None, None

    def for_case(
        self,
        category: str,
        filing_condition: str | None,
        severity: str,
        policy_name: str | None = None,
    ) -> Policy:
        d = self.spec.defaults
        fields: dict[str, object] = {
            "ack_limit": d.ack,
            "urgent_ack_limit": d.urgent_ack,
            "handle_limit": d.handle,
            "warn_fraction": d.warn_fraction,
            "ladder": list(d.ladder),
            "repeat": d.repeat,
            "escalate_until": d.escalate_until,
            "category": category,
            "condition": None,
            "source": "sla.yaml defaults (category not listed)",
        }
        urgent = str(getattr(severity, "value", severity)) == "urgent"
        key, spec = self._category(category)
        name = category
        if spec is not None:
            self._overlay(fields, self.spec.policies.get(spec.base))
            fields["handle_limit"] = spec.default
            fields["source"] = spec.source or f"sla.yaml categories.{key}"
            index = match_condition(spec.conditions, filing_condition) if filing_condition else None
            if index is not None:
                row = spec.conditions[index]
                fields["handle_limit"], fields["condition"] = row.handle, row.when
                name = f"{category}#{index + 1}"
            elif urgent and spec.urgent is not None:
                fields["handle_limit"] = spec.urgent
                name = f"{category}#urgent"
            elif filing_condition:
                log.info("sla.policy.condition_unmatched", category=category, filing_condition=filing_condition)
            handle = fields["handle_limit"]
            assert isinstance(handle, Limit)
            if handle.unit in CONTINUOUS and d.urgent_ladder and not self._sets_ladder(spec.base):
                fields["ladder"] = list(d.urgent_ladder)
        if policy_name and policy_name != "default":
            named = self.spec.policies.get(policy_name)
            if named is None:
                log.warning(
                    "sla.policy.unknown_name",
                    policy=policy_name,
                    category=category,
                    known=sorted(self.names()),
                    fallback=name,
                )
            else:
                self._overlay(fields, named)
                if named.handle is not None:
                    fields["source"] = f"sla.yaml policies.{policy_name}"
                name = policy_name
        if urgent:
            fields["ack_limit"] = fields["urgent_ack_limit"]
        return Policy(name=name, **fields)

    def _sets_ladder(self, name: str) -> bool:
        named = self.spec.policies.get(name)
        return named is not None and named.ladder is not None

    @staticmethod
    def _overlay(fields: dict[str, object], spec: PolicySpec | None) -> None:
        if spec is None:
            return
        for src, dst in (
            ("ack", "ack_limit"),
            ("urgent_ack", "urgent_ack_limit"),
            ("handle", "handle_limit"),
            ("warn_fraction", "warn_fraction"),
            ("ladder", "ladder"),
            ("repeat", "repeat"),
            ("escalate_until", "escalate_until"),
        ):
            value = getattr(spec, src)
            if value is not None:
                fields[dst] = list(value) if isinstance(value, list) else value


def _key_text(node: yaml.Node | None, value: object) -> str:
    """How a non-string key of `categories` was written (513 was typed 01001)."""
    loader = yaml.SafeLoader("")
    if isinstance(node, yaml.MappingNode):
        for key, child in node.value:
            if key.value == "categories" and isinstance(child, yaml.MappingNode):
                for k, _v in child.value:
                    if loader.construct_object(k) == value:
                        return str(k.value)
    return str(value)


def load_policies(path: Path | None = None) -> PolicyBook:
    """Read sla.yaml (default: `<config_dir>/sla.yaml`); a bad file raises ConfigError
    naming file, line and field."""
    if path is None:
        from shared.config import get_settings

        path = get_settings().config_dir / "sla.yaml"
    data, node = read_yaml(path)
    # Checked before validation so the error points at the key itself; an unquoted
    # 01001 is read by YAML as the octal number 513, hence the hint.
    if isinstance(data, dict) and isinstance(data.get("categories"), dict):
        for code in data["categories"]:
            if not isinstance(code, str):
                raise error_at(
                    path,
                    node,
                    ("categories", _key_text(node, code)),
                    f'category key {code!r} must be quoted, e.g. "01001"',
                )
            if not _CODE.fullmatch(code):
                raise error_at(path, node, ("categories", code), f"category key {code!r} {_CODE_RULE}")
    spec = load_model(path, SlaFile)
    for code, category in spec.categories.items():
        if category.base not in spec.policies:
            raise error_at(
                path,
                node,
                ("categories", code, "base"),
                f"unknown policy {category.base!r} (known: {sorted(spec.policies)})",
            )
    return PolicyBook(spec, path)
