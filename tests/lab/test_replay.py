"""Incident replay through the real service into the real lab: every case in replay/ passes; a changed
expectation fails with a readable diff; the same case twice decides and does the same; a recorded draft
replays to what the original did. Every case leaves the lab as it found it (the runner undoes and waits)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from responder.cli.replay import replay
from responder.lab import Lab
from responder.replay.case import REDACTED, Case, CaseSpec, case_files, load_case
from responder.replay.recorder import Recorder, fill_expectations
from responder.replay.report import CaseReport
from responder.replay.runner import Options, replay_case

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
REPLAY = ROOT / "replay"
REAL = REPLAY / "real"  # cases built from the published payloads of tests/payloads/real/
RULES = (ROOT / "rules",)
CONNECTORS = ROOT / "connectors"


def _options(lab: Lab, kafka: str, **extra: Any) -> Options:
    return Options(lab=lab, kafka=kafka, rules=RULES, connectors=CONNECTORS, **extra)


def _changed(name: str, change: Any) -> Case:
    """The library case `name` with its YAML changed by `change(data)`; body files still resolve."""
    path = REPLAY / name
    data = yaml.safe_load(path.read_text())
    change(data)
    return Case(CaseSpec.model_validate(data), path)


def _outcome(report: CaseReport) -> list[tuple[str, str, str, str, tuple[str, ...], tuple[str, ...]]]:
    """What a run decided and did, without timings."""
    out = []
    for d in report.decisions:
        intents = tuple(sorted(f"{a.kind} {a.action} {a.state}" for a in d.intents))
        out.append((d.id, d.subject, d.response, d.state, tuple(sorted(d.actions)), intents))
    return sorted(out)


async def _lab_as_found(lab: Lab) -> None:
    failed = [p for p in await lab.matrix() if not p.passed]
    assert not failed, [f"{p.check.label}: {p.outcome}" for p in failed]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", case_files([REPLAY, REAL]), ids=lambda p: p.stem)
async def test_every_case_passes_in_the_lab(lab: Lab, kafka_bootstrap: str, path: Path) -> None:
    report = await replay_case(load_case(path), _options(lab, kafka_bootstrap))
    assert report.passed, report.render()
    assert report.mode == "lab"
    await _lab_as_found(lab)


def _expect_quarantine_instead(data: dict[str, Any]) -> None:
    data["expect"]["decisions"][0]["response"] = "quarantine"


def _expect_open_instead(data: dict[str, Any]) -> None:
    data["expect"]["reachability"][0]["expect"] = "open"


def _expect_active_and_other_actions(data: dict[str, Any]) -> None:
    rotate = data["expect"]["decisions"][1]
    rotate["state"] = "active"
    rotate["actions"] = ["kill_flows hub1 10.100.0.10", "remove_peer hub1 admin1"]


CHANGED = [
    (
        "okta-suspicious-activity-cut-off.yaml",
        _expect_quarantine_instead,
        [
            "- expected: user:alice@example.com -> quarantine [active]; "
            "got instead: user:alice@example.com -> cut-off [active]",
            "+ unexpected: user:alice@example.com -> cut-off [active]: delete_element hub1 admin_devices 10.100.0.10, "
            "kill_flows hub1 10.100.0.10, remove_peer hub1 admin1",
        ],
    ),
    (
        "okta-mfa-reset-then-new-device.yaml",
        _expect_open_instead,
        ["~ reachability admin1 -> app1 10.100.0.20 tcp/9090: expected open, got dropped"],
    ),
    (
        "ssf-session-revoked-then-credential-compromise.yaml",
        _expect_active_and_other_actions,
        [
            "~ user:alice@example.com -> rotate-key: state: expected active, got awaiting_approval",
            "~ user:alice@example.com -> rotate-key: action missing: remove_peer hub1 admin1",
            "~ user:alice@example.com -> rotate-key: action not expected: rotate_key hub1 admin1",
        ],
    ),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("name", "change", "diff"), CHANGED, ids=[c[0].removesuffix(".yaml") for c in CHANGED])
async def test_a_changed_expectation_fails_with_a_readable_diff(
    lab: Lab, kafka_bootstrap: str, name: str, change: Any, diff: list[str]
) -> None:
    report = await replay_case(_changed(name, change), _options(lab, kafka_bootstrap))
    assert not report.passed
    assert report.failures == diff, report.render()
    rendered = report.render()
    assert "FAIL" in rendered and "expected vs got" in rendered
    assert all(line in rendered for line in diff)
    await _lab_as_found(lab)  # cleaned up all the same


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "name", ["ssf-session-revoked-then-credential-compromise.yaml", "wazuh-critical-alert-quarantine.yaml"]
)
async def test_the_same_case_twice_decides_and_does_the_same(lab: Lab, kafka_bootstrap: str, name: str) -> None:
    case = load_case(REPLAY / name)
    first = await replay_case(case, _options(lab, kafka_bootstrap))
    second = await replay_case(case, _options(lab, kafka_bootstrap))
    assert first.passed and second.passed, first.render() + "\n" + second.render()
    assert first.decisions
    assert _outcome(first) == _outcome(second)
    assert first.enforced == second.enforced


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "name", ["ssf-session-revoked-then-credential-compromise.yaml", "okta-duplicate-delivery-acts-once.yaml"]
)
async def test_a_recorded_draft_replays_to_the_same_decisions_and_actions(
    lab: Lab, kafka_bootstrap: str, tmp_path: Path, name: str
) -> None:
    """The recorder sees every accepted delivery as the service sends it on (secrets and all), as it will
    once wired into `responder run --record`; its draft, given the first run's outcome as expectations,
    replays to the same decisions and actions."""
    recorder = Recorder(tmp_path, name="draft")
    original = await replay_case(load_case(REPLAY / name), _options(lab, kafka_bootstrap, recorder=recorder))
    assert original.passed, original.render()

    text = recorder.path.read_text()
    assert REDACTED in text or "ssf" in text
    assert "Bearer" not in text and "eyJ" not in text  # no token, no signed SET
    fill_expectations(recorder.path, original)
    draft = load_case(recorder.path)
    assert [d.via for d in draft.spec.deliveries] == [d.via for d in load_case(REPLAY / name).spec.deliveries]

    replayed = await replay_case(draft, _options(lab, kafka_bootstrap))
    assert replayed.passed, replayed.render()
    assert _outcome(replayed) == _outcome(original)
    assert replayed.enforced == original.enforced
    await _lab_as_found(lab)


async def test_dry_run_checks_decisions_only(lab: Lab) -> None:
    case = load_case(REPLAY / "okta-suspicious-activity-cut-off.yaml")
    report = await replay_case(case, Options(lab=lab, dry_run=True, rules=RULES, connectors=CONNECTORS))
    assert report.passed, report.render()
    assert report.mode == "dry-run"
    assert [d.state for d in report.decisions] == ["dry_run"]
    assert report.enforced == []
    # Without a lab: decided against an inventory in the lab's shape, same decision, same id.
    alone = await replay_case(case, Options(rules=RULES, connectors=CONNECTORS))
    assert alone.passed, alone.render()
    assert [d.id for d in alone.decisions] == [d.id for d in report.decisions]


def test_the_command_exits_1_with_the_diff_and_json(lab: Lab, tmp_path: Path) -> None:
    data = yaml.safe_load((REPLAY / "protected-breakglass-untouched.yaml").read_text())
    data["expect"]["decisions"] = [{"subject": "user:breakglass@example.com", "response": "cut-off"}]
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(data))
    app = typer.Typer()
    app.command()(replay)
    common = ["--use-lab", lab.prefix, "--rules", str(RULES[0]), "--connectors", str(CONNECTORS)]

    result = CliRunner().invoke(app, [str(broken), *common])
    assert result.exit_code == 1, result.output
    assert "- expected: user:breakglass@example.com -> cut-off; got nothing for this subject" in result.output
    assert "0 of 1 cases passed" in result.output

    good = CliRunner().invoke(app, [str(REPLAY / "protected-breakglass-untouched.yaml"), *common, "--json"])
    assert good.exit_code == 0, good.output
    out = json.loads(good.output)
    assert out["passed"] is True
    (case,) = out["cases"]
    assert [s["kind"] for s in case["timeline"]] == ["delivery", "probe"]


async def test_one_incident_contained_on_a_lab_hub_and_in_a_tailnet(
    lab: Lab, kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """replay/overlays/: the tailnet is a local server implementing Tailscale's documented API contract
    (tests/support/overlay_contracts.py), not Tailscale itself."""
    import base64
    import os

    from tests.support.overlay_contracts import TailscaleContract

    phone_key = base64.b64encode(os.urandom(32)).decode()
    tailnet = TailscaleContract("tskey-api-replay", "client", "secret", {"tag:quarantine"})
    tailnet.add_device("phone1", "alice@example.com", phone_key, "100.64.0.7")
    url = await tailnet.start() + "/api/v2"
    monkeypatch.setenv("RESPONDER_REPLAY_TS_KEY", "tskey-api-replay")
    inventory = yaml.safe_load(lab.inventory_path.read_text())
    inventory["overlays"] = [{"name": "tailnet", "kind": "tailscale", "base_url": url,
                              "credentials": {"token": {"env": "RESPONDER_REPLAY_TS_KEY"}}}]  # fmt: skip
    inventory["peers"].append({"name": "alice-phone", "hub": "tailnet", "public_key": phone_key,
                               "tunnel_ip": "100.64.0.7", "owner": "alice@example.com"})  # fmt: skip
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump(inventory))
    try:
        case = load_case(REPLAY / "overlays" / "okta-cut-off-on-hub-and-tailnet.yaml")
        report = await replay_case(case, _options(lab, kafka_bootstrap, inventory=tmp_path / "inventory.yaml"))
        assert report.passed, report.render()
        assert tailnet.calls("POST", "/expire"), "the phone's node key was expired through the API"
    finally:
        await tailnet.stop()
    await _lab_as_found(lab)
