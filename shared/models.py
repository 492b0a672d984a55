"""Pydantic models at every boundary: the grid app's report, cases, dispatch orders,
department replies and the lifecycle events.

Every message the system sends derives from `Envelope`: a message id, a schema
version, the case id at the top level, a correlation id (the report's id travels with
the case from intake to the last notification), and a time-zone-aware timestamp.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic import Strict as NoCoercion  # `Strict` below is the base of the strict input models

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# The instants every date parameter is clamped to: a query for year 1 or 9999 means
# "from the beginning" / "until the end", not an overflow (a POSIX timestamp and ±1 day
# arithmetic must stay possible in every time zone).
EARLIEST = datetime(1970, 1, 2, tzinfo=timezone.utc)
LATEST = datetime(9998, 12, 30, tzinfo=timezone.utc)


def clamp_instant(value: datetime) -> datetime:
    """`value` (aware) limited to [EARLIEST, LATEST]."""
    try:
        utc = value.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        return EARLIEST if value.year < 5000 else LATEST
    return min(max(utc, EARLIEST), LATEST).astimezone(value.tzinfo)


def new_id() -> str:
    return uuid.uuid4().hex


# Strings from outside, by where they may end up. A `Line` (ids, names, addresses,
# reasons, attribute values) may reach a URL, a header, a log or a message template: no
# control character at all, CR and LF included. A `Text` (description, note) is free
# text that may span lines: LF and TAB only. The patterns are the JSON-schema form of
# the same rule (services/intake/openapi.py serves them), so that clients and fuzzers
# see exactly what the server accepts; a required one must hold a non-blank character,
# because surrounding whitespace is stripped before the length is checked.
# Explicit classes, no `\s`: the regex dialects of JSON schema (ECMA), pydantic (Rust)
# and Python disagree on what `\s` is (U+0085, U+FEFF). C1 controls (U+0080–U+009F,
# NEL among them) and the Unicode line/paragraph separators count as control characters.
_CTRL = "\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029"
_SPACE = " \\u00a0\\u1680\\u2000-\\u200a\\u202f\\u205f\\u3000\\ufeff"
_LINE = f"[^{_CTRL}]"
_TEXT = "[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f\\u2028\\u2029]"
_SOLID = f"[^{_CTRL}{_SPACE}]"
LINE_PATTERN = f"^{_LINE}*$"
SOLID_LINE_PATTERN = f"^{_LINE}*{_SOLID}{_LINE}*$"
SOLID_TEXT_PATTERN = f"^{_TEXT}*{_SOLID}{_TEXT}*$"
TEXT_PATTERN = f"^{_TEXT}*$"
URL_PATTERN = f"^https?://{_SOLID}+$"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


class _Rule:
    """A string rule checked by the server and shown in the JSON schema as a `pattern`
    (unless the field has a pattern of its own, which then applies as well)."""

    def __init__(self, pattern: str, message: str) -> None:
        self.pattern, self.regex, self.message = pattern, re.compile(pattern), message

    def __call__(self, value: str) -> str:
        if not self.regex.search(value):
            raise ValueError(self.message)
        return value

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> Any:
        schema = handler(core_schema)
        schema.setdefault("pattern", self.pattern)
        return schema


def _rule(pattern: str, message: str) -> Any:
    rule = _Rule(pattern, message)
    return (AfterValidator(rule), rule)


CleanStr = Annotated[str, *_rule(LINE_PATTERN, "must not contain control characters (CR, LF and TAB included)")]
Line = Annotated[str, *_rule(SOLID_LINE_PATTERN, "must not be blank or contain control characters (CR, LF, TAB)")]
Text = Annotated[str, *_rule(TEXT_PATTERN, "must not contain control characters other than LF and TAB")]
SolidText = Annotated[
    str, *_rule(SOLID_TEXT_PATTERN, "must not be blank or contain control characters other than LF and TAB")
]
Url = Annotated[str, Field(pattern=URL_PATTERN, max_length=500)]
# a JSON number, never a boolean (`true` is not 1.0)
Coordinate = Annotated[float, NoCoercion()]


def _rfc3339(value: Any) -> Any:
    # pydantic would read 7 or "1700000000" as Unix time: a report says when, in words
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not RFC3339.match(value.strip()):
        raise ValueError("an RFC 3339 date-time with its offset, e.g. 2026-11-27T09:30:00+08:00")
    return value.strip()


Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
CategoryCode = Annotated[str, Field(pattern=r"^\d{5}$", description="GB/T 47678.5 type code")]
GridCode = Annotated[str, Field(pattern=r"^\d{6}(\d{3}(\d{3}(\d{3})?)?)?$", description="6/9/12/15-digit grid code")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Severity(str, Enum):
    normal = "normal"
    urgent = "urgent"


class ReporterRole(str, Enum):
    grid_officer = "grid_officer"
    part_time = "part_time"
    citizen = "citizen"


class Mode721(str, Enum):
    service = "service"
    management = "management"
    enforcement = "enforcement"


class CaseStatus(str, Enum):
    reported = "reported"
    registered = "registered"
    dispatched = "dispatched"
    acknowledged = "acknowledged"
    in_progress = "in_progress"
    resolved = "resolved"
    closed = "closed"
    rejected = "rejected"
    reopened = "reopened"
    suspended = "suspended"
    duplicate = "duplicate"
    cancelled = "cancelled"


class Location(Strict):
    lat: Coordinate = Field(ge=-90, le=90)
    lon: Coordinate = Field(ge=-180, le=180)
    address: CleanStr = Field("", max_length=200)
    grid: GridCode | None = None


class OnSiteHandling(Strict):
    """就地处置: the reporter already solved the problem on the spot (the 721 method's
    service share: persuasion and help by the patch's officers and helpers)."""

    note: SolidText = Field(min_length=1, max_length=2000)
    mode: Mode721
    evidence_urls: list[Url] = Field(default_factory=list, max_length=10)


class ExternalSource(Strict):
    """Where a report came from when another platform handed it over (e.g. the city's
    12345 hotline): its system and its own id, kept for status sync back."""

    system: CleanStr = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.\-]+$")
    external_id: Line = Field(min_length=1, max_length=100)


class Reporter(Strict):
    id: Line = Field(min_length=1, max_length=64)
    role: ReporterRole
    name: CleanStr = Field("", max_length=64)
    phone: str = Field("", pattern=r"^[0-9+\- ]{0,20}$")


ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_]{1,40}$")


class Report(Strict):
    """The grid app's report (docs/design.md §9). Field names are a public contract."""

    report_id: CleanStr = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")
    category: CategoryCode
    description: SolidText = Field(min_length=1, max_length=2000)
    severity: Severity = Severity.normal
    filing_condition: CleanStr | None = Field(None, max_length=200)
    location: Location
    attributes: dict[str, Annotated[CleanStr, Field(max_length=200)]] = Field(default_factory=dict, max_length=20)
    media_urls: list[Url] = Field(default_factory=list, max_length=10)
    reporter: Reporter
    observed_at: Instant
    handled_on_site: OnSiteHandling | None = Field(
        None, description="Set when the reporter already solved it on the spot: registered resolved, never dispatched"
    )
    source: ExternalSource | None = Field(None, description="Set by the city-platform bridge for handed-over tasks")

    @field_validator("attributes")
    @classmethod
    def _attribute_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not ATTRIBUTE_KEY.match(key):
                raise ValueError(f"attribute key {key!r} must be 1–40 of A–Z a–z 0–9 _")
        return value


class Assignment(BaseModel):
    """One department's (or grid level's) share of a case, with its own deadlines."""

    dept: str
    street: str
    level: int = Field(ge=1, le=5, description="Grid level handling it: 1 city … 5 patch")
    route: str = Field("", description="Which route of the tree matched")
    sla_policy: str = "default"
    mode: Mode721 = Mode721.service
    order_id: str
    dispatched_at: AwareDatetime
    ack_due: AwareDatetime | None = None
    handle_due: AwareDatetime | None = None
    reason: str = Field("", description="Why this route matched (the routing decision, for the record)")
    active: bool = True
    acknowledged_at: AwareDatetime | None = None
    resolved_at: AwareDatetime | None = None
    rejected_reason: str | None = None
    lead: bool = Field(False, description="牵头: the lead department of a joint dispatch by hand")


class TimelineEntry(BaseModel):
    at: AwareDatetime
    actor: str
    action: str
    from_status: CaseStatus | None = None
    to_status: CaseStatus | None = None
    note: str = ""
    evidence_urls: list[str] = Field(default_factory=list)
    message_id: str | None = None


class Resolution(BaseModel):
    mode: Mode721 = Field(description="The 721 mode actually used")
    result: str = ""
    evidence_urls: list[str] = Field(default_factory=list)
    by: str
    at: AwareDatetime


class SuspensionRequest(BaseModel):
    """A department asks to pause the clock (e.g. waiting for a part, weather); the
    operations centre approves or denies it."""

    dept: str
    reason: str
    note: str = ""
    requested_at: AwareDatetime
    reply_id: str


class Evaluation(BaseModel):
    """The seventh step (评价): how the reporter or the operations centre rated the handling."""

    rating: Literal["satisfied", "basically_satisfied", "dissatisfied"]
    note: str = ""
    by: str
    at: AwareDatetime
    reopened: bool = Field(False, description="The dissatisfaction reopened the case")


class Case(BaseModel):
    case_id: str
    report_id: str
    correlation_id: str
    status: CaseStatus
    version: int = 0
    category: str
    severity: Severity
    filing_condition: str | None = None
    description: str
    location: Location
    grid: str
    street: str
    attributes: dict[str, str] = Field(default_factory=dict)
    media_urls: list[str] = Field(default_factory=list)
    reporter_id: str
    reporter_role: ReporterRole
    observed_at: AwareDatetime
    registered_at: AwareDatetime
    updated_at: AwareDatetime
    assignments: list[Assignment] = Field(default_factory=list)
    timeline: list[TimelineEntry] = Field(default_factory=list)
    resolution: Resolution | None = None
    rework_count: int = Field(0, description="Times verification failed and the case was reopened")
    rejected_by: list[str] = Field(default_factory=list, description="Departments that said 'not ours'")
    disputed: bool = Field(False, description="争议件: too many rejections, sent to the grid station")
    duplicate_of: str | None = None
    duplicates: list[str] = Field(default_factory=list)
    suspension_request: SuspensionRequest | None = Field(None, description="Pending, awaiting approval")
    applied_messages: list[str] = Field(
        default_factory=list, description="Ids of events already applied (idempotent consumers)"
    )
    last_round: int = Field(0, description="The highest dispatch round requested so far")
    location_resolution: str = Field(
        "patch",
        description="How the location was placed: patch (a mapped patch or the named patch code), "
        "street (inside the district, in no mapped patch, in a street's outline), district (district triage)",
    )
    handled_on_site: OnSiteHandling | None = None
    evaluations: list[Evaluation] = Field(default_factory=list)
    source: ExternalSource | None = None


# --------------------------------------------------------------------------- messages


class Envelope(BaseModel):
    message_id: str = Field(default_factory=new_id)
    schema_version: int = SCHEMA_VERSION
    case_id: str
    correlation_id: str
    occurred_at: AwareDatetime = Field(default_factory=utcnow)


class CaseSummary(BaseModel):
    """What consumers downstream need to know about a case, carried in events."""

    category: str
    severity: Severity
    filing_condition: str | None = None
    grid: str
    street: str
    address: str = ""
    description: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)
    registered_at: AwareDatetime
    source: ExternalSource | None = Field(None, description="The city-platform task it came from, if any")


class CaseRegistered(Envelope):
    event: Literal["case_registered"] = "case_registered"
    case: CaseSummary


class DispatchOrder(Envelope):
    """What a department liaison receives on its `dept.<code>` queue."""

    kind: Literal["dispatch_order"] = "dispatch_order"
    order_id: str
    dept: str
    street: str
    level: int
    route: str
    sla_policy: str
    mode: Mode721
    case: CaseSummary
    ack_due: AwareDatetime | None = Field(None, description="Acknowledge (签收) by")
    handle_due: AwareDatetime | None = Field(None, description="Resolve by")
    reply_to: str = Field(description="Exchange and routing key to reply on")
    lead: bool = Field(False, description="牵头: this department leads a joint dispatch by hand")
    note: str = Field("", description="The dispatcher's instruction, for a dispatch by hand")


class DispatchWithdrawn(Envelope):
    """A department's order was withdrawn (撤回): a commander dispatched the case by hand
    (改派, a take-over), or a crossed round superseded it. intake emits it as an event when
    it closes the order; router puts it on the relieved department's queue (the same
    routing key as the order), the notifier tells its liaison. Stop work on `order_id`:
    replies to it are refused from now on."""

    event: Literal["dispatch_withdrawn"] = "dispatch_withdrawn"
    kind: Literal["dispatch_withdrawn"] = "dispatch_withdrawn"
    order_id: str = Field(description="The withdrawn order")
    dept: str
    street: str
    level: int = Field(ge=1, le=5, description="The grid level the order was supervised at")
    round_no: int = Field(description="The round that replaces it")
    by: str = Field("", description="Who withdrew it (the dispatcher by hand; `router` for a superseded round)")
    note: str = Field("", description="Why")
    case: CaseSummary


class CaseDispatched(Envelope):
    event: Literal["case_dispatched"] = "case_dispatched"
    case: CaseSummary
    assignments: list[Assignment]
    round_no: int = Field(1, description="1 for the first dispatch, +1 for every re-dispatch")
    disputed: bool = Field(False, description="争议件: rejected too often, sent to the grid station")
    by: str = Field("", description="Who dispatched by hand (empty: the routing tree)")
    note: str = Field("", description="Why, for a dispatch by hand")


class CaseUnroutable(Envelope):
    event: Literal["case_unroutable"] = "case_unroutable"
    case: CaseSummary
    reason: str


class CaseUpdated(Envelope):
    event: Literal["case_updated"] = "case_updated"
    from_status: CaseStatus | None
    to_status: CaseStatus
    action: str = Field("", description="What happened (a lifecycle action or a department's reply)")
    actor: str
    dept: str | None = None
    order_id: str | None = Field(None, description="The department order the action concerns")
    note: str = ""
    mode: Mode721 | None = None
    case: CaseSummary | None = Field(
        None, description="The case's summary, when consumers cannot have seen it before (resolve_on_site)"
    )
    rating: Literal["satisfied", "basically_satisfied", "dissatisfied"] | None = Field(
        None, description="action `evaluate` (and a reopening by it): the rating"
    )


class RedispatchReason(str, Enum):
    rejected = "rejected"  # a department said "not ours": route again without it
    reopened = "reopened"  # verification failed: back to the same department(s)
    manual = "manual"  # a commander dispatched by hand (改派, take-over, hand-up)


class CaseRedispatch(Envelope):
    """intake asks router to dispatch an existing case again."""

    event: Literal["case_redispatch"] = "case_redispatch"
    case: CaseSummary
    reason: RedispatchReason
    round_no: int = Field(ge=2)
    exclude: list[str] = Field(default_factory=list, description="Departments that rejected it")
    only: list[str] = Field(default_factory=list, description="Reopened: the departments to send back to")
    note: str = ""
    departments: list[str] = Field(default_factory=list, description="Manual: the chosen departments")
    lead: str | None = Field(None, description="Manual: the lead department")
    level: int | None = Field(None, ge=1, le=5, description="Manual: the grid level supervising the new round")
    by: str = Field("", description="Manual: who dispatched")


class DeadlineKind(str, Enum):
    acknowledge = "acknowledge"
    handle = "handle"


class DeadlineEvent(Envelope):
    dept: str
    street: str
    level: int
    order_id: str
    deadline: DeadlineKind
    due_at: AwareDatetime
    step: int = Field(0, description="0: the department's own clock; n: the n-th escalation step's limit")


class DeadlineWarning(DeadlineEvent):
    event: Literal["deadline_warning"] = "deadline_warning"


class DeadlineBreached(DeadlineEvent):
    event: Literal["deadline_breached"] = "deadline_breached"
    late_seconds: float = 0.0
    liaison: str = Field("", description="The department's liaison for the street (accountability ledger)")


class EscalationCommander(BaseModel):
    """A grid commander an escalation goes to (shared.grid.Commander as a message)."""

    name: str
    role: str = ""
    phone: str = ""
    wecom_user: str | None = None


class CaseEscalated(Envelope):
    event: Literal["case_escalated"] = "case_escalated"
    from_level: int
    to_level: int
    dept: str
    reason: str
    order_id: str | None = Field(None, description="The department order whose deadline was missed")
    step: int = Field(0, description="1 for the first escalation of the order, +1 per step (repeats included)")
    commanders: list[EscalationCommander] = Field(
        default_factory=list, description="The commanders of `to_level` for the case's grid cell"
    )
    new_due: AwareDatetime | None = Field(None, description="The fresh handling limit at `to_level` runs out")
    deadline: DeadlineKind | None = Field(None, description="Which missed deadline started the escalation")


class NotificationFailed(Envelope):
    event: Literal["notification_failed"] = "notification_failed"
    channel: str
    recipient: str
    reason: str
    attempts: int


# ------------------------------------------------------------------ the record (docs/design.md §11)
# What the archiver needs beyond the lifecycle events, so that nothing about a case exists
# only in Redis. Each goes out through its writer's outbox, like every event.


class CaseRecorded(Envelope):
    """intake stored a case (registration or any change): the whole document as stored, so
    the report's payload, replies with evidence, verification, suspension decisions and
    cancellations all reach the archive whatever channel they came by. The message id is
    derived from the case and version: a repeat is recognised."""

    event: Literal["case_recorded"] = "case_recorded"
    version: int
    idempotency_key: str | None = Field(None, description="Registration: the key that names this case")
    case: Case


class ClocksRecorded(Envelope):
    """sla committed a case's clocks: the compact document (services/sla/codec.py, base64),
    and what the same commit added to the ledger and the indicator counters."""

    event: Literal["clocks_recorded"] = "clocks_recorded"
    committed_at: float
    seq: int = Field(0, description="The case's commit number (sla counts its commits): orders the records")
    live: bool = Field(description="A clock is running or paused (the document is a timer source)")
    doc: str
    history: str | None = Field(None, description="Applied message ids and log, when the commit rewrote them")
    ledger: list[dict[str, Any]] = Field(default_factory=list)
    ledger_ended: list[tuple[str, float]] = Field(default_factory=list)
    counts: list[tuple[str, str, str, str, int]] = Field(
        default_factory=list, description="(period, scope, key, counter, n) increments"
    )


class NotificationSent(Envelope):
    """notifier finished a delivery (delivered, dead-lettered, digested, no address)."""

    event: Literal["notification_sent"] = "notification_sent"
    delivery_id: str
    source_event: str
    channel: str
    recipient: str = Field(description="The recipient's id (`liaison:<dept>:<street>` …), never an address")
    outcome: str
    subject: str = ""
    detail: str = Field("", description="What became of it (a dead letter's reason), as the case's log shows it")
    attempt: int = 1


class ApiKeyRecorded(Envelope):
    """An API key was created or revoked (`case_id` is empty): its hash, never the secret."""

    event: Literal["apikey_recorded"] = "apikey_recorded"
    key_id: str
    role: str
    dept: str | None = None
    name: str = ""
    street: str | None = Field(None, description="A station key's street")
    secret_sha256: str | None = None
    created_at: AwareDatetime
    revoked_at: AwareDatetime | None = None


class ReplyAction(str, Enum):
    acknowledge = "acknowledge"
    progress = "progress"
    suspend = "suspend"
    reject = "reject"
    resolve = "resolve"


class Reply(Strict):
    """A department's reply (docs/design.md §9); on AMQP the body also carries `case_id`."""

    reply_id: Line = Field(min_length=1, max_length=64)
    action: ReplyAction
    note: Text = Field("", max_length=2000)
    reason: CleanStr | None = Field(None, max_length=500)
    mode: Mode721 | None = None
    evidence_urls: list[Url] = Field(default_factory=list, max_length=10)
    case_id: str | None = None


EVENT_MODELS: dict[str, type[Envelope]] = {
    m.model_fields["event"].default: m
    for m in (
        CaseRegistered,
        CaseDispatched,
        CaseUnroutable,
        CaseUpdated,
        CaseRedispatch,
        DispatchWithdrawn,
        DeadlineWarning,
        DeadlineBreached,
        CaseEscalated,
        NotificationFailed,
        CaseRecorded,
        ClocksRecorded,
        NotificationSent,
        ApiKeyRecorded,
    )
}


def parse_event(body: dict[str, Any]) -> Envelope:
    """Turn an event body into its model, by its `event` field."""
    kind = body.get("event")
    model = EVENT_MODELS.get(kind)  # type: ignore[arg-type]
    if model is None:
        raise ValueError(f"unknown event type {kind!r}")
    return model.model_validate(body)


def summary_of(case: Case) -> CaseSummary:
    return CaseSummary(
        category=case.category,
        severity=case.severity,
        filing_condition=case.filing_condition,
        grid=case.grid,
        street=case.street,
        address=case.location.address,
        description=case.description,
        attributes=case.attributes,
        registered_at=case.registered_at,
        source=case.source,
    )
