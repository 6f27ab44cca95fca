"""The incident case format: parsing, validation, and the library in replay/ is valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from responder.replay.case import CaseError, case_files, format_offset, load_case, load_cases, parse_offset
from responder.replay.clock import VirtualClock
from responder.replay.inventory import lab_shaped_inventory

REPLAY = Path(__file__).resolve().parents[2] / "replay"
SOURCES = {"okta", "entra", "ssf", "kafka:wazuh", "kafka:entra", "kafka:elastic"}


def _write(tmp: Path, data: object) -> Path:
    path = tmp / "case.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _minimal(**extra: object) -> dict[str, object]:
    return {"name": "x", "deliveries": [{"via": "okta", "body": {"data": {"events": []}}}], **extra}


@pytest.mark.parametrize(
    ("text", "seconds"), [("0s", 0), ("250ms", 0.25), ("90s", 90), ("5m", 300), ("4h", 14400), ("1d", 86400), (3, 3)]
)
def test_offsets(text: str | int, seconds: float) -> None:
    assert parse_offset(text) == seconds
    assert parse_offset(format_offset(seconds)) == seconds


@pytest.mark.parametrize("bad", ["-1s", "5 minutes", "1h5m", True, None])
def test_bad_offsets(bad: object) -> None:
    with pytest.raises(ValueError, match="offset"):
        parse_offset(bad)


def test_the_library_is_valid_and_covers_every_source() -> None:
    cases = load_cases([REPLAY, REPLAY / "real"])
    assert len(cases) >= 10
    vias = {d.via for c in cases for d in c.spec.deliveries}
    assert vias >= SOURCES, SOURCES - vias
    assert len({c.name for c in cases}) == len(cases), "case names are unique"
    for c in cases:
        for d in c.spec.deliveries:
            assert c.body_bytes(d)  # body files resolve relative to the case


def test_case_files_expands_directories_only_one_level(tmp_path: Path) -> None:
    (tmp_path / "bodies").mkdir()
    (tmp_path / "bodies" / "x.yaml").write_text("{}")
    (tmp_path / "b.yaml").write_text("{}")
    (tmp_path / "a.yml").write_text("{}")
    (tmp_path / "notes.txt").write_text("")
    assert [p.name for p in case_files([tmp_path])] == ["a.yml", "b.yaml"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"deliveries": [{"via": "okta"}]}, "exactly one of body and body_file"),
        ({"deliveries": [{"via": "pager", "body": {}}]}, "deliveries.0.via"),
        ({"deliveries": [{"via": "okta", "body": {}, "key": "k"}]}, "key is for kafka"),
        ({"deliveries": [{"via": "okta", "at": "5m", "body": {}}, {"via": "okta", "at": "1m", "body": {}}]}, "order"),
        ({"expect": {"decisions": [{"subject": "user:a", "response": "cut-off", "state": "gone"}]}}, "state"),
        ({"expect": {"reachability": [{"src": "admin1", "dst": "app1", "expect": "maybe"}]}}, "expect"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_cases_name_the_field(tmp_path: Path, change: dict[str, object], message: str) -> None:
    with pytest.raises(CaseError, match=message):
        load_case(_write(tmp_path, _minimal(**change)))


def test_missing_body_file(tmp_path: Path) -> None:
    with pytest.raises(CaseError, match="does not exist"):
        load_case(_write(tmp_path, _minimal(deliveries=[{"via": "okta", "body_file": "nope.json"}])))


def test_bodies_are_sent_as_given(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_bytes(b'{"a":  1}\n')
    case = load_case(
        _write(
            tmp_path,
            _minimal(
                deliveries=[
                    {"via": "okta", "body_file": "b.json"},
                    {"via": "kafka:wazuh", "body": '{"raw": true}', "key": "k"},
                    {"via": "entra", "body": {"value": [{"id": "1"}]}},
                ]
            ),
        )
    )
    first, second, third = case.spec.deliveries
    assert case.body_bytes(first) == b'{"a":  1}\n'  # a file's exact bytes
    assert case.body_bytes(second) == b'{"raw": true}'  # a string as is
    assert case.body_json(third) == {"value": [{"id": "1"}]}
    assert second.kafka_format == "wazuh"


def test_virtual_clock_jumps_and_runs() -> None:
    clock = VirtualClock()
    clock.advance_to(3600)
    assert 3600 <= clock.offset < 3601
    clock.advance_to(10)  # never backwards
    assert clock.offset >= 3600


def test_the_dry_run_inventory_has_the_labs_shape() -> None:
    inventory = lab_shaped_inventory(2)
    assert [h.name for h in inventory.hubs] == ["hub1", "hub2"]
    admin1 = next(p for p in inventory.peers if p.name == "admin1")
    assert (admin1.owner, str(admin1.tunnel_ip), admin1.sets) == (
        "alice@example.com",
        "10.100.0.10",
        ("admin_devices",),
    )
    assert lab_shaped_inventory(1).peers[0].public_key == lab_shaped_inventory(1).peers[0].public_key
