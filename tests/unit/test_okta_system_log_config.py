"""`okta.system_log` in the configuration: its token, its URL, and the poller built from it."""

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from responder.config import ConfigError, load_settings
from responder.ingest.handoff import Waking
from responder.ingest.okta_auth import ServiceApp
from responder.policy.loader import load_rules
from responder.service.sources import okta_system_log
from responder.telemetry.metrics import Metrics

RULES = Path(__file__).resolve().parents[2] / "rules"


def _config(tmp_path: Path, org_url: str = "https://example.okta.com", extra: str = "") -> Path:
    config = tmp_path / "responder.yaml"
    config.write_text(f"okta:\n  system_log:\n    org_url: {org_url}\n{extra}")
    return config


def test_the_poller_needs_an_api_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set okta_api_token or okta_api_token_file"):
        load_settings(_config(tmp_path))


def test_the_token_comes_from_a_file_and_never_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "okta-api-token"
    token.write_text("00aSSWS-token-value-from-a-file\n")
    monkeypatch.setenv("RESPONDER_OKTA_API_TOKEN_FILE", str(token))
    settings = load_settings(_config(tmp_path, extra="    event_types: [user.lifecycle.deactivate]\n"))
    assert settings.okta_api_token is not None
    assert settings.okta_api_token.get_secret_value() == "00aSSWS-token-value-from-a-file"
    assert "token-value" not in repr(settings)
    assert settings.okta is not None and settings.okta.system_log is not None
    assert settings.okta.system_log.interval_s == 5 and settings.okta.system_log.page_limit == 1000


def test_a_short_token_is_refused_without_showing_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONDER_OKTA_API_TOKEN", "short1")
    with pytest.raises(ConfigError, match="okta_api_token is too short") as refused:
        load_settings(_config(tmp_path))
    assert "short1" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://example.okta.com", "must use https"),
        ("https://example.okta.com/api/v1/logs", "base URL"),
        ("ftp://example.okta.com", "base URL"),
    ],
)
def test_org_url_is_the_orgs_https_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, said: str) -> None:
    monkeypatch.setenv("RESPONDER_OKTA_API_TOKEN", "00a-okta-api-token-value")
    with pytest.raises(ConfigError, match=said):
        load_settings(_config(tmp_path, url))


def test_plain_http_to_loopback_is_allowed_for_tests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONDER_OKTA_API_TOKEN", "00a-okta-api-token-value")
    settings = load_settings(_config(tmp_path, "http://127.0.0.1:8080/", "    start: 2026-12-01T00:00:00\n"))
    assert settings.okta is not None and settings.okta.system_log is not None
    assert settings.okta.system_log.org_url == "http://127.0.0.1:8080"


def test_the_poller_reads_the_rules_types_and_the_configured_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESPONDER_OKTA_API_TOKEN", "00a-okta-api-token-value")
    settings = load_settings(_config(tmp_path, extra="    event_types: [user.lifecycle.deactivate]\n"))
    poller = okta_system_log(settings, load_rules([RULES]), Waking(None, None), None, Metrics())  # type: ignore[arg-type]
    assert poller is not None
    assert {"user.lifecycle.deactivate", "security.threat.detected"} <= poller.config.event_types
    assert poller.config.start is None and not poller.ready


def _pem(key_size: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


def test_a_service_app_needs_its_private_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set okta_private_key or okta_private_key_file"):
        load_settings(_config(tmp_path, extra="    client_id: 0oa-responder\n"))


def test_a_service_app_and_an_api_token_are_not_both_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONDER_OKTA_API_TOKEN", "00a-okta-api-token-value")
    monkeypatch.setenv("RESPONDER_OKTA_PRIVATE_KEY", _pem(2048))
    with pytest.raises(ConfigError, match="not both"):
        load_settings(_config(tmp_path, extra="    client_id: 0oa-responder\n"))


def test_a_weak_or_unreadable_private_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "okta.pem"
    key.write_text(_pem(1024))
    monkeypatch.setenv("RESPONDER_OKTA_PRIVATE_KEY_FILE", str(key))
    with pytest.raises(ConfigError, match="okta_private_key is too weak"):
        load_settings(_config(tmp_path, extra="    client_id: 0oa-responder\n"))
    key.write_text("not a key at all, but long enough")
    with pytest.raises(ConfigError, match="okta_private_key is not an unencrypted PEM private key") as refused:
        load_settings(_config(tmp_path, extra="    client_id: 0oa-responder\n"))
    assert "long enough" not in str(refused.value)


def test_a_service_app_builds_a_poller_with_its_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONDER_OKTA_PRIVATE_KEY", _pem(2048))
    settings = load_settings(_config(tmp_path, extra="    client_id: 0oa-responder\n"))
    poller = okta_system_log(settings, load_rules([RULES]), Waking(None, None), None, Metrics())  # type: ignore[arg-type]
    assert poller is not None and isinstance(poller.config.credentials, ServiceApp)
    assert poller.config.credentials.scopes == ("okta.logs.read",)
