"""A connector compiled at load makes, of every alert, the event its declarative mapping makes through
`Event`'s validation (the same fields, the same canonical JSON), or the same refusal with the same reason:
for every SIEM sample the tests have, the hostile values, and variants generated around them."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from responder.core.events import MAX_DEPTH, Event
from responder.ingest.compiled import CompiledConnector
from responder.ingest.parsers import Parsed, parse_message
from responder.ingest.paths import _plain, _walking
from responder.ingest.siem import load_connectors
from tests.unit.test_hostile_values import hostile

ROOT = Path(__file__).resolve().parents[2]
SIEM = ("wazuh", "elastic", "ocsf", "splunk")
FORMATS: dict[str, CompiledConnector] = {
    name: fmt for name, fmt in load_connectors(ROOT / "connectors").items() if isinstance(fmt, CompiledConnector)
}
RECEIVED = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SAMPLES = [
    *((fmt, ROOT / "tests" / "payloads" / "siem" / f"{fmt}.json") for fmt in SIEM),
    *((fmt, path) for fmt in SIEM for path in sorted((ROOT / "tests" / "payloads" / "real" / fmt).glob("*.json"))),
]


def outcome(fmt: Any, message: Any, raw: bytes, received: datetime | None) -> list[Event] | tuple[str, str]:
    try:
        return fmt.events(message, raw, received) if hasattr(fmt, "events") else fmt(message, raw, received)
    except Exception as exc:  # the refusal, or the bug, is compared as it is
        return (type(exc).__name__, str(exc))


def assert_same_events(fast: list[Event], slow: list[Event], *, from_json: bool = True) -> None:
    assert fast == slow
    for made, validated in zip(fast, slow, strict=True):
        assert made.__dict__ == validated.__dict__  # canonical_json too: the validator made it
        assert made.__pydantic_fields_set__ == validated.__pydantic_fields_set__
        assert made.subjects.__dict__ == validated.subjects.__dict__
        assert made.subjects.__pydantic_fields_set__ == validated.subjects.__pydantic_fields_set__
        assert made.canonical_json == made.model_dump_json()
        # A value no JSON carries (NaN, a datetime) is stored as the validating path stores it, and reads
        # back as JSON does; every value JSON carries reads back as it was.
        assert not from_json or Event.model_validate_json(made.canonical_json) == made


def assert_same(
    fmt: CompiledConnector, message: Any, raw: bytes, received: datetime | None = RECEIVED, *, from_json: bool = True
) -> None:
    fast, slow = outcome(fmt, message, raw, received), outcome(fmt.connector, message, raw, received)
    if isinstance(fast, list) and isinstance(slow, list):
        assert_same_events(fast, slow, from_json=from_json)
    else:
        assert fast == slow


def assert_same_parse(fmt: CompiledConnector, raw: bytes, received: datetime | None = RECEIVED) -> Parsed:
    """Through the consumer's own reading: records, rejections and their reasons, one message."""
    fast, slow = parse_message(raw, fmt, received), parse_message(raw, fmt.connector, received)
    assert fast.rejected == slow.rejected
    assert_same_events(fast.events, slow.events)
    return fast


@pytest.mark.parametrize(("fmt", "path"), SAMPLES, ids=[f"{f}:{p.name}" for f, p in SAMPLES])
def test_every_sample_alert_maps_to_the_event_the_validating_mapping_makes(fmt: str, path: Path) -> None:
    compiled = FORMATS[fmt]
    assert_same_parse(compiled, path.read_bytes())
    for record in compiled.records(json.loads(path.read_bytes())):
        raw = json.dumps(record).encode()
        assert_same(compiled, record, raw)
        assert_same(compiled, record, raw, received=None)
        # What the fast path is for: an alert that makes an event makes it there, not in the validating path.
        if isinstance(outcome(compiled.connector, record, raw, RECEIVED), list):
            assert compiled._event(record, raw, RECEIVED) is not None


def _paths(fmt: CompiledConnector) -> list[str]:
    c = fmt.connector
    ids = [p for spec in c.id for p in ([spec] if isinstance(spec, str) else spec)]
    return sorted(
        {*c.match, *c.any_of, *ids, *c.type, *c.title, *c.time.paths, *c.severity.paths, *c.users, *c.addresses,
         *c.devices, *c.host.devices, *c.host.addresses}
    )  # fmt: skip


def _put(doc: dict[str, Any], path: str, value: Any, *, flat: bool) -> None:
    """`value` at `path`: nested (a fan-out `[]` as a one-item list), or under the whole dotted key."""
    if flat:
        doc[path.replace("[]", "")] = value
        return
    parts = path.split(".")
    here: Any = doc
    for part in parts[:-1]:
        key = part.removesuffix("[]")
        if not isinstance(here.get(key), dict | list):
            here[key] = [{}] if part.endswith("[]") else {}
        here = here[key]
        if isinstance(here, list):
            if not here or not isinstance(here[0], dict):
                here.insert(0, {})
            here = here[0]
    here[parts[-1].removesuffix("[]")] = value


def _drop(doc: dict[str, Any], path: str) -> None:
    here: Any = doc
    parts = [p.removesuffix("[]") for p in path.split(".")]
    for part in parts[:-1]:
        here = here.get(part) if isinstance(here, dict) else None
        if isinstance(here, list):
            here = here[0] if here else None
    if isinstance(here, dict):
        here.pop(parts[-1], None)


def _deep(levels: int) -> Any:
    value: Any = "bottom"
    for n in range(levels):
        value = [value] if n % 2 else {"k": value}
    return value


names = st.one_of(
    hostile,
    st.text(min_size=0, max_size=20),
    st.sampled_from(["Alice@Example.COM", " alice@example.com ", "bob@example.com", "@", "a@b", "x" * 256]),
    st.integers(min_value=250, max_value=260).map(lambda n: "u" * (n - 12) + "@example.com"),
    st.integers(min_value=250, max_value=260).map(lambda n: "d" * n),
)
addresses = st.sampled_from(
    ["10.100.0.30", "10.0.0.1", "010.0.0.1", "::1", "0::1", "fe80::1%eth0", "fe80::1%$(id)", "2001:db8::1",
     "999.1.1.1", "10.0.0.1/24", " 10.0.0.2 ", "", "not an address"]
)  # fmt: skip
TIME_TEXTS = [
    "2026-03-02T10:21:44.018+0000", "2026-03-02T10:21:44Z", "2026-03-02 10:21:44", "2026-03-02T10:21:44+02:00",
    "2026-03-02T10:21:44.123456789Z", "2022-09-09T9:59:27.958Z", "8/22/2022 6:11:52 PM",
    "Mon, 02 Mar 2026 10:21:44 +0000", "2026-03-02", "not a time", "", " 2026-03-02T10:21:44Z ", "1700000000",
    "1700000000123", "1e10", "nan", "inf", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999+14:00",
]  # fmt: skip
times = st.one_of(
    st.sampled_from(TIME_TEXTS),
    st.integers(min_value=-(10**13), max_value=10**13),
    st.floats(min_value=-1e13, max_value=1e13, allow_nan=False),
    st.booleans(),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), names, addresses, times,
)  # fmt: skip
values = st.one_of(
    scalars,
    st.lists(st.one_of(names, addresses, st.none(), st.integers()), max_size=120),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
)


@st.composite
def variants(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    fmt, path = draw(st.sampled_from([s for s in SAMPLES if s[1].parent.name == "siem"]))
    message = json.loads(path.read_bytes())
    paths = _paths(FORMATS[fmt])
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        where = draw(st.sampled_from(paths))
        change = draw(st.sampled_from(["set", "set", "flat", "drop"]))
        if change == "drop":
            _drop(message, where)
        else:
            _put(message, where, draw(values), flat=change == "flat")
    if draw(st.booleans()):
        message["deep"] = _deep(draw(st.integers(min_value=MAX_DEPTH - 6, max_value=MAX_DEPTH + 2)))
    return fmt, message


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(variants())
def test_generated_variants_map_alike_or_are_refused_alike(variant: tuple[str, dict[str, Any]]) -> None:
    fmt, message = variant
    raw = json.dumps(message).encode()
    slow = outcome(FORMATS[fmt].connector, message, raw, RECEIVED)
    event("made" if isinstance(slow, list) else f"refused: {slow[1].split(':')[1]}")
    event(f"fast path: {not isinstance(outcome(FORMATS[fmt]._event, message, raw, RECEIVED), tuple | None)}")
    assert_same(FORMATS[fmt], message, raw)
    assert_same(FORMATS[fmt], message, raw, received=None)
    assert_same_parse(FORMATS[fmt], raw)


@pytest.mark.parametrize("fmt", SIEM)
def test_values_no_json_payload_carries_are_judged_by_the_validating_mapping(fmt: str) -> None:
    message = json.loads((ROOT / "tests" / "payloads" / "siem" / f"{fmt}.json").read_bytes())
    for odd in (
        {**message, 7: "a key that is no text"},
        {**message, "score": math.nan},
        {**message, "when": datetime(2026, 3, 2, tzinfo=UTC)},
        {**message, "blob": b"bytes"},
        {**message, "bad": "\ud800"},
    ):
        assert_same(FORMATS[fmt], odd, b"{}", from_json=False)
    for received in (datetime(2026, 3, 2, 12), datetime(2026, 3, 2, 12, tzinfo=timezone(timedelta(hours=-5)))):
        no_time = copy.deepcopy(message)
        for path in FORMATS[fmt].connector.time.paths:
            _drop(no_time, path)
        assert_same(FORMATS[fmt], no_time, b"{}", received)
    # A value this path reads before the reference would (a title whose digits Python will not print)
    # in an alert the reference refuses earlier (a time that is none): the reference's refusal, not a bug.
    odd_order = copy.deepcopy(message)
    for path in FORMATS[fmt].connector.title:
        _put(odd_order, path, 10**5000, flat=False)
    for path in FORMATS[fmt].connector.time.paths:
        _put(odd_order, path, "not a time", flat=False)
    assert_same(FORMATS[fmt], odd_order, b"{}", from_json=False)
    assert_same(FORMATS[fmt], [message], b"[]")
    assert_same(FORMATS[fmt], "an alert", b'"an alert"')


keys = st.sampled_from(["a", "b", "c", "a.b", "b.c", "a.b.c"])
documents = st.recursive(
    st.one_of(st.none(), st.integers(), st.text(max_size=3)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(documents, st.sampled_from(["a", "b", "a.b", "b.c", "c.a"]))
def test_a_path_of_one_or_two_keys_reads_as_the_general_walk_does(doc: Any, path: str) -> None:
    parts = path.split(".")
    assert _plain(parts)(doc) == _walking(parts)(doc)


def test_alerts_that_name_the_same_subjects_share_one_frozen_subjects() -> None:
    wazuh = FORMATS["wazuh"]
    message = json.loads((ROOT / "tests" / "payloads" / "siem" / "wazuh.json").read_bytes())
    first, second = (wazuh.events({**message, "id": n}, b"{}", RECEIVED)[0] for n in ("a-1", "a-2"))
    assert first.subjects is second.subjects
    assert first.subjects == wazuh.connector.events(message, b"{}", RECEIVED)[0].subjects
