"""A compiled rule set: signal rules that add risk, response rules that decide, and what is protected."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from responder.core.actions import ActionType
from responder.core.approvals import ApprovalTimeout
from responder.core.conditions import Condition
from responder.core.events import Event, Severity, Source
from responder.core.identifiers import IPAddress, IPNetwork


@dataclass(frozen=True, slots=True)
class SignalRule:
    id: str
    points: float
    window_s: float
    cap: float
    reason: str
    source: Source | None = None
    types: frozenset[str] = frozenset()
    products: frozenset[str] = frozenset()
    min_severity: Severity | None = None
    when: Condition | None = None
    half_life_s: float | None = None
    requires: frozenset[str] = frozenset()
    description: str = ""
    where: str = ""

    def matches(self, event: Event, held: frozenset[str], context: Callable[[], dict[str, Any]]) -> bool:
        """`context` builds the CEL context; it is called only when the rule has a condition and the
        cheap checks (product, severity, required signals) pass."""
        if self.products and event.product not in self.products:
            return False
        if self.min_severity is not None and event.severity < self.min_severity:
            return False
        if self.requires and not (self.requires & held):
            return False
        return self.when is None or self.when.holds(context())


@dataclass(frozen=True, slots=True)
class ActionTemplate:
    type: ActionType
    sets: tuple[str, ...] = ()  # delete/add element: only these of the peer's sets (empty: all of them)


@dataclass(frozen=True, slots=True)
class ResponseRule:
    id: str
    level: int
    actions: tuple[ActionTemplate, ...]
    min_score: float | None = None
    any_signals: frozenset[str] = frozenset()
    all_signals: frozenset[str] = frozenset()
    when: Condition | None = None
    ttl_s: int | None = None
    approval: bool = False
    approval_when: Condition | None = None
    approval_timeout: ApprovalTimeout | None = None
    dry_run: bool = False
    # Signals that take this response back: when one fires on a subject, the subject's live decisions of
    # this response are undone (see `Lift`) and the signals that decided it are forgotten, so the next
    # event does not decide it again on the strength of what was just undone.
    lifted_by: frozenset[str] = frozenset()
    description: str = ""
    where: str = ""

    @property
    def deciding_signals(self) -> frozenset[str]:
        """The signals this response names: what a lift forgets."""
        return self.any_signals | self.all_signals

    def unmet(self, score: float, held: frozenset[str], context: Callable[[], dict[str, Any]]) -> str | None:
        """Why this response does not apply, or None when it does."""
        if self.min_score is not None and score < self.min_score:
            return f"score {score:.1f} < {self.min_score:g}"
        if self.any_signals and not (self.any_signals & held):
            return f"needs one of signals {sorted(self.any_signals)}"
        if self.all_signals and not self.all_signals <= held:
            return f"needs all of signals {sorted(self.all_signals)}"
        if self.when is not None and not self.when.holds(context()):
            return f"condition false: {self.when.source}"
        return None


@dataclass(frozen=True, slots=True)
class Protection:
    users: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()
    hubs: bool = True
    management: bool = True

    def address_protected(
        self, address: IPAddress, hubs: frozenset[IPAddress], management: frozenset[IPAddress]
    ) -> str:
        if self.management and address in management:
            return "the responder's management address"
        if self.hubs and address in hubs:
            return "a hub address"
        for net in self.networks:
            if address.version == net.version and address in net:
                return f"in protected network {net}"
        return ""


@dataclass(frozen=True, slots=True)
class PolicySettings:
    max_score: float = 100.0
    quarantine_set: str = "quarantine"
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class RuleSet:
    signals: tuple[SignalRule, ...]
    responses: tuple[ResponseRule, ...]
    protection: Protection = Protection()
    settings: PolicySettings = PolicySettings()
    _index: dict[tuple[str, str], tuple[SignalRule, ...]] = field(default_factory=dict, repr=False, compare=False)
    _by_source: dict[str, tuple[SignalRule, ...]] = field(default_factory=dict, repr=False, compare=False)
    _caps: dict[str, float] = field(default_factory=dict, repr=False, compare=False)
    _lifting: dict[str, tuple[ResponseRule, ...]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = [r.id for r in self.signals] + [r.id for r in self.responses]
        dupes = {i for i in ids if ids.count(i) > 1}
        if dupes:
            raise ValueError(f"duplicate rule ids: {sorted(dupes)}")
        # Signals are looked up by (source, type) so conditions only run for the few that can match.
        index: dict[tuple[str, str], list[SignalRule]] = {}
        by_source: dict[str, list[SignalRule]] = {}
        for rule in self.signals:
            sources = [rule.source.value] if rule.source else [s.value for s in Source]
            for source in sources:
                if rule.types:
                    for t in rule.types:
                        index.setdefault((source, t), []).append(rule)
                else:
                    by_source.setdefault(source, []).append(rule)
        self._index.update({k: tuple(v) for k, v in index.items()})
        self._by_source.update({k: tuple(v) for k, v in by_source.items()})
        self._caps.update({r.id: r.cap for r in self.signals})
        object.__setattr__(self, "responses", tuple(sorted(self.responses, key=lambda r: -r.level)))
        lifting: dict[str, list[ResponseRule]] = {}
        for response in self.responses:
            for signal in sorted(response.lifted_by):
                lifting.setdefault(signal, []).append(response)
        self._lifting.update({k: tuple(v) for k, v in lifting.items()})

    def candidates(self, event: Event) -> tuple[SignalRule, ...]:
        # The Source member itself as the key (a str enum hashes and compares as its value): `.value`
        # on an enum member costs more than the lookup.
        source = event.source
        exact = self._index.get((source, event.type), ())
        anytype = self._by_source.get(source, ())
        return exact + anytype if anytype else exact

    def lifted(self, signal_ids: list[str]) -> list[tuple[str, ResponseRule]]:
        """The responses these signals lift, each once, with the first signal that lifts it."""
        if not self._lifting:
            return []
        found: dict[str, tuple[str, ResponseRule]] = {}
        for signal in signal_ids:
            for response in self._lifting.get(signal, ()):
                found.setdefault(response.id, (signal, response))
        return list(found.values())

    def cap(self, rule_id: str) -> float:
        return self._caps.get(rule_id, self.settings.max_score)

    def signal_ids(self) -> frozenset[str]:
        return frozenset(r.id for r in self.signals)

    @property
    def horizon_s(self) -> float:
        """How far back events still matter: the longest signal window or response TTL."""
        windows = [r.window_s for r in self.signals] + [r.ttl_s or 0 for r in self.responses]
        return max(windows, default=0.0)


def network(value: str) -> IPNetwork:
    return ipaddress.ip_network(value, strict=False)
