"""The three SLA clocks against the real 2026 calendar (chinesecalendar) and a
fabricated holidays.yaml. Fixed datetimes only: nothing sleeps, nothing reads the clock
except the unknown-year warning at load, whose expectation is computed."""

from __future__ import annotations

import warnings
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Iterator

import chinese_calendar
import pytest
import structlog
from click.testing import CliRunner
from structlog.testing import capture_logs

from shared.configfiles import ConfigError
from shared.worktime import ClockUnit, Limit, UnknownYear, WorkCalendar, load_calendar

CST = timezone(timedelta(hours=8))


def at(text: str) -> datetime:
    """'2026-09-30 16:00' in Guilin local time."""
    return datetime.fromisoformat(text).replace(tzinfo=CST)


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="minutes")


@pytest.fixture(scope="module")
def cal() -> WorkCalendar:
    return WorkCalendar()


# --------------------------------------------------------------------------- the calendar itself


def test_2026_calendar_facts_the_tests_rely_on(cal: WorkCalendar) -> None:
    # National Day 2026 is Oct 1–7 (Thu–Wed) per the State Council notice; Oct 8 is an
    # ordinary Thursday. Sep 20 (Sun) and Oct 10 (Sat) are adjusted working days.
    for d in range(1, 8):
        assert not cal.is_working_day(date(2026, 10, d))
    assert cal.is_working_day(date(2026, 10, 8))
    assert date(2026, 10, 10).weekday() == 5 and cal.is_working_day(date(2026, 10, 10))
    assert date(2026, 9, 20).weekday() == 6 and cal.is_working_day(date(2026, 9, 20))
    assert not cal.is_working_day(date(2026, 9, 19))  # the Saturday before stays off
    assert not cal.is_working_day(date(2026, 11, 28)) and not cal.is_working_day(date(2026, 11, 29))
    for d in (date(2026, 10, 10), date(2026, 10, 1), date(2026, 11, 30)):
        assert cal.is_working_day(d) == chinese_calendar.is_workday(d)
    assert set(range(2004, 2027)) <= cal.known_years()


# --------------------------------------------------------------------------- Limit


@pytest.mark.parametrize(
    ("text", "amount", "unit", "canonical"),
    [
        ("2工作日", 2, ClockUnit.working_days, "2wd"),
        ("4工作时", 4, ClockUnit.working_hours, "4wh"),
        ("2紧急工作时", 2, ClockUnit.urgent_hours, "2h"),
        ("2wd", 2, ClockUnit.working_days, "2wd"),
        ("4wh", 4, ClockUnit.working_hours, "4wh"),
        ("2h", 2, ClockUnit.urgent_hours, "2h"),
        ("15m", 0.25, ClockUnit.urgent_hours, "15m"),
        ("30s", 30, ClockUnit.seconds, "30s"),
        ("1.5wd", 1.5, ClockUnit.working_days, "1.5wd"),
        (" 4 工作小时 ", 4, ClockUnit.working_hours, "4wh"),
        ("90m", 1.5, ClockUnit.urgent_hours, "1.5h"),
    ],
)
def test_limit_parse_and_round_trip(text: str, amount: float, unit: ClockUnit, canonical: str) -> None:
    limit = Limit.parse(text)
    assert (limit.amount, limit.unit) == (amount, unit)
    assert str(limit) == canonical
    assert Limit.parse(str(limit)) == limit


@pytest.mark.parametrize("text", ["", "2", "wd", "2 days", "-1h", "0wd", "2工作周", "1e3h"])
def test_limit_parse_rejects_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match="time limit"):
        Limit.parse(text)


def test_limit_round_trips_odd_amounts() -> None:
    for amount in (1 / 3, 0.1, 2.7182818):
        for unit in ClockUnit:
            limit = Limit(amount, unit)
            assert Limit.parse(str(limit)) == limit


# --------------------------------------------------------------------------- urgent hours


def test_urgent_hours_run_through_nights_weekends_and_holidays(cal: WorkCalendar) -> None:
    assert iso(cal.due(at("2026-11-27 22:00"), Limit.parse("4紧急工作时"))) == "2026-11-28T02:00+08:00"
    assert iso(cal.due(at("2026-09-30 23:00"), Limit.parse("2h"))) == "2026-10-01T01:00+08:00"
    assert iso(cal.due(at("2026-10-03 12:00"), Limit.parse("15m"))) == "2026-10-03T12:15+08:00"
    assert cal.due(at("2026-10-03 12:00"), Limit.parse("30s")) == at("2026-10-03 12:00:30")


def test_due_answers_in_local_time_whatever_the_input_offset(cal: WorkCalendar) -> None:
    start = datetime(2026, 9, 30, 8, 0, tzinfo=timezone.utc)  # 16:00 in Guilin
    due = cal.due(start, Limit.parse("2wd"))
    assert due.isoformat() == "2026-10-09T16:00:00+08:00"
    assert cal.due(start, Limit.parse("1h")).isoformat() == "2026-09-30T17:00:00+08:00"


def test_naive_datetimes_are_refused(cal: WorkCalendar) -> None:
    with pytest.raises(ValueError, match="time zone"):
        cal.due(datetime(2026, 9, 30, 16), Limit.parse("2h"))


# --------------------------------------------------------------------------- working hours


@pytest.mark.parametrize(
    ("start", "limit", "due"),
    [
        ("2026-11-30 09:00", "2wh", "2026-11-30T11:00"),  # inside one window
        ("2026-11-30 11:00", "2wh", "2026-11-30T15:30"),  # lunch break skipped
        ("2026-11-30 08:00", "4wh", "2026-11-30T12:00"),  # ends exactly at closing
        ("2026-11-30 08:00", "7wh", "2026-11-30T17:30"),  # a whole working day
        ("2026-11-30 08:00", "7.5wh", "2026-12-01T08:30"),
        ("2026-11-27 16:00", "4wh", "2026-11-30T10:30"),  # Fri → over the weekend → Mon
        ("2026-09-30 16:00", "4wh", "2026-10-08T10:30"),  # over National Day
        ("2026-10-09 17:00", "1wh", "2026-10-10T08:30"),  # into the adjusted working Saturday
        ("2026-09-18 17:00", "1wh", "2026-09-20T08:30"),  # into the adjusted working Sunday
        # starts outside working time count from the next window's opening
        ("2026-11-30 07:00", "1wh", "2026-11-30T09:00"),
        ("2026-11-30 12:00", "1wh", "2026-11-30T15:30"),
        ("2026-11-30 12:30", "1wh", "2026-11-30T15:30"),
        ("2026-11-30 17:30", "1wh", "2026-12-01T09:00"),
        ("2026-11-27 20:00", "1wh", "2026-11-30T09:00"),
        ("2026-11-28 10:00", "1wh", "2026-11-30T09:00"),  # Saturday
        ("2026-10-01 10:00", "1wh", "2026-10-08T09:00"),  # holiday
    ],
)
def test_working_hours(cal: WorkCalendar, start: str, limit: str, due: str) -> None:
    assert iso(cal.due(at(start), Limit.parse(limit))) == due + "+08:00"


# --------------------------------------------------------------------------- working days


@pytest.mark.parametrize(
    ("start", "limit", "due"),
    [
        ("2026-11-30 10:00", "1wd", "2026-12-01T10:00"),
        ("2026-11-27 10:00", "1wd", "2026-11-30T10:00"),  # over the weekend
        ("2026-09-30 16:00", "2wd", "2026-10-09T16:00"),  # over National Day (the example)
        ("2026-10-09 10:00", "1wd", "2026-10-10T10:00"),  # adjusted working Saturday counts
        ("2026-10-09 10:00", "2wd", "2026-10-12T10:00"),
        ("2026-09-18 16:00", "1wd", "2026-09-20T16:00"),  # adjusted working Sunday counts
        ("2026-09-24 09:00", "2wd", "2026-09-29T09:00"),  # over Mid-Autumn (Sep 25–27)
        # starts outside working time count from the next window's opening
        ("2026-11-28 10:00", "1wd", "2026-12-01T08:00"),  # Saturday → Mon 08:00 → Tue 08:00
        ("2026-11-30 12:30", "1wd", "2026-12-01T14:30"),  # lunch → 14:30
        ("2026-11-30 19:00", "1wd", "2026-12-02T08:00"),  # evening → Tue 08:00 → Wed
        ("2026-10-02 09:00", "1wd", "2026-10-09T08:00"),  # holiday → Oct 8 08:00 → Oct 9
        # fractional days: the fraction is working time at 7 h a day
        ("2026-11-30 08:00", "0.5wd", "2026-11-30T11:30"),
        ("2026-11-30 16:00", "1.5wd", "2026-12-02T10:00"),
    ],
)
def test_working_days(cal: WorkCalendar, start: str, limit: str, due: str) -> None:
    assert iso(cal.due(at(start), Limit.parse(limit))) == due + "+08:00"


def test_working_days_over_a_long_holiday_and_a_weekend(cal: WorkCalendar) -> None:
    # Spring Festival 2026: Feb 15–23 off, Sat Feb 14 and Sat Feb 28 worked.
    assert iso(cal.due(at("2026-02-13 09:00"), Limit.parse("1wd"))) == "2026-02-14T09:00+08:00"
    assert iso(cal.due(at("2026-02-14 09:00"), Limit.parse("1wd"))) == "2026-02-24T09:00+08:00"
    assert iso(cal.due(at("2026-02-27 09:00"), Limit.parse("1wd"))) == "2026-02-28T09:00+08:00"


# --------------------------------------------------------------------------- warning point


def test_warning_point_is_measured_on_the_limits_own_clock(cal: WorkCalendar) -> None:
    start = at("2026-09-30 16:00")
    # 80 % of 2 wd = 1 wd (Oct 8 16:00) + 0.6 × 7 h = 4 h 12 min of working time.
    assert iso(cal.at_fraction(start, Limit.parse("2wd"), 0.8)) == "2026-10-09T10:42+08:00"
    # 80 % of 4 wh = 3 h 12 min: 1 h 30 on Sep 30, 1 h 42 on Oct 8.
    assert iso(cal.at_fraction(start, Limit.parse("4wh"), 0.8)) == "2026-10-08T09:42+08:00"
    assert iso(cal.at_fraction(start, Limit.parse("2h"), 0.8)) == "2026-09-30T17:36+08:00"
    assert iso(cal.at_fraction(at("2026-11-30 08:00"), Limit.parse("4wh"), 0.8)) == "2026-11-30T11:12+08:00"


def test_warning_fraction_ends(cal: WorkCalendar) -> None:
    limit = Limit.parse("3wd")
    assert cal.at_fraction(at("2026-11-30 10:00"), limit, 1.0) == cal.due(at("2026-11-30 10:00"), limit)
    # 0 % of a working clock is the clock's real start, i.e. after the lunch break.
    assert iso(cal.at_fraction(at("2026-11-30 13:00"), limit, 0.0)) == "2026-11-30T14:30+08:00"
    with pytest.raises(ValueError):
        cal.at_fraction(at("2026-11-30 10:00"), limit, -0.1)


# --------------------------------------------------------------------------- elapsed


def test_elapsed_per_clock(cal: WorkCalendar) -> None:
    fri, mon = at("2026-11-27 16:00"), at("2026-11-30 09:00")
    assert cal.elapsed(fri, mon, ClockUnit.urgent_hours) == 65.0
    assert cal.elapsed(fri, mon, ClockUnit.seconds) == 65 * 3600
    assert cal.elapsed(fri, mon, ClockUnit.working_hours) == 2.5
    assert cal.elapsed(fri, mon, ClockUnit.working_days) == pytest.approx(2.5 / 7)
    assert cal.elapsed(at("2026-09-30 16:00"), at("2026-10-09 10:42"), ClockUnit.working_days) == pytest.approx(1.6)
    assert cal.elapsed(at("2026-11-30 11:00"), at("2026-11-30 15:00"), ClockUnit.working_hours) == 1.5
    assert cal.elapsed(mon, fri, ClockUnit.working_hours) == 0.0  # end before start


STARTS = ["2026-09-30 16:00", "2026-11-27 20:00", "2026-10-09 11:45", "2026-02-13 15:00", "2026-11-30 12:10"]
LIMITS = ["2wd", "0.6wd", "3.25wd", "4wh", "0.5wh", "11wh", "2h", "15m"]


@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize("limit", LIMITS)
def test_elapsed_is_the_inverse_of_due(cal: WorkCalendar, start: str, limit: str) -> None:
    lim = Limit.parse(limit)
    due = cal.due(at(start), lim)
    assert cal.elapsed(at(start), due, lim.unit) == pytest.approx(lim.amount, abs=1e-9)


def test_resume_after_suspension(cal: WorkCalendar) -> None:
    # 4 wh from Mon 08:00, suspended at 10:00 (2 wh used), resumed Wed 15:00: due Wed 17:00.
    limit = Limit.parse("4wh")
    used = cal.elapsed(at("2026-11-30 08:00"), at("2026-11-30 10:00"), limit.unit)
    remaining = Limit(limit.amount - used, limit.unit)
    assert iso(cal.due(at("2026-12-02 15:00"), remaining)) == "2026-12-02T17:00+08:00"
    # 2 wd from Sep 30 16:00, suspended Oct 8 16:00 (1 wd used), resumed Oct 9 09:00.
    days = Limit.parse("2wd")
    used = cal.elapsed(at("2026-09-30 16:00"), at("2026-10-08 16:00"), days.unit)
    assert used == 1.0
    assert iso(cal.due(at("2026-10-09 09:00"), Limit(days.amount - used, days.unit))) == "2026-10-10T09:00+08:00"


# --------------------------------------------------------------------------- configuration


def test_custom_windows() -> None:
    cal = WorkCalendar(windows=[(time(9, 0), time(17, 0))])
    assert cal.day_length == timedelta(hours=8)
    assert iso(cal.due(at("2026-11-30 16:00"), Limit.parse("2wh"))) == "2026-12-01T10:00+08:00"
    assert iso(cal.due(at("2026-11-30 08:00"), Limit.parse("0.5wd"))) == "2026-11-30T13:00+08:00"
    with pytest.raises(ValueError, match="overlap"):
        WorkCalendar(windows=[(time(8, 0), time(12, 0)), (time(11, 0), time(13, 0))])
    with pytest.raises(ValueError, match="open before"):
        WorkCalendar(windows=[(time(12, 0), time(8, 0))])


FAKE_2027 = """\
# fabricated for tests: not the real 2027 schedule
years:
  2027:
    source: test fixture
    holidays:
      - {name: 国庆节, start: 2027-10-01, end: 2027-10-07}
    workdays: [2027-10-09]
  2026:
    source: test fixture replacing the library's 2026
    holidays:
      - {name: 国庆节, start: 2026-10-01, end: 2026-10-08}
    workdays: [2026-10-10]
overrides:
  - {date: 2026-11-30, working: false, note: flood day off}
  - {date: 2026-11-28, working: true, note: make-up day}
"""


@pytest.fixture
def fake_holidays(tmp_path: Path) -> Path:
    path = tmp_path / "holidays.yaml"
    path.write_text(FAKE_2027, encoding="utf-8")
    return path


def test_holidays_yaml_takes_precedence(fake_holidays: Path) -> None:
    cal = WorkCalendar(fake_holidays)
    assert 2027 in cal.known_years()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownYear)  # 2027 is now known: no warning
        assert date(2027, 10, 9).weekday() == 5 and cal.is_working_day(date(2027, 10, 9))
        assert not cal.is_working_day(date(2027, 10, 4))  # a Monday in the holiday
        assert cal.is_working_day(date(2027, 10, 8))  # Friday, not listed
        assert not cal.is_working_day(date(2027, 10, 16))  # ordinary Saturday
        assert iso(cal.due(at("2027-09-30 16:00"), Limit.parse("2wd"))) == "2027-10-09T16:00+08:00"
    # a year in the file replaces the library's for that year (Oct 8 2026 off here) …
    assert not cal.is_working_day(date(2026, 10, 8))
    assert cal.is_working_day(date(2026, 9, 20)) is False  # the library's 调休 Sunday is gone
    # … and single-day overrides beat everything
    assert not cal.is_working_day(date(2026, 11, 30))
    assert cal.is_working_day(date(2026, 11, 28))
    # years the file does not mention still come from the library
    assert not cal.is_working_day(date(2025, 10, 1))


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("years:\n  2027:\n    workdays: [someday]\n", 3, "years.2027.workdays.0"),
        ("years:\n  2027:\n    holidays:\n      - {start: 2027-10-07, end: 2027-10-01}\n", 4, "years.2027.holidays.0"),
        (
            "years:\n  2027:\n    holidays:\n      - {start: 2027-10-01}\n    workdays: [2027-10-01]\n",
            5,
            "years.2027.workdays.0",
        ),
        ("years:\n  2027:\n    holidays:\n      - {start: 2028-01-01}\n", 4, "years.2027.holidays.0"),
        ("overrides:\n  - {date: 2027-01-01}\n", 2, "overrides.0.working"),
    ],
)
def test_bad_holidays_file_names_line_and_field(tmp_path: Path, text: str, line: int, field: str) -> None:
    path = tmp_path / "holidays.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        WorkCalendar(path)
    assert (err.value.line, err.value.field) == (line, field)
    assert str(path) in str(err.value)


def test_impossible_date_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "holidays.yaml"
    path.write_text("years:\n  2027:\n    workdays: [2027-02-30]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="holidays.yaml"):
        WorkCalendar(path)


def test_shipped_holidays_file_loads() -> None:
    path = Path(__file__).resolve().parents[2] / "config" / "holidays.yaml"
    WorkCalendar(path)


def test_unknown_year_warns_loudly_once_and_falls_back_to_weekdays() -> None:
    cal = WorkCalendar()
    year = max(cal.known_years()) + 1
    first_monday = next(date(year, 3, d) for d in range(1, 8) if date(year, 3, d).weekday() == 0)
    with capture_logs() as logs, pytest.warns(UnknownYear, match=str(year)):
        assert cal.is_working_day(first_monday)
    assert any(e["event"] == "sla.calendar.unknown_year" and e["year"] == year for e in logs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownYear)
        assert not cal.is_working_day(first_monday + timedelta(days=5))  # Saturday; no second warning


def test_load_calendar_warns_about_this_and_next_year_when_unknown(tmp_path: Path) -> None:
    empty = tmp_path / "holidays.yaml"
    empty.write_text("years: {}\n", encoding="utf-8")
    this_year = datetime.now(CST).year
    unknown = {this_year, this_year + 1} - WorkCalendar().known_years()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cal = load_calendar(empty)
    warned = {int(str(w.message).split()[2]) for w in caught if issubclass(w.category, UnknownYear)}
    assert warned == unknown
    assert cal.holidays_path == empty


# --------------------------------------------------------------------------- gridbus sla due


@pytest.fixture
def keep_structlog() -> Iterator[None]:
    # the command sends logs to (CliRunner's) stderr; don't leave that stream configured
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ("2工作日", "2026-10-09T16:00:00+08:00"),
        ("2wd", "2026-10-09T16:00:00+08:00"),
        ("4工作时", "2026-10-08T10:30:00+08:00"),
        ("4wh", "2026-10-08T10:30:00+08:00"),
        ("2紧急工作时", "2026-09-30T18:00:00+08:00"),
        ("2h", "2026-09-30T18:00:00+08:00"),
    ],
)
def test_cli_sla_due(keep_structlog: None, limit: str, expected: str) -> None:
    from services.cli import main

    result = CliRunner().invoke(main, ["sla", "due", "--from", "2026-09-30T16:00:00+08:00", "--limit", limit])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == expected


def test_cli_sla_due_warning_point_and_errors(keep_structlog: None) -> None:
    from services.cli import main

    runner = CliRunner()
    args = ["sla", "due", "--from", "2026-09-30T16:00:00+08:00", "--limit", "2wd", "--fraction", "0.8"]
    result = runner.invoke(main, args)
    assert result.stdout.strip() == "2026-10-09T10:42:00+08:00"
    result = runner.invoke(main, ["sla", "due", "--from", "2026-09-30T16:00:00", "--limit", "2wd"])
    assert result.exit_code == 2 and "offset" in result.output
    result = runner.invoke(main, ["sla", "due", "--from", "2026-09-30T16:00:00+08:00", "--limit", "2 days"])
    assert result.exit_code == 2 and "time limit" in result.output
