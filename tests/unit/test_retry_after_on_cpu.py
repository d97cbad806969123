"""``Retry-After`` as HTTP 429 replies carry it: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
The client's use of it (waits, deadline, retry budget) is tested against a fake server in
tests/integration/test_llm_client_faults.py."""

import calendar

import pytest

from verlkit.clients.llm import parse_retry_after

# 2015-10-21 07:28:00 GMT as epoch seconds
DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
AT_DATE = calendar.timegm((2015, 10, 21, 7, 28, 0))


@pytest.mark.parametrize("value, expected", [("7", 7.0), ("0", 0.0), (" 120 ", 120.0), ("1.5", 1.5)])
def test_delay_seconds(value, expected):
    assert parse_retry_after(value) == expected


def test_http_date_is_relative_to_now():
    assert parse_retry_after(DATE, now=AT_DATE - 30) == 30.0
    assert parse_retry_after(DATE, now=AT_DATE + 5) == 0.0  # a date in the past: retry now
    assert parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now=AT_DATE - 2) == 2.0  # RFC 850 form


@pytest.mark.parametrize("value", [None, "", "soon", "-3", "inf", "nan", "Thu, 99 Foo 2015"])
def test_unreadable_or_absent_is_none(value):
    assert parse_retry_after(value) is None
