"""The three SLA clocks: urgent hours, working hours and working days.

Pure arithmetic over a working calendar; no Redis, no nameko. The sla service asks
"when is this due", "when is the warning point" and "how much of the clock has been
used" (to resume after a suspension), and gets exact, reproducible answers.

Rules (issue 5):
- urgent hours (紧急工作时) run continuously: nights, weekends and holidays count.
- working hours (工作时) count only time inside the day windows (default 08:00–12:00 and
  14:30–17:30) on working days.
- N working days (工作日) end at the same local time on the N-th following working day.
- A start outside working time counts from the next window's opening, for both
  working-hour and working-day clocks.
- A fractional working day is converted to working hours at the length of one working
  day (7 h with the default windows): 1.5 wd = 1 working day, then 3.5 working hours.
  This keeps `due`, `at_fraction` and `elapsed` consistent with one another
  (`due(start, elapsed(start, t)) == t` for any working instant t).

Windows are half-open, [opening, closing): a start at 12:00 waits for 14:30, but a
limit that runs out exactly at 12:00 is due at 12:00, not at 14:30.

Working-time arithmetic is done in local wall-clock time; Asia/Shanghai has no DST, so
this is exact there (a zone with DST would count wall-clock minutes inside windows).
"""

from __future__ import annotations

import itertools
import math
import re
import warnings
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Iterator, Sequence, TypeVar
from zoneinfo import ZoneInfo

import chinese_calendar
import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import core_schema

from shared.configfiles import ConfigError, error_at, load_yaml_model, read_yaml

log = structlog.get_logger(__name__)
M = TypeVar("M", bound=BaseModel)

DEFAULT_WINDOWS: tuple[tuple[time, time], ...] = ((time(8, 0), time(12, 0)), (time(14, 30), time(17, 30)))

# A calendar with no working day in ten years is a broken holidays.yaml, not a long
# wait: stop instead of looping forever.
_MAX_IDLE_DAYS = 3660


class ClockUnit(str, Enum):
    urgent_hours = "urgent_hours"
    working_hours = "working_hours"
    working_days = "working_days"
    seconds = "seconds"  # continuous, for tests and demos


# Suffixes accepted by Limit.parse, longest first so "紧急工作时" wins over "工作时".
# Minutes are continuous time, expressed as urgent hours (the urgent acknowledge limit
# "15 min" is 0.25 h of a continuous clock).
_SUFFIXES: list[tuple[str, ClockUnit, float]] = sorted(
    [
        ("紧急工作时", ClockUnit.urgent_hours, 1.0),
        ("紧急小时", ClockUnit.urgent_hours, 1.0),
        ("工作小时", ClockUnit.working_hours, 1.0),
        ("工作时", ClockUnit.working_hours, 1.0),
        ("工作日", ClockUnit.working_days, 1.0),
        ("小时", ClockUnit.urgent_hours, 1.0),
        ("分钟", ClockUnit.urgent_hours, 1 / 60),
        ("秒", ClockUnit.seconds, 1.0),
        ("wd", ClockUnit.working_days, 1.0),
        ("wh", ClockUnit.working_hours, 1.0),
        ("h", ClockUnit.urgent_hours, 1.0),
        ("min", ClockUnit.urgent_hours, 1 / 60),
        ("m", ClockUnit.urgent_hours, 1 / 60),
        ("s", ClockUnit.seconds, 1.0),
    ],
    key=lambda item: -len(item[0]),
)
_AMOUNT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(.*?)\s*$")
_ACCEPTED = "'2工作日', '4工作时', '2紧急工作时', '2wd', '4wh', '2h', '15m', '30s'"


def _number(value: float) -> str:
    """Shortest text that reads back as the same float."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class Limit:
    """A time limit on one clock, e.g. 4 working hours."""

    amount: float
    unit: ClockUnit

    def __post_init__(self) -> None:
        if not isinstance(self.unit, ClockUnit):
            object.__setattr__(self, "unit", ClockUnit(self.unit))
        if not math.isfinite(self.amount) or self.amount < 0:
            raise ValueError(f"a time limit must be a finite amount ≥ 0, not {self.amount!r}")
        object.__setattr__(self, "amount", float(self.amount))

    @classmethod
    def parse(cls, text: str) -> "Limit":
        """'2工作日', '4工作时', '2紧急工作时', '2wd', '4wh', '2h', '15m', '30s' → Limit."""
        if not isinstance(text, str):
            raise ValueError(f"a time limit is text like {_ACCEPTED}, not {text!r}")
        match = _AMOUNT_RE.match(text)
        if match:
            amount, suffix = float(match.group(1)), match.group(2)
            for name, unit, factor in _SUFFIXES:
                if suffix == name:
                    if amount <= 0:
                        raise ValueError(f"time limit {text!r} must be greater than zero")
                    return cls(amount * factor, unit)
        raise ValueError(f"cannot read time limit {text!r}: expected a number and a unit, e.g. {_ACCEPTED}")

    def __str__(self) -> str:
        if self.unit is ClockUnit.working_days:
            return f"{_number(self.amount)}wd"
        if self.unit is ClockUnit.working_hours:
            return f"{_number(self.amount)}wh"
        if self.unit is ClockUnit.seconds:
            return f"{_number(self.amount)}s"
        minutes = self.amount * 60
        # Whole minutes under an hour read better as "15m", but only if exact.
        if self.amount < 1 and minutes.is_integer() and minutes / 60 == self.amount:
            return f"{int(minutes)}m"
        return f"{_number(self.amount)}h"

    def scaled(self, fraction: float) -> "Limit":
        """The same clock, `fraction` of the amount (the warning point, a remainder)."""
        return Limit(self.amount * fraction, self.unit)

    # pydantic: a Limit field accepts the text form (or a Limit) and serialises as text,
    # so YAML files and messages can say `handle: 4工作时`.
    @classmethod
    def _coerce(cls, value: Any) -> "Limit":
        if isinstance(value, Limit):
            return value
        if isinstance(value, dict) and set(value) == {"amount", "unit"}:
            return cls(float(value["amount"]), ClockUnit(value["unit"]))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError(f"time limit {value!r} needs a unit, e.g. {_ACCEPTED}")
        return cls.parse(value)

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._coerce, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, _schema: Any, _handler: Any) -> dict[str, Any]:
        return {"type": "string", "examples": ["2工作日", "4wh", "2h", "15m"]}


class UnknownYear(RuntimeWarning):
    """Neither holidays.yaml nor chinesecalendar knows this year's holidays."""


# --------------------------------------------------------------------------- holidays.yaml


class HolidayPeriod(BaseModel):
    """One announced holiday, inclusive of both ends (`end` omitted: a single day)."""

    model_config = ConfigDict(extra="forbid")
    name: str = ""
    start: date
    end: date | None = None

    @model_validator(mode="after")
    def _ordered(self) -> "HolidayPeriod":
        if self.end is not None and self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self

    def days(self) -> Iterator[date]:
        day, last = self.start, self.end or self.start
        while day <= last:
            yield day
            day += timedelta(days=1)


class YearSchedule(BaseModel):
    """A year's official schedule: its holidays and its adjusted working days (调休上班)."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field("", description="Where the schedule was published (notice number, URL)")
    holidays: list[HolidayPeriod] = Field(default_factory=list)
    workdays: list[date] = Field(default_factory=list, description="Weekend days that are working days")


class DayOverride(BaseModel):
    """A single local decision (e.g. a typhoon day off) that beats every other source."""

    model_config = ConfigDict(extra="forbid")
    date: date
    working: bool
    note: str = ""


class HolidaysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    years: dict[int, YearSchedule] = Field(default_factory=dict)
    overrides: list[DayOverride] = Field(default_factory=list)


def load_model(path: Path, model: type[M]) -> M:
    """load_yaml_model, plus: PyYAML raises a bare ValueError for an impossible date
    (2027-02-30), which must still be a ConfigError naming the file."""
    try:
        return load_yaml_model(path, model)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(path, None, "", f"not valid YAML: {exc}") from exc


def _load_holidays(path: Path) -> tuple[dict[int, tuple[set[date], set[date]]], dict[date, bool]]:
    spec = load_model(path, HolidaysFile)
    years: dict[int, tuple[set[date], set[date]]] = {}
    for year, schedule in spec.years.items():
        off: set[date] = set()
        for i, period in enumerate(schedule.holidays):
            for day in period.days():
                if day.year != year:
                    raise _late_error(path, ("years", year, "holidays", i), f"{day} is not in {year}")
                off.add(day)
        on = set(schedule.workdays)
        for i, day in enumerate(schedule.workdays):
            if day.year != year:
                raise _late_error(path, ("years", year, "workdays", i), f"{day} is not in {year}")
            if day in off:
                raise _late_error(path, ("years", year, "workdays", i), f"{day} is also listed as a holiday")
        years[year] = (off, on)
    overrides = {o.date: o.working for o in spec.overrides}
    return years, overrides


def _late_error(path: Path, loc: tuple[Any, ...], message: str) -> ConfigError:
    _data, node = read_yaml(path)
    return error_at(path, node, loc, message)


def _library_years() -> range:
    days = chinese_calendar.constants.holidays
    return range(min(days).year, max(days).year + 1)


# --------------------------------------------------------------------------- calendar


class WorkCalendar:
    """Working days and working hours of one place, and clock arithmetic over them."""

    def __init__(
        self,
        holidays_path: Path | None = None,
        windows: Sequence[tuple[time, time]] = DEFAULT_WINDOWS,
        tz: str = "Asia/Shanghai",
    ) -> None:
        self.tz = ZoneInfo(tz)
        self.windows = tuple(sorted((tuple(w) for w in windows), key=lambda w: w[0]))
        if not self.windows:
            raise ValueError("at least one working window is needed")
        for (o1, c1), (o2, _c2) in itertools.pairwise(self.windows):
            if o2 < c1:
                raise ValueError(f"working windows overlap: {o1}–{c1} and {o2}")
        for opening, closing in self.windows:
            if not opening < closing:
                raise ValueError(f"working window {opening}–{closing} must open before it closes")
        self.day_length = sum(
            (datetime.combine(date.min, c) - datetime.combine(date.min, o) for o, c in self.windows),
            timedelta(),
        )
        self.holidays_path = holidays_path
        self._years: dict[int, tuple[set[date], set[date]]] = {}
        self._overrides: dict[date, bool] = {}
        if holidays_path is not None:
            self._years, self._overrides = _load_holidays(holidays_path)
        self._library = _library_years()
        self._warned: set[int] = set()
        self._days: dict[date, bool] = {}

    # ----------------------------------------------------------------- days

    def known_years(self) -> set[int]:
        return set(self._library) | set(self._years)

    def is_working_day(self, d: date) -> bool:
        # chinesecalendar re-validates its whole table on every call (~70 µs); timers are
        # rebuilt in bulk at start-up, so answers are memoised (the sources never change
        # after __init__).
        known = self._days.get(d)
        if known is None:
            known = self._days[d] = self._is_working_day(d)
        return known

    def _is_working_day(self, d: date) -> bool:
        if d in self._overrides:
            return self._overrides[d]
        if d.year in self._years:
            off, on = self._years[d.year]
            if d in on:
                return True
            if d in off:
                return False
            return d.weekday() < 5
        if d.year in self._library:
            try:
                return bool(chinese_calendar.is_workday(d))
            except NotImplementedError:
                pass
        self.warn_unknown(d.year)
        return d.weekday() < 5

    def warn_unknown(self, year: int) -> None:
        """Say loudly, once per year, that holidays of `year` are guessed as Mon–Fri."""
        if year in self._warned:
            return
        self._warned.add(year)
        message = (
            f"holidays of {year} are unknown (chinesecalendar knows "
            f"{self._library.start}–{self._library.stop - 1}; holidays.yaml has "
            f"{sorted(self._years) or 'none'}): counting Mon–Fri as working days. "
            f"Add the official {year} schedule to {self.holidays_path or 'config/holidays.yaml'}."
        )
        log.warning("sla.calendar.unknown_year", year=year, hint=message)
        warnings.warn(message, UnknownYear, stacklevel=3)

    # ----------------------------------------------------------------- instants

    @staticmethod
    def _require_aware(*instants: datetime) -> None:
        # A naive datetime would silently mean "server time": refuse it.
        for instant in instants:
            if instant.tzinfo is None or instant.utcoffset() is None:
                raise ValueError(f"{instant.isoformat()} has no time zone: give an offset, e.g. +08:00")

    def _local(self, instant: datetime) -> datetime:
        """Naive local wall time of an aware instant."""
        self._require_aware(instant)
        return instant.astimezone(self.tz).replace(tzinfo=None)

    def _aware(self, local: datetime) -> datetime:
        return local.replace(tzinfo=self.tz)

    def _segments(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Working stretches [a, b) in naive local time from `start` on, clipped to it."""
        day, idle = start.date(), 0
        while True:
            if self.is_working_day(day):
                idle = 0
                for opening, closing in self.windows:
                    a, b = datetime.combine(day, opening), datetime.combine(day, closing)
                    if b > start:
                        yield max(a, start), b
            else:
                idle += 1
                if idle > _MAX_IDLE_DAYS:
                    raise RuntimeError(f"no working day in the {_MAX_IDLE_DAYS} days after {start.date()}")
            day += timedelta(days=1)

    def _next_working_instant(self, local: datetime) -> datetime:
        """`local` if it is inside a window of a working day, else the next opening."""
        a, _b = next(self._segments(local))
        return a

    def _add_working(self, local: datetime, amount: timedelta) -> datetime:
        remaining = amount
        for a, b in self._segments(local):
            if b - a >= remaining:
                return a + remaining
            remaining -= b - a
        raise AssertionError("unreachable: _segments is endless")

    def _working_days_after(self, day: date) -> Iterator[date]:
        idle = 0
        while True:
            day += timedelta(days=1)
            if self.is_working_day(day):
                idle = 0
                yield day
            else:
                idle += 1
                if idle > _MAX_IDLE_DAYS:
                    raise RuntimeError(f"no working day in the {_MAX_IDLE_DAYS} days after {day}")

    def _working_between(self, start: datetime, end: datetime) -> timedelta:
        total = timedelta()
        if end <= start:
            return total
        for a, b in self._segments(start):
            if a >= end:
                break
            total += min(b, end) - a
        return total

    # ----------------------------------------------------------------- public

    def due(self, start: datetime, limit: Limit) -> datetime:
        """When `limit` runs out if its clock starts at `start` (aware in, local aware out)."""
        if limit.unit in (ClockUnit.urgent_hours, ClockUnit.seconds):
            self._require_aware(start)
            seconds = limit.amount * (3600 if limit.unit is ClockUnit.urgent_hours else 1)
            # Continuous time is added in UTC so that no wall-clock rule can bend it.
            return (start.astimezone(timezone.utc) + timedelta(seconds=seconds)).astimezone(self.tz)
        local = self._next_working_instant(self._local(start))
        if limit.unit is ClockUnit.working_hours:
            return self._aware(self._add_working(local, timedelta(hours=limit.amount)))
        whole = int(limit.amount)
        fraction = limit.amount - whole
        if whole:
            day = local.date()
            days = self._working_days_after(day)
            for _ in range(whole):
                day = next(days)
            local = datetime.combine(day, local.time())
        if fraction:
            local = self._add_working(local, self.day_length * fraction)
        return self._aware(local)

    def at_fraction(self, start: datetime, limit: Limit, fraction: float) -> datetime:
        """The instant when `fraction` of `limit` has been used, counted on its own clock
        (the warning point of 80 % of 2 working days is 1 working day + 0.6 × 7 h)."""
        if not 0 <= fraction:
            raise ValueError(f"fraction must be ≥ 0, not {fraction}")
        return self.due(start, limit.scaled(fraction))

    def elapsed(self, start: datetime, end: datetime, unit: ClockUnit) -> float:
        """How much of a `unit` clock runs between two instants (0 if end ≤ start); the
        inverse of `due`, so a suspended clock resumes with `limit.amount - elapsed`."""
        if unit in (ClockUnit.urgent_hours, ClockUnit.seconds):
            self._require_aware(start, end)
            seconds = max((end - start).total_seconds(), 0.0)
            return seconds / 3600 if unit is ClockUnit.urgent_hours else seconds
        s, e = self._local(start), self._local(end)
        if e <= s:
            return 0.0
        if unit is ClockUnit.working_hours:
            return self._working_between(s, e) / timedelta(hours=1)
        s = self._next_working_instant(s)
        whole, mark = 0, s
        for day in self._working_days_after(s.date()):
            point = datetime.combine(day, s.time())
            if point > e:
                break
            whole, mark = whole + 1, point
        return whole + self._working_between(mark, e) / self.day_length


def load_calendar(path: Path | None = None) -> WorkCalendar:
    """The district's calendar, with operator overrides from holidays.yaml.

    Warns (UnknownYear, and a structlog warning) at load when the current or next
    year's holidays are unknown, so a missing schedule is seen at startup, not in
    December when deadlines start to go wrong.
    """
    from shared.config import get_settings

    settings = get_settings()
    if path is None:
        default = settings.config_dir / "holidays.yaml"
        path = default if default.exists() else None
    calendar = WorkCalendar(path, tz=settings.timezone)
    this_year = datetime.now(calendar.tz).year
    for year in (this_year, this_year + 1):
        if year not in calendar.known_years():
            calendar.warn_unknown(year)
    return calendar
