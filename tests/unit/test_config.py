from pathlib import Path

import pytest

from responder.config import ConfigError, load_settings


def test_environment_overrides_the_file_and_secrets_stay_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "responder.yaml"
    config.write_text("listen:\n  port: 9000\n  host: 127.0.0.2\ndry_run: true\n")
    monkeypatch.setenv("RESPONDER_LISTEN__PORT", "9100")
    monkeypatch.setenv("RESPONDER_OKTA_SECRET", "hunter2-okta-secret-value")
    settings = load_settings(config)
    assert settings.listen.port == 9100
    assert settings.listen.host == "127.0.0.2"
    assert settings.dry_run is True
    assert settings.okta_secret is not None
    assert settings.okta_secret.get_secret_value() == "hunter2-okta-secret-value"
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())


def test_command_line_overrides_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONDER_DRY_RUN", "false")
    assert load_settings(None, dry_run=True).dry_run is True


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("tok-123-admin-token-value\n")
    settings = load_settings(None, admin_token_file=secret)
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "tok-123-admin-token-value"


def test_typo_in_the_file_is_an_error_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "responder.yaml"
    config.write_text("listen:\n  prot: 9000\n")
    with pytest.raises(ConfigError, match=r"responder\.yaml:2:3: listen\.prot: Extra inputs"):
        load_settings(config)


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
