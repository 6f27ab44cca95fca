"""When the journal cannot store anything (disk full, read-only, database gone): the error its adapters
raise, and the record of whether its last write went through."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class JournalUnavailable(Exception):
    """Nothing of the failed transaction was stored; retry later. Deliveries are answered 503 (their
    senders retry), the pipeline and the Kafka consumer wait and try again, offsets stay uncommitted."""

    def __init__(self, journal: str, cause: str) -> None:
        super().__init__(f"journal {journal}: {cause}")
        self.journal = journal
        self.cause = cause


class Availability:
    """Whether the journal's last write went through. The error line names the journal at most once a
    minute: a full disk fails every delivery, and one that is nearly full flaps between failing and
    storing, so neither may repeat a line per write. Readiness reads `available`, which is always current."""

    def __init__(self, journal: str, *, repeat_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.journal = journal
        self.fault: JournalUnavailable | None = None
        self._repeat_s = repeat_s
        self._clock = clock
        self._said_at: float | None = None
        self._recovery_due = False  # an error line was said since the last "stores again"

    @property
    def available(self) -> bool:
        return self.fault is None

    def failed(self, fault: JournalUnavailable) -> None:
        now = self._clock()
        if self._said_at is None or now - self._said_at >= self._repeat_s:
            log.error(
                "journal %s cannot store anything: %s; deliveries are answered 503 until it can",
                self.journal, fault.cause, extra={"journal": self.journal},
            )  # fmt: skip
            self._said_at = now
            self._recovery_due = True
        self.fault = fault

    def succeeded(self) -> None:
        if self.fault is not None and self._recovery_due:
            log.warning("journal %s stores again", self.journal, extra={"journal": self.journal})
            self._recovery_due = False
        self.fault = None
