"""Rule conditions in CEL (Common Expression Language), compiled once at load, never Python eval."""

from __future__ import annotations

import re
from typing import Any

import cel

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\}")
# A name not behind a dot (so not a field of something else), and the field after it, if there is one.
_NAME = re.compile(r"(?<![.\w])([A-Za-z_]\w*)(?:\s*\.\s*([A-Za-z_]\w*))?")
Uses = dict[str, frozenset[str] | None]  # name -> the fields used, or None for the whole value


class ConditionError(ValueError):
    """A condition that does not compile; the message is CEL's, with a caret under the problem."""


class Condition:
    """A compiled boolean CEL expression. Evaluation errors (a missing field, a type mismatch) count as
    false: a rule that cannot be evaluated on an event does not fire on it."""

    __slots__ = ("_program", "_uses", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._program = cel.compile(source)
        except (ValueError, RuntimeError) as exc:
            raise ConditionError(str(exc)) from None
        self._uses = uses(source)

    def holds(self, context: dict[str, Any]) -> bool:
        try:
            return self._program.execute(self._needed(context)) is True
        except Exception:  # any evaluation failure means "does not hold", by contract
            return False

    def _needed(self, context: dict[str, Any]) -> dict[str, Any]:
        """The part of the context the expression can read. Handing a value to CEL converts all of it, and
        that cost more than the evaluation: an event's whole payload for `event.severity >= 3`."""
        out: dict[str, Any] = {}
        for name, value in context.items():
            if name not in self._uses:
                continue
            fields = self._uses[name]
            out[name] = value if fields is None or not isinstance(value, dict) else {
                f: value[f] for f in fields if f in value
            }  # fmt: skip
        return out

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"


def uses(source: str) -> Uses:
    """Which names an expression reads, and which of their fields: every name not behind a dot, with the
    field after it; a name used any other way (indexed, passed whole, `.?field`) needs its whole value.
    Only ever more than the expression reads — a name or field in a string literal, or a comprehension
    variable, just adds to it — never less."""
    found: dict[str, set[str] | None] = {}
    for match in _NAME.finditer(source):
        name, field = match.group(1), match.group(2)
        fields = found.setdefault(name, set())
        if fields is None:
            continue
        if field is None:
            found[name] = None
        else:
            fields.add(field)
    return {name: None if fields is None else frozenset(fields) for name, fields in found.items()}


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
