"""Rule conditions in CEL (Common Expression Language), compiled once at load, never Python eval."""

from __future__ import annotations

import re
from typing import Any

import cel

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\}")


class ConditionError(ValueError):
    """A condition that does not compile; the message is CEL's, with a caret under the problem."""


class Condition:
    """A compiled boolean CEL expression. Evaluation errors (a missing field, a type mismatch) count as
    false: a rule that cannot be evaluated on an event does not fire on it."""

    __slots__ = ("_program", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._program = cel.compile(source)
        except (ValueError, RuntimeError) as exc:
            raise ConditionError(str(exc)) from None

    def holds(self, context: dict[str, Any]) -> bool:
        try:
            return self._program.execute(context) is True
        except Exception:  # any evaluation failure means "does not hold", by contract
            return False

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"


def render(template: str, context: dict[str, Any]) -> str:
    """Fill `{event.attributes.client.ipAddress}`-style placeholders from plain data (no attribute access
    on objects, no format spec): unknown paths render as `?`."""

    def lookup(match: re.Match[str]) -> str:
        value: Any = context
        for part in match.group(1).split("."):
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return "?"
        return str(value)[:200]

    return _PLACEHOLDER.sub(lookup, template)
