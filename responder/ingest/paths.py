"""Reading fields out of untrusted JSON without trusting its shape."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

from responder.ingest.errors import PayloadError


def lookup(data: Any, path: str) -> list[Any]:
    """Every value at a dotted `path`. Keys may also be flat and dotted (Elastic's `kibana.alert.*`):
    the longest matching key wins at each level. `[]` after a key fans out over a list."""
    return _compiled(path)(data)


def reader(path: str) -> Callable[[Any], list[Any]]:
    """`lookup` of one `path`, made once: what a connector compiled at load calls for each message."""
    return _compiled(path)


def text_reader(*paths: str) -> Callable[[Any], str | None]:
    """`text` of these `paths`, made once."""
    readers = tuple(_compiled(p) for p in paths)
    if len(readers) == 1:
        (only,) = readers
        return lambda data: _as_text(values[0]) if (values := only(data)) else None

    def read(data: Any) -> str | None:
        for read_path in readers:
            values = read_path(data)
            if values:  # the first path present decides, even when what it holds is no text
                return _as_text(values[0])
        return None

    return read


@lru_cache(maxsize=4096)
def _compiled(path: str) -> Callable[[Any], list[Any]]:
    """`path` turned once into, for each position in it, the keys to try there (longest first) with
    where each one leads: a message then costs a few dict lookups per path, not string building."""
    parts = path.split(".") if path else []
    if "[]" not in path and 1 <= len(parts) <= 2:
        return _plain(parts)
    return _walking(parts)


def _walking(parts: list[str]) -> Callable[[Any], list[Any]]:
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


def _plain(parts: list[str]) -> Callable[[Any], list[Any]]:
    """`_walking`, unrolled for the paths most connectors name (`id`, `rule.level`): one or two keys, no
    fan-out. Same answers: the whole dotted key first, then key by key, nothing past a non-object."""
    if len(parts) == 1:
        (key,) = parts

        def one(data: Any) -> list[Any]:
            if not isinstance(data, dict) or (found := data.get(key)) is None:
                return []
            return [v for v in found if v is not None] if isinstance(found, list) else [found]

        return one
    outer, inner = parts
    whole = f"{outer}.{inner}"

    def two(data: Any) -> list[Any]:
        if not isinstance(data, dict):
            return []
        if whole in data:
            found = data[whole]
        elif isinstance(nested := data.get(outer), dict):
            found = nested.get(inner)
        else:
            return []
        if found is None:
            return []
        return [v for v in found if v is not None] if isinstance(found, list) else [found]

    return two


def first(data: Any, *paths: str) -> Any:
    for path in paths:
        values = lookup(data, path)
        if values:
            return values[0]
    return None


def text(data: Any, *paths: str) -> str | None:
    return _as_text(first(data, *paths))


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value).strip() or None


def texts(values: list[Any]) -> list[str]:
    """The texts among `values` (a number as its digits), stripped, the empty ones left out, at most 64."""
    return [s for v in values if isinstance(v, str | int) and (s := str(v).strip())][:64]


# ISO 8601 as producers write it, not only as the standard does: one-digit fields (Entra's diagnostic
# logs: `2022-09-09T9:59:27.958Z`), a space for the `T`, no seconds, any number of fraction digits (Entra
# writes 7, Go 9), `Z`, `UTC`, `+00:00`, `+0000` (Wazuh) or `+00`.
_ISO = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{1,2})-(?P<d>\d{1,2})"
    r"(?:[Tt ](?P<h>\d{1,2}):(?P<mi>\d{1,2})(?::(?P<s>\d{1,2})(?:[.,](?P<f>\d+))?)?)?"
    r"\s*(?P<tz>[Zz]|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?"
)
# The en-US form Azure Monitor writes in a diagnostic record's own `time` (`8/22/2022 6:11:52 PM`).
_US = re.compile(
    r"(?P<mo>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})"
    r"(?:[ T](?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d+))?)?\s*(?P<ampm>[AaPp][Mm])?)?"
    r"\s*(?P<tz>[Zz]|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?"
)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_MS_ABOVE = 1e11
"""An epoch number above this is milliseconds (1e11 s is the year 5138; 1e11 ms, 1973)."""


def parse_time(value: Any, fmt: str = "iso", field: str = "time") -> datetime:
    """An aware datetime from ISO 8601 as producers write it (see `_ISO`), Azure's `M/D/YYYY h:mm:ss AM`,
    RFC 2822, or epoch seconds or milliseconds (a number, or a string of one, whatever `fmt` says: a
    producer that sends epoch time in an ISO field still means a time). A time without an offset is UTC."""
    if isinstance(value, bool):  # JSON true is no time, though Python counts it a number
        raise PayloadError(f"{field}: {value!r} is not a {fmt} time")
    try:
        if fmt in ("epoch_ms", "epoch_s") or isinstance(value, int | float) or _is_number(value):
            # Decimal, not float: 1700000000015 ms is .015 s, not .014999.
            number = Decimal(str(value).strip())  # NaN and infinities fail below, as ValueError or Overflow
            if fmt == "epoch_ms" or (fmt != "epoch_s" and abs(number) > EPOCH_MS_ABOVE):
                number /= 1000
            return _EPOCH + timedelta(microseconds=int((number * 1_000_000).to_integral_value()))
        return _text_time(value.strip())
    except (AttributeError, TypeError, ValueError, ArithmeticError, OSError):
        raise PayloadError(f"{field}: {value!r} is not a {fmt} time") from None


def first_time(values: Iterable[Any], fmt: str = "iso", field: str = "time") -> datetime:
    """The first of `values` (a record's time fields, most telling first) that is a time. PayloadError
    names the first one when none is, or says that none was there."""
    problem: PayloadError | None = None
    for value in values:
        if value is None or value == "":
            continue
        try:
            return parse_time(value, fmt, field)
        except PayloadError as exc:
            problem = problem or exc
    raise problem or PayloadError(f"{field}: missing")


def _is_number(value: Any) -> bool:
    if not isinstance(value, str) or ":" in value:  # no number has a colon, every time of day does
        return False
    try:
        float(value)
    except ValueError:
        return False
    return value.strip().lower() not in {"nan", "inf", "-inf", "infinity", "-infinity", "+inf"}


def _text_time(s: str) -> datetime:
    try:  # the common case, strict ISO 8601, at a fortieth of the cost of the patterns below
        parsed = datetime.fromisoformat(s)
    except ValueError:
        pass
    else:
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if m := _ISO.fullmatch(s):
        parts = m.groupdict()
    elif m := _US.fullmatch(s):
        parts = m.groupdict()
        hour = int(parts["h"] or 0)
        if parts["ampm"]:
            if not 1 <= hour <= 12:
                raise ValueError(s)
            hour = hour % 12 + (12 if parts["ampm"].lower() == "pm" else 0)
        parts["h"] = str(hour)
    else:
        return _rfc2822(s)
    fraction = (parts["f"] or "")[:6].ljust(6, "0")
    return datetime(
        int(parts["y"]), int(parts["mo"]), int(parts["d"]), int(parts["h"] or 0), int(parts["mi"] or 0),
        int(parts["s"] or 0), int(fraction), tzinfo=_offset(parts["tz"]),
    )  # fmt: skip


def _offset(tz: str | None) -> tzinfo:
    if tz is None or tz.upper() in {"Z", "UTC", "GMT"}:
        return UTC
    digits = tz[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + int(digits[2:4] or 0)
    if minutes >= 24 * 60:
        raise ValueError(tz)
    return timezone(timedelta(minutes=-minutes if tz[0] == "-" else minutes))


def _rfc2822(s: str) -> datetime:
    parsed = parsedate_to_datetime(s)  # raises ValueError (TypeError before 3.10) on anything else
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
