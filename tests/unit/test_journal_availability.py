"""The journal's availability record: current for readiness, and at most one error line a minute."""

from __future__ import annotations

import logging

import pytest

from responder.journal import Availability, JournalUnavailable


def test_a_flapping_journal_says_its_error_once_a_minute_and_readiness_stays_current(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    availability = Availability("/var/lib/responder/journal.db", clock=lambda: now[0])
    full = JournalUnavailable("/var/lib/responder/journal.db", "database or disk is full")
    with caplog.at_level(logging.INFO):
        for _ in range(3):  # a nearly full disk: fails, stores a page, fails again, within seconds
            availability.failed(full)
            assert not availability.available
            now[0] += 1
            availability.succeeded()
            assert availability.available
            now[0] += 1
        availability.failed(full)
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        recovered = [r for r in caplog.records if "stores again" in r.getMessage()]
        assert len(errors) == 1 and "journal.db" in errors[0].getMessage() and "full" in errors[0].getMessage()
        assert len(recovered) == 1
        now[0] += 60  # still failing a minute later: said again
        availability.failed(full)
        assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2
        assert not availability.available
