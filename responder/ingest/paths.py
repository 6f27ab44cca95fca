"""Reading fields out of untrusted JSON without trusting its shape."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from responder.ingest.errors import PayloadError


def lookup(data: Any, path: str) -> list[Any]:
    """Every value at a dotted `path`. Keys may also be flat and dotted (Elastic's `kibana.alert.*`):
    the longest matching key wins at each level. `[]` after a key fans out over a list."""
    return _compiled(path)(data)


@lru_cache(maxsize=4096)
def _compiled(path: str) -> Callable[[Any], list[Any]]:
    """`path` turned once into, for each position in it, the keys to try there (longest first) with
    where each one leads: a message then costs a few dict lookups per path, not string building."""
    parts = path.split(".") if path else []
    steps: list[tuple[tuple[str, bool, int], ...]] = []
    for start in range(len(parts)):
        tries = []
        for end in range(len(parts), start, -1):
            key = ".".join(parts[start:end])
            tries.append((key.removesuffix("[]"), key.endswith("[]"), end))
        steps.append(tuple(tries))
    last = len(parts)

    def walk(data: Any, at: int, out: list[Any]) -> None:
        while at < last:
            if not isinstance(data, dict):
                return
            for name, fan, nxt in steps[at]:
                if name in data:
                    data = data[name]
                    if fan and isinstance(data, list):
                        for item in data:
                            walk(item, nxt, out)
                        return
                    at = nxt
                    break
            else:
                return
        if isinstance(data, list):
            out.extend(v for v in data if v is not None)
        elif data is not None:
            out.append(data)

    def find(data: Any) -> list[Any]:
        out: list[Any] = []
        walk(data, 0, out)
        return out

    return find


def first(data: Any, *paths: str) -> Any:
    for path in paths:
        values = lookup(data, path)
        if values:
            return values[0]
    return None


def text(data: Any, *paths: str) -> str | None:
    value = first(data, *paths)
    if value is None or isinstance(value, dict | list):
        return None
    s = str(value).strip()
    return s or None


def parse_time(value: Any, fmt: str = "iso", field: str = "time") -> datetime:
    """An aware datetime from ISO 8601 (with `Z` or `+0000`), epoch seconds or epoch milliseconds."""
    try:
        if fmt == "epoch_ms":
            return datetime.fromtimestamp(float(value) / 1000, UTC)
        if fmt == "epoch_s":
            return datetime.fromtimestamp(float(value), UTC)
        s = value.strip().replace("Z", "+00:00")
        if len(s) > 5 and s[-5] in "+-" and s[-4:].isdigit():  # Wazuh's +0000
            s = f"{s[:-2]}:{s[-2:]}"
        parsed = datetime.fromisoformat(s)
    except (AttributeError, TypeError, ValueError, OverflowError, OSError):
        raise PayloadError(f"{field}: {value!r} is not a {fmt} time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
