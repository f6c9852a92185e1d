"""`tunelab monitor --since`: spans ago and ISO times, and what is refused."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone

import pytest

from tunelab.cli.args import since_time

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(("text", "ago"), [("30m", timedelta(minutes=30)),
                                           ("24h", timedelta(hours=24)),
                                           ("7d", timedelta(days=7)), (" 2w ", timedelta(weeks=2)),
                                           ("1.5h", timedelta(minutes=90))])
def test_a_span_ago(text, ago):
    assert since_time(text, NOW) == NOW - ago


def test_an_iso_time_is_utc_unless_it_names_a_zone():
    assert since_time("2026-04-30T08:00", NOW) == datetime(2026, 4, 30, 8, tzinfo=timezone.utc)
    assert since_time("2026-04-30T08:00+02:00", NOW) == datetime(2026, 4, 30, 6, tzinfo=timezone.utc)


@pytest.mark.parametrize(("text", "why"), [("yesterday", "must be a span ago"),
                                           ("24", "must be a span ago"),
                                           ("5y", "must be a span ago"),
                                           ("2026-06-01", "is not in the past")])
def test_refused(text, why):
    with pytest.raises(argparse.ArgumentTypeError, match=why):
        since_time(text, NOW)


def test_a_span_before_year_one_is_a_clean_error_not_an_overflow():
    with pytest.raises(argparse.ArgumentTypeError, match="before year 1"):
        since_time("999999999d", NOW)
