"""Risk per subject: signal hits that decay (half-life) and expire (window), capped per rule and overall."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

_NEGLIGIBLE = 0.01


@dataclass(slots=True)
class Hit:
    rule_id: str
    points: float
    at: float
    expires: float
    half_life_s: float | None
    reason: str

    def value(self, now: float) -> float:
        if now >= self.expires:
            return 0.0
        if self.half_life_s is None or now <= self.at:
            return self.points
        return self.points * float(0.5 ** ((now - self.at) / self.half_life_s))


@dataclass(frozen=True, slots=True)
class Contribution:
    rule_id: str
    points: float
    reason: str


@dataclass(slots=True)
class SubjectRisk:
    """One subject's signal hits and the response currently active on it (for hysteresis)."""

    hits: list[Hit]
    active_response: str | None = None
    active_level: int = 0
    active_until: float | None = None
    live_until: float = float("-inf")  # when the last hit expires and no response is in force any more

    def add(self, hit: Hit, now: float) -> None:
        self.hits = [h for h in self.hits if h.value(now) >= _NEGLIGIBLE]
        self.hits.append(hit)

    def forget(self, rule_ids: frozenset[str]) -> None:
        """Drop the hits of these signals (what decided a response that was just lifted)."""
        self.hits = [h for h in self.hits if h.rule_id not in rule_ids]

    def score(
        self, now: float, cap: Callable[[str], float], max_score: float
    ) -> tuple[float, tuple[Contribution, ...]]:
        per_rule: dict[str, float] = {}
        reasons: dict[str, str] = {}
        for hit in self.hits:
            value = hit.value(now)
            if value < _NEGLIGIBLE:
                continue
            per_rule[hit.rule_id] = per_rule.get(hit.rule_id, 0.0) + value
            reasons[hit.rule_id] = hit.reason
        contributions = tuple(
            Contribution(rule, min(total, cap(rule)), reasons[rule]) for rule, total in per_rule.items()
        )
        return min(sum(c.points for c in contributions), max_score), contributions

    def expiries(self, after: float, until: float) -> tuple[float, ...]:
        """When a hit's window ends in (after, until), in order: the score steps down there."""
        return tuple(sorted({h.expires for h in self.hits if after < h.expires < until}))

    def decaying(self, now: float) -> bool:
        """Whether a hit with a half-life still counts at `now`: the score is a curve from there, not a step."""
        return any(h.half_life_s is not None and h.value(now) >= _NEGLIGIBLE for h in self.hits)

    def held(self, now: float) -> frozenset[str]:
        return frozenset(h.rule_id for h in self.hits if h.value(now) >= _NEGLIGIBLE)

    def active(self, now: float) -> int:
        """The level of the response still in force (0: none); an expired one is forgotten."""
        if self.active_until is not None and now >= self.active_until:
            self.active_response, self.active_level, self.active_until = None, 0, None
        return self.active_level
