"""Times as producers write them (paths.parse_time, paths.first_time): every form seen in published
payloads is the instant it means, and what is no time is refused with the field's name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from responder.ingest.errors import PayloadError
from responder.ingest.paths import first_time, parse_time

T = datetime(2022, 9, 9, 9, 59, 27, 958000, tzinfo=UTC)


@pytest.mark.parametrize(
    "value, fmt, expected",
    [
        ("2022-09-09T9:59:27.958Z", "iso", T),  # Entra diagnostic logs: a one-digit hour
        ("2022-9-9T9:59:27.958Z", "iso", T),
        ("2022-09-09T09:59:27.9580000Z", "iso", T),  # Entra: 7 fraction digits
        ("2022-09-09T09:59:27.958000000Z", "iso", T),  # Go: 9
        ("2022-09-09T11:59:27.958+0200", "iso", T),  # Wazuh
        ("2022-09-09T11:59:27.958+02:00", "iso", T),
        ("2022-09-09T04:59:27.958-05", "iso", T),
        ("2022-09-09 09:59:27.958 UTC", "iso", T),
        ("2022-09-09T09:59:27.958", "iso", T),  # no offset: UTC
        ("9/9/2022 9:59:27 AM", "iso", T.replace(microsecond=0)),  # Azure's record time
        ("9/9/2022 9:59:27 PM", "iso", T.replace(microsecond=0, hour=21)),
        ("9/9/2022 10:59:27 AM +01:00", "iso", T.replace(microsecond=0)),
        ("Fri, 09 Sep 2022 09:59:27 GMT", "iso", T.replace(microsecond=0)),
        (1662717567958, "iso", T),  # epoch milliseconds where an ISO time was expected
        ("1662717567958", "auto", T),
        (1662717567.958, "auto", T),
        ("1662717567.958", "epoch_s", T),
        (1662717567958, "epoch_ms", T),
        (1662717567, "auto", T.replace(microsecond=0)),  # OCSF's seconds
    ],
)
def test_a_time_as_a_producer_writes_it_is_the_instant_it_means(value: Any, fmt: str, expected: datetime) -> None:
    parsed = parse_time(value, fmt)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize(
    "value",
    ["year-month-dayThours:minuts:seconds+0000", "String (timestamp)", "2022-13-01T00:00:00Z", "13/40/2022 1:00 PM",
     "9/9/2022 13:00:00 PM", "2022-09-09T09:59:27+25:00", "", "nan", "Infinity", True, None, ["x"], {"t": 1}, 1e400],
)  # fmt: skip
def test_what_is_no_time_is_refused_naming_the_field(value: Any) -> None:
    with pytest.raises(PayloadError, match=r"^riskLastUpdatedDateTime: "):
        parse_time(value, field="riskLastUpdatedDateTime")


def test_the_first_of_a_records_times_that_is_one_wins() -> None:
    assert first_time([None, "", "String (timestamp)", "9/9/2022 9:59:27 AM"]) == T.replace(microsecond=0)
    with pytest.raises(PayloadError, match="'later' is not"):
        first_time(["later", "soon"], field="time")
    with pytest.raises(PayloadError, match="time: missing"):
        first_time([None, ""], field="time")


def test_an_offset_is_kept_not_converted() -> None:
    parsed = parse_time("2022-11-17T19:17:42.694+0200")
    assert parsed.utcoffset() == timedelta(hours=2)
    assert parsed == datetime(2022, 11, 17, 17, 17, 42, 694000, tzinfo=UTC)
    assert parsed.tzinfo == timezone(timedelta(hours=2))
