"""Hot reload: a changed rule set is validated and swapped in at once, or refused with the old one kept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from responder.core.engine import Engine
from responder.policy.loader import PolicyError, load_rules


@dataclass(frozen=True, slots=True)
class ReloadResult:
    applied: bool
    signals: int
    responses: int
    errors: tuple[str, ...] = ()


def reload_rules(engine: Engine, paths: Sequence[Path]) -> ReloadResult:
    """Load `paths`; on success swap the engine's rule set (risk already accrued is kept)."""
    try:
        rules = load_rules(paths)
    except PolicyError as exc:
        current = engine.rules
        return ReloadResult(False, len(current.signals), len(current.responses), tuple(map(str, exc.problems)))
    engine.replace_rules(rules)
    return ReloadResult(True, len(rules.signals), len(rules.responses))
