"""Guards between a decision and the hubs: protected targets refused again at the executor (whatever the
rules said), and a blast-radius limit on actions per minute, overall and per response rule. A limit
reached trips a breaker: the service falls back to dry-run (decides and records, enforces nothing) for a
cool-down, and says so loudly — a flood of decisions is more likely a bad rule or a poisoned source than
a real mass compromise."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from responder.core.actions import Action
from responder.core.identity import IdentityMap
from responder.core.rules import Protection

log = logging.getLogger(__name__)


class ProtectedTargets:
    """The executor's veto: the same protection the rules apply, checked once more on the concrete action."""

    def __init__(self, protection: Protection, identity: IdentityMap) -> None:
        self._identity = identity
        self.replace(protection)

    def replace(self, protection: Protection) -> None:
        """Protect what `protection` names from now on (the rules were reloaded)."""
        self._protection = protection
        identity = self._identity
        keys, addresses = set(protection.keys), set()
        for key in [f"user:{u}" for u in protection.users] + [f"device:{d}" for d in protection.devices]:
            for peer in identity.subject(key).peers:
                keys.add(str(peer.public_key))
                addresses.add(peer.tunnel_ip)
        self._keys, self._addresses = frozenset(keys), frozenset(addresses)

    def __call__(self, action: Action) -> str | None:
        if action.peer_key is not None and str(action.peer_key) in self._keys:
            return f"key {action.peer_key} is protected"
        if action.address is not None and action.address in self._addresses:
            return f"{action.address} belongs to a protected user or device"
        if action.address is not None:
            why = self._protection.address_protected(
                action.address, self._identity.hub_addresses, self._identity.management
            )
            if why:
                return f"{action.address} is protected ({why})"
        return None


class BlastRadius:
    def __init__(
        self, per_minute: int, per_rule_per_minute: int, clock: Callable[[], float], cooldown_s: float = 300.0
    ) -> None:
        self.per_minute, self.per_rule_per_minute = per_minute, per_rule_per_minute
        self._clock = clock
        self._cooldown = cooldown_s
        self._all: deque[float] = deque()
        self._by_rule: dict[str, deque[float]] = {}
        self.tripped_until: float | None = None
        self.reason = ""

    @property
    def tripped(self) -> bool:
        return self.tripped_until is not None and self._clock() < self.tripped_until

    def admit(self, rule: str, actions: int) -> str | None:
        """None if `actions` more for `rule` fit; else why the service is in dry-run now."""
        now = self._clock()
        if self.tripped:
            return self.reason
        window = now - 60
        for q in (self._all, self._by_rule.setdefault(rule, deque())):
            while q and q[0] <= window:
                q.popleft()
        if len(self._all) + actions > self.per_minute:
            return self._trip(now, f"more than {self.per_minute} actions in a minute")
        if len(self._by_rule[rule]) + actions > self.per_rule_per_minute:
            return self._trip(now, f"rule {rule} asked for more than {self.per_rule_per_minute} actions in a minute")
        self._all.extend([now] * actions)
        self._by_rule[rule].extend([now] * actions)
        return None

    def _trip(self, now: float, why: str) -> str:
        self.tripped_until = now + self._cooldown
        self.reason = f"blast-radius limit: {why}; enforcement is off (dry-run) for {self._cooldown:g}s"
        log.error("%s", self.reason)
        return self.reason
