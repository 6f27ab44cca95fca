"""Rules reloaded live: on SIGHUP or the admin API, the configured rule files replace the running policy.

A reload is all or nothing: the files are loaded and validated first, and only a rule set without problems
is swapped in, between two events (the engine is only touched on the event loop). Risk already accrued and
the decisions in force are the engine's and the journal's, so they are kept. A refused reload leaves the
old rules running and says why, file:line. Either way the audit trail records who asked and what came of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from responder.core.engine import Engine
from responder.core.rules import RuleSet
from responder.journal import Journal
from responder.policy import PolicyError, load_rules
from responder.policy.reload import ReloadResult
from responder.service.signalled import SignalledReloads
from responder.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


class RuleReloader:
    """Owns reloads of the engine's rules. `applied` is told of every rule set swapped in (the executor's
    veto of protected targets follows the rules' protection through it)."""

    def __init__(
        self,
        engine: Engine,
        paths: Sequence[Path],
        *,
        journal: Journal,
        metrics: Metrics,
        clock: Callable[[], datetime],
        applied: Callable[[RuleSet], None] = lambda _: None,
    ) -> None:
        self._engine, self._paths, self._journal = engine, list(paths), journal
        self._metrics, self._clock, self._applied = metrics, clock, applied
        self._lock = asyncio.Lock()  # one reload at a time: two must not interleave load and swap
        self._signalled = SignalledReloads(self.reload, "rules reload failed; the running rules stay", log)

    def request(self) -> None:
        """Ask for a reload by the signal (safe from a signal handler); `run` carries it out."""
        self._signalled.request()

    async def run(self, stop: asyncio.Event) -> None:
        """Carry out requested reloads until `stop`."""
        await self._signalled.run(stop)

    async def reload(self, actor: str) -> ReloadResult:
        """Load and validate the rule files; swap them in if they have no problem. Never raises PolicyError."""
        async with self._lock:
            try:
                rules = await asyncio.to_thread(load_rules, self._paths)
            except PolicyError as exc:
                current = self._engine.rules
                result = ReloadResult(
                    False, len(current.signals), len(current.responses), tuple(map(str, exc.problems))
                )
                log.warning("rules reload refused, the running rules stay: %s", "; ".join(result.errors))
            else:
                self._engine.replace_rules(rules)
                self._applied(rules)
                result = ReloadResult(True, len(rules.signals), len(rules.responses))
                log.info("rules reloaded: %d signals, %d responses", result.signals, result.responses)
            outcome = "applied" if result.applied else "refused"
            self._metrics.rules_reloads.labels(outcome=outcome).inc()
            detail: dict[str, object] = {
                "outcome": outcome, "signals": result.signals, "responses": result.responses,
                "files": [str(p) for p in self._paths], "errors": list(result.errors),
            }  # fmt: skip
            await self._journal.audit(self._clock().isoformat(), actor, "rules.reload", "rules", detail)
            return result
