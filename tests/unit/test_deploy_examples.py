"""The example files deploy/install.sh puts in /etc/responder load with the service's own loaders, and
the commented example entries are real ones once uncommented."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from responder.config import load_settings
from responder.inventory import HubMode, Inventory

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture(autouse=True)
def _no_environment_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("RESPONDER_")]:
        monkeypatch.delenv(name)


def test_the_example_configuration_loads_with_the_installed_layout() -> None:
    settings = load_settings(DEPLOY / "etc/responder.yaml", defer_secret_files=True)
    assert settings.inventory == Path("/etc/responder/inventory.yaml")
    assert settings.rules == (Path("/etc/responder/rules"),)
    assert settings.connectors == Path("/etc/responder/connectors")
    assert settings.journal == "sqlite:///var/lib/responder/journal.db"
    assert settings.admin_token_file == Path("/etc/responder/secrets/admin-token")
    assert settings.okta_secret_file == Path("/etc/responder/secrets/okta")
    assert (settings.listen.host, settings.listen.port, settings.dry_run) == ("127.0.0.1", 8080, False)


def test_the_example_inventory_loads_empty_and_its_commented_entries_are_valid(tmp_path: Path) -> None:
    example = DEPLOY / "etc/inventory.yaml"
    assert Inventory.load(example).hubs == ()
    # Uncomment the entries: the commented block right under `hubs: []` and under `peers: []`.
    lines, in_entries = [], False
    for text in example.read_text().splitlines():
        if text in ("hubs: []", "peers: []"):
            lines.append(text.removesuffix(" []"))
            in_entries = True
            continue
        in_entries = in_entries and text.startswith("# ")
        lines.append(text.removeprefix("# ") if in_entries else text)
    path = tmp_path / "inventory.yaml"
    path.write_text("\n".join(lines) + "\n")
    inventory = Inventory.load(path)
    (hub,) = inventory.hubs
    assert (hub.name, hub.mode, hub.ssh.user) == ("hub1", HubMode.AGENT, "responder")
    (peer,) = inventory.peers
    assert (peer.name, peer.hub, peer.owner) == ("alice-laptop", "hub1", "alice@example.com")


def test_the_unit_runs_the_installed_venv_as_the_service_user_with_a_private_state_directory() -> None:
    unit = (DEPLOY / "systemd/responder.service").read_text()
    assert "ExecStart=/opt/responder/.venv/bin/responder run --config /etc/responder/responder.yaml" in unit
    assert re.search(r"(?m)^User=responder$", unit) and re.search(r"(?m)^Group=responder$", unit)
    assert re.search(r"(?m)^StateDirectory=responder$", unit) and re.search(r"(?m)^StateDirectoryMode=0700$", unit)
    assert "ReadWritePaths=/var/lib/responder" in unit
    assert "SECRET" not in unit and "TOKEN" not in unit  # secrets are named by responder.yaml, not the unit


def test_the_commented_operators_example_is_a_real_one(tmp_path: Path) -> None:
    text = (DEPLOY / "etc/responder.yaml").read_text()
    block = text[text.index("# operators:") :].split("\n\n", 1)[0]
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    config = tmp_path / "responder.yaml"
    config.write_text(uncommented + "\n")
    operators = load_settings(config).operators
    assert operators.oidc is not None and operators.oidc.roles["approver"] == ["responder-approvers"]
    assert operators.tokens_file == Path("/etc/responder/api-tokens.yaml") and operators.bootstrap_token
