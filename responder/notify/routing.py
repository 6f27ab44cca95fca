"""Which channels hear a notice, how fast a channel may speak, and what it has said already. Pure: time
is a parameter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from responder.notify.notice import Notice


@dataclass(frozen=True, slots=True)
class Route:
    """Every non-empty field must match; `subjects` are glob patterns (user:*@example.com)."""

    channels: tuple[str, ...]
    kinds: tuple[str, ...] = ()
    responses: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()

    def matches(self, notice: Notice) -> bool:
        state = notice.detail.get("state")
        return (
            (not self.kinds or notice.kind.value in self.kinds)
            and (not self.responses or (notice.response or "") in self.responses)
            and (not self.states or (isinstance(state, str) and state in self.states))
            and (not self.subjects or any(fnmatchcase(notice.subject, p) for p in self.subjects))
        )


def channels_for(notice: Notice, routes: Sequence[Route]) -> list[str]:
    """The channels `notice` goes to, each once, in the order the routes name them; a notice naming its
    own channels (an escalation) goes to those alone."""
    if notice.channels:
        return list(dict.fromkeys(notice.channels))
    return list(dict.fromkeys(c for r in routes if r.matches(notice) for c in r.channels))


class TokenBucket:
    """`rate_per_s` messages a second on average, `burst` at once."""

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        self._rate, self._burst = rate_per_s, float(burst)
        self._tokens, self._at = float(burst), now

    def _refill(self, now: float) -> None:
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = max(self._at, now)

    def take(self, now: float) -> float:
        """0 when a message may go now (a token is taken), else the seconds until one may."""
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate


class Dedup:
    """The same (kind, decision, channel) is sent once within `window_s`: a decision re-asserted on every
    reconcile round, or emitted again after a restart, is one message, not a flood."""

    def __init__(self, window_s: float) -> None:
        self._window = window_s
        self._seen: dict[tuple[str, str, str], float] = {}

    def first(self, key: tuple[str, str, str], now: float) -> bool:
        """Whether `key` was not seen within the window (and remember it now)."""
        if self._window <= 0:
            return True
        if len(self._seen) > 10_000:  # forget what is out of the window: bounded memory under a flood
            self._seen = {k: t for k, t in self._seen.items() if now - t < self._window}
        seen = self._seen.get(key)
        if seen is not None and now - seen < self._window:
            return False
        self._seen[key] = now
        return True
