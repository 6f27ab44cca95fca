"""The `chat:` section: each mistake is one line naming what to set."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.config import ConfigError, load_settings

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def _load(tmp_path: Path, yaml: str, **overrides: object) -> None:
    config = tmp_path / "responder.yaml"
    config.write_text(yaml)
    load_settings(config, **overrides)


def test_slack_without_its_signing_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"chat\.slack is set: set slack_signing_secret or slack_signing_secret_file"):
        _load(tmp_path, "chat:\n  slack:\n    users: {U0ANA: ana@example.com}\n")


def test_links_without_a_key_or_with_a_short_one_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set link_key or link_key_file"):
        _load(tmp_path, "chat:\n  link_base_url: https://responder.example.com\n")
    with pytest.raises(ConfigError, match="link_key is too short: set at least 32 bytes") as refused:
        _load(tmp_path, "chat:\n  link_base_url: https://r.example.com\n", link_key="a-secret-of-24-characters")
    assert "a-secret-of-24" not in str(refused.value)


def test_a_role_that_does_not_exist_names_the_person(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"chat.people.ana@example.com: role must be one of"):
        _load(tmp_path, "chat:\n  people: {ana@example.com: approvr}\n")


def test_a_complete_chat_section_loads(tmp_path: Path) -> None:
    secret = tmp_path / "slack"
    secret.write_text(SECRET + "\n")
    yaml = (
        "chat:\n  people: {ana@example.com: approver}\n  slack:\n    team_id: T0TEAM\n"
        "    users: {U0ANA: ana@example.com}\n"
    )
    _load(tmp_path, yaml, slack_signing_secret_file=secret)


def test_the_example_configurations_chat_block_loads_once_uncommented(tmp_path: Path) -> None:
    example = (Path(__file__).resolve().parents[2] / "deploy/etc/responder.yaml").read_text()
    start = example.index("# slack_signing_secret_file:")
    block = example[start : example.index("\n\n", start)]
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines()) + "\n"
    config = tmp_path / "responder.yaml"
    config.write_text(uncommented)
    settings = load_settings(config, defer_secret_files=True)
    assert settings.chat is not None and settings.chat.slack is not None
    assert settings.chat.slack.users["U0123ANA"] == "ana@example.com"


def test_a_link_base_url_that_is_no_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="link_base_url must be the service's URL"):
        _load(tmp_path, "chat:\n  link_base_url: responder.example.com\n", link_key="k" * 32)
