"""ARCHIVE_LAG from the stream offset: 0 when the archive has written the stream to its
end, else the age of the newest message written (or, none yet, since the archiver started)."""

from datetime import datetime, timezone

from services.archiver.stream import lag


def test_lag_is_zero_at_the_end_of_the_stream_and_the_age_of_the_newest_write_behind_it() -> None:
    newest = datetime.fromtimestamp(1_000.0, timezone.utc)
    assert lag(0, newest, started=0.0, now=5_000.0) == 0.0
    assert lag(-3, None, started=0.0, now=5_000.0) == 0.0  # a stale end read before the last write
    assert lag(12, newest, started=0.0, now=1_030.0) == 30.0
    assert lag(12, None, started=4_000.0, now=4_090.0) == 90.0  # nothing written yet
