"""A subject's score over time: its recorded events replayed through the engine, the score read after each.

Pure, like the engine: the end of the curve is a parameter, never the wall clock. The replay starts from
no risk, so it is the score the events given explain; risk from events before the first is not in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from responder.core.engine import Engine
from responder.core.events import Event
from responder.core.identity import IdentityMap
from responder.core.rules import RuleSet

# A window's end is drawn as a step: the score just before it, then at it.
_STEP_S = 0.001


@dataclass(frozen=True, slots=True, kw_only=True)
class ScorePoint:
    """The subject's score at `at` (epoch seconds). After an event, `event_id` names it; just before one,
    and in a gap between events (a fading or expiring signal), it is None."""

    at: float
    score: float
    event_id: str | None = None


def score_history(
    rules: RuleSet,
    identity: IdentityMap,
    subject: str,
    events: Sequence[Event],
    *,
    end: float,
    per_gap: int = 12,
    max_samples: int = 400,
) -> tuple[ScorePoint, ...]:
    """The score of `subject` (a key such as `user:alice@example.com`) over `events`, in processing order:
    for each event about the subject, a point just before it and one just after it (the same time: a jump
    is drawn as a step), and between events and up to `end`, the score where it changes without an event.
    A signal window that ends gives two points (before and at its end); while a signal with a half-life
    counts, up to `per_gap` evenly spaced samples per gap, at most `max_samples` in all, draw its decay.
    Events about other subjects are ignored."""
    about = [e for e in events if subject in identity.resolve(e.subjects)]
    engine = Engine(rules, identity)
    samples = max(0, min(per_gap, max_samples // (len(about) + 1)))
    points: list[ScorePoint] = []
    last: float | None = None
    for event in about:
        # The engine's time never goes back (engine.py): an event dated earlier counts at the last one's.
        at = event.epoch if last is None else max(last, event.epoch)
        if last is not None:
            points += _between(engine, subject, last, at, samples)
        points.append(ScorePoint(at=at, score=engine.state(subject, at).score))
        engine.process(event)
        points.append(ScorePoint(at=at, score=engine.state(subject, at).score, event_id=event.id))
        last = at
    if last is not None and end > last:
        points += _between(engine, subject, last, end, samples)
        points.append(ScorePoint(at=end, score=engine.state(subject, end).score))
    return tuple(points)


def _between(engine: Engine, subject: str, start: float, stop: float, samples: int) -> list[ScorePoint]:
    """The points strictly between two times where the score moves without an event."""
    times: set[float] = set()
    if samples and engine.decaying(subject, start):
        step = (stop - start) / (samples + 1)
        times.update(start + step * i for i in range(1, samples + 1))
    for expires in engine.expiries(subject, start, stop):
        times.add(expires)
        if expires - _STEP_S > start:
            times.add(expires - _STEP_S)
    return [ScorePoint(at=t, score=engine.state(subject, t).score) for t in sorted(times)]
