"""The `notify:` section: what a typo or an unsafe channel gets told, and secrets from files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from responder.config import Settings, SlackBotChannel

HOOK = {"type": "webhook", "url": "https://soar.example.com/hooks/responder", "secret": "s" * 20}


def _problem(notify: dict[str, object]) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(notify=notify)
    return str(caught.value.errors()[0]["msg"])


def test_a_route_naming_an_unknown_channel_or_kind_is_refused() -> None:
    assert "names channel 'pager', which notify.channels does not define" in _problem(
        {"channels": {"hook": HOOK}, "routes": [{"channels": ["pager"]}]}
    )
    assert "unknown kind 'enforce'" in _problem(
        {"channels": {"hook": HOOK}, "routes": [{"kinds": ["enforce"], "channels": ["hook"]}]}
    )


def test_email_without_starttls_is_only_for_a_loopback_relay_and_a_webhook_only_over_https() -> None:
    mail = {"type": "email", "host": "smtp.example.com", "sender": "r@example.com", "to": ["s@example.com"]}
    assert "only for a server on a loopback address" in _problem({"channels": {"m": mail | {"starttls": False}}})
    Settings(notify={"channels": {"m": mail | {"host": "127.0.0.1", "starttls": False}}})
    assert "must be https://" in _problem({"channels": {"h": HOOK | {"url": "http://soar.example.com/x"}}})
    assert "at least 16 characters" in _problem({"channels": {"h": HOOK | {"secret": "short"}}})


def test_a_channel_secret_comes_from_its_file_and_never_shows_in_a_repr(tmp_path: Path) -> None:
    token = tmp_path / "slack-bot-token"
    token.write_text("xoxb-from-a-file-0123\n")
    settings = Settings(notify={"channels": {"s": {"type": "slack_bot", "channel": "C1", "token_file": str(token)}}})
    channel = settings.notify.channels["s"]
    assert isinstance(channel, SlackBotChannel) and channel.token is not None
    assert channel.token.get_secret_value() == "xoxb-from-a-file-0123"
    assert "xoxb-from" not in repr(settings)
    assert "set token or token_file, not both" in _problem(
        {"channels": {"s": {"type": "slack_bot", "channel": "C1", "token": "x", "token_file": str(token)}}}
    )
