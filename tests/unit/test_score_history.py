"""A subject's score over time, replayed from its events: decay, windows, caps, several signals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from responder.core.events import Event, Source, Subjects
from responder.core.identity import IdentityMap
from responder.core.rules import PolicySettings, RuleSet, SignalRule
from responder.inventory import Inventory
from responder.policy.history import ScorePoint, score_history

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
E0 = T0.timestamp()
ALICE = "user:alice@example.com"
NO_INVENTORY = IdentityMap(None)


def _signal(id_: str, type_: str, points: float, *, window_s: float = 3600, cap: float = 100,
            half_life_s: float | None = None) -> SignalRule:  # fmt: skip
    return SignalRule(id_, points, window_s, cap, id_, source=Source.OKTA, types=frozenset({type_}),
                      half_life_s=half_life_s)  # fmt: skip


def _event(n: int, type_: str, after_s: float, user: str = "alice@example.com") -> Event:
    return Event(
        id=f"e{n}", source=Source.OKTA, type=type_, time=T0 + timedelta(seconds=after_s),
        subjects=Subjects(users=(user,)), dedup_key=f"e{n}",
    )  # fmt: skip


def _rules(*signals: SignalRule) -> RuleSet:
    return RuleSet(signals, (), settings=PolicySettings(max_score=100))


def _after_events(points: tuple[ScorePoint, ...]) -> list[tuple[str, float, float]]:
    return [(p.event_id, p.at - E0, round(p.score, 3)) for p in points if p.event_id is not None]


def test_a_signal_with_a_half_life_rises_then_decays_as_a_curve() -> None:
    rules = _rules(_signal("mfa", "mfa.deny", 40, window_s=86400, half_life_s=600))
    events = [_event(1, "mfa.deny", 0), _event(2, "mfa.deny", 600)]

    points = score_history(rules, NO_INVENTORY, ALICE, events, end=E0 + 1800, per_gap=4)

    assert _after_events(points) == [("e1", 0, 40), ("e2", 600, 60)]  # 20 left of the first, plus 40
    assert points[0] == ScorePoint(at=E0, score=0.0)  # just before the first event: nothing yet
    between = [p for p in points if E0 < p.at < E0 + 600]
    assert len(between) == 4
    assert all(a.score > b.score for a, b in pairwise(between))  # falling
    assert between[0].score < 40 and between[-1].score > 20
    assert points[-1].at == E0 + 1800 and points[-1].score == pytest.approx(60 / 4)  # two half-lives on
    assert [p.at for p in points] == sorted(p.at for p in points)


def test_a_window_that_ends_steps_the_score_down_between_events() -> None:
    rules = _rules(_signal("new-device", "device.new", 30, window_s=600))
    events = [_event(1, "device.new", 0), _event(2, "device.new", 1000)]

    points = score_history(rules, NO_INVENTORY, ALICE, events, end=E0 + 1200)

    assert [(p.at - E0, p.score) for p in points] == [
        (0, 0), (0, 30),  # the first event
        (pytest.approx(599.999), 30), (600, 0),  # its window ends: a step, no slope
        (1000, 0), (1000, 30),  # the second
        (1200, 30),  # the end
    ]  # fmt: skip


def test_a_cap_holds_the_score_of_a_repeated_signal() -> None:
    rules = _rules(_signal("fail", "login.fail", 20, cap=50))
    events = [_event(n, "login.fail", n * 10) for n in range(1, 5)]

    points = score_history(rules, NO_INVENTORY, ALICE, events, end=E0 + 60)

    assert [s for _, _, s in _after_events(points)] == [20, 40, 50, 50]


def test_two_signals_add_and_events_of_others_are_ignored() -> None:
    rules = _rules(_signal("fail", "login.fail", 20), _signal("threat", "threat.detected", 45))
    events = [
        _event(1, "login.fail", 0),
        _event(2, "threat.detected", 30, user="bob@example.com"),
        _event(3, "threat.detected", 60),
    ]

    points = score_history(rules, NO_INVENTORY, ALICE, events, end=E0 + 60)

    assert _after_events(points) == [("e1", 0, 20), ("e3", 60, 65)]
    assert len(points) == 4  # before and after each of alice's two events; the end is the last one's time
    assert score_history(rules, NO_INVENTORY, "user:carol@example.com", events, end=E0 + 60) == ()


def test_samples_between_events_are_bounded() -> None:
    rules = _rules(_signal("mfa", "mfa.deny", 5, window_s=86400, half_life_s=60))
    events = [_event(n, "mfa.deny", n * 100) for n in range(200)]

    points = score_history(rules, NO_INVENTORY, ALICE, events, end=E0 + 20000, per_gap=12, max_samples=400)

    assert len(points) <= 2 * len(events) + 400 + 1


def test_a_person_is_looked_up_under_their_login_and_their_peers_devices_keys_and_addresses() -> None:
    inventory = Inventory.load(Path(__file__).resolve().parents[2] / "rules" / "tests" / "inventory.yaml")
    identity = IdentityMap(inventory)
    (peer,) = [p for p in inventory.peers if p.owner == "alice@example.com"]

    names = identity.names(ALICE)

    assert names == ("alice@example.com", "admin1", str(peer.public_key), "10.100.0.10")
    assert identity.names("ip:203.0.113.7") == ("203.0.113.7",)
