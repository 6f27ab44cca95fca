"""Reading fields out of untrusted JSON without trusting its shape."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from responder.ingest.errors import PayloadError


def lookup(data: Any, path: str) -> list[Any]:
    """Every value at a dotted `path`. Keys may also be flat and dotted (Elastic's `kibana.alert.*`):
    the longest matching key wins at each level. `[]` after a key fans out over a list."""
    return list(_walk(data, path.split(".") if path else []))


def _walk(data: Any, parts: list[str]) -> Iterator[Any]:
    if not parts:
        if isinstance(data, list):
            yield from (v for v in data if v is not None)
        elif data is not None:
            yield data
        return
    if not isinstance(data, dict):
        return
    for i in range(len(parts), 0, -1):
        key = ".".join(parts[:i])
        fan = key.endswith("[]")
        name = key.removesuffix("[]")
        if name in data:
            value = data[name]
            if fan and isinstance(value, list):
                for item in value:
                    yield from _walk(item, parts[i:])
            else:
                yield from _walk(value, parts[i:])
            return


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
