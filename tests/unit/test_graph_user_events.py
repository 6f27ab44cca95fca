"""The pure parts of the Graph pull sources: what a user as Graph shows it means, which user a change
notification is about, Retry-After, the URLs the client may call, the settings, and a poller that
survives its journal failing."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from responder.config import ConfigError, load_settings
from responder.core.events import Severity
from responder.ingest.entra import ChangeNotification, event_hubs_event, identity_protection_event
from responder.ingest.entra_risk import RiskPoller, RiskPolling
from responder.ingest.graph_client import MAX_RETRY_AFTER_S, AppCredentials, GraphClient, check_url, retry_after
from responder.ingest.graph_subscriptions import changed_user, notification_key, user_event
from responder.telemetry.metrics import Metrics

AT = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
USER = "6e7b768e-07e2-4810-8459-485f84f8f204"


def test_an_account_disabled_is_a_high_severity_user_disabled_event_for_the_upn() -> None:
    user = {"id": USER, "accountEnabled": False, "userPrincipalName": "Alice@Example.com", "mail": None}
    event = user_event(USER, user, key="k1", at=AT)
    assert event is not None
    assert (event.type, event.severity, event.subjects.users) == (
        "user.disabled",
        Severity.HIGH,
        ("alice@example.com",),
    )
    assert event.dedup_key == f"entra:user:{USER}:user.disabled:k1"


def test_an_account_enabled_is_an_info_user_enabled_event() -> None:
    event = user_event(USER, {"accountEnabled": True, "mail": "bob@example.com"}, key="k", at=AT)
    assert event is not None and (event.type, event.severity) == ("user.enabled", Severity.INFO)


def test_a_deleted_user_is_named_without_the_prefix_graph_gives_a_soft_deleted_upn() -> None:
    deleted = {"userPrincipalName": USER.replace("-", "") + "carol@example.com"}
    event = user_event(USER, None, key="k", at=AT, upn=deleted["userPrincipalName"])
    assert event is not None
    assert (event.type, event.severity, event.subjects.users) == ("user.deleted", Severity.HIGH, ("carol@example.com",))


def test_a_user_object_without_account_enabled_says_nothing() -> None:
    assert user_event(USER, {"userPrincipalName": "a@example.com"}, key="k", at=AT) is None


def test_the_user_of_a_change_notification_comes_from_its_resource_data_or_its_resource() -> None:
    with_data = ChangeNotification.model_validate(
        {"subscriptionId": "s", "changeType": "updated", "resource": f"Users/{USER}", "resourceData": {"id": USER}}
    )
    bare = ChangeNotification.model_validate(
        {"subscriptionId": "s", "changeType": "updated", "resource": f"users/{USER}"}
    )
    group = ChangeNotification.model_validate({"subscriptionId": "s", "changeType": "updated", "resource": "Groups/g1"})
    assert changed_user(with_data) == changed_user(bare) == USER
    assert changed_user(group) is None


def test_a_notification_resent_by_graph_has_the_same_key_whatever_its_client_state() -> None:
    record = {"subscriptionId": "s", "changeType": "updated", "resource": f"Users/{USER}"}
    first = ChangeNotification.model_validate(record | {"clientState": "a"})
    again = ChangeNotification.model_validate(record | {"clientState": "b"})
    other = ChangeNotification.model_validate(record | {"changeType": "deleted"})
    assert notification_key(first) == notification_key(again) != notification_key(other)


@pytest.mark.parametrize(
    ("header", "seconds"), [("7", 7.0), ("0", 0.0), ("-3", 0.0), ("86400", MAX_RETRY_AFTER_S), ("soon", 30.0)]
)
def test_retry_after_is_read_in_seconds_and_bounded(header: str, seconds: float) -> None:
    assert retry_after({"Retry-After": header}) == seconds


def test_graph_is_called_over_https_or_plain_http_only_on_loopback() -> None:
    assert check_url("https://graph.microsoft.com/v1.0/", "graph_url") == "https://graph.microsoft.com/v1.0"
    assert check_url("http://127.0.0.1:8080/v1.0", "graph_url") == "http://127.0.0.1:8080/v1.0"
    with pytest.raises(ValueError, match="https"):
        check_url("http://graph.example/v1.0", "graph_url")


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


ENTRA = """\
entra_client_state: a-client-state-long-enough
entra:
  tenant_id: contoso.onmicrosoft.com
  client_id: 00000000-0000-0000-0000-000000000001
  risk_polling: {interval_s: 30}
"""


def test_a_pull_source_without_a_client_secret_is_refused_naming_both_ways_to_give_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="entra_client_secret or entra_client_secret_file"):
        load_settings(_config(tmp_path, ENTRA))


def test_the_client_secret_is_read_from_a_file_and_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("a-long-enough-entra-client-secret\n")
    settings = load_settings(_config(tmp_path, ENTRA + f"entra_client_secret_file: {secret}\n"))
    assert settings.entra_client_secret is not None
    assert settings.entra_client_secret.get_secret_value() == "a-long-enough-entra-client-secret"
    assert "a-long-enough" not in repr(settings)


def test_a_notification_url_in_clear_to_another_host_is_refused(tmp_path: Path) -> None:
    text = ENTRA + (
        "entra_client_secret: a-long-enough-entra-client-secret\n"
        "entra:\n  tenant_id: t\n  client_id: c\n"
        "  subscriptions: {notification_url: 'http://responder.example/hooks/entra',"
        " lifecycle_notification_url: 'https://responder.example/hooks/entra/lifecycle'}\n"
    )
    text = text.replace(ENTRA, "entra_client_state: a-client-state-long-enough\n")
    with pytest.raises(ConfigError, match="notification URL must be an https"):
        load_settings(_config(tmp_path, text))


def test_a_detection_polled_from_graph_is_the_same_event_as_through_event_hubs() -> None:
    detection = {
        "id": "d1", "riskEventType": "leakedCredentials", "riskLevel": "high", "riskState": "atRisk",
        "userPrincipalName": "alice@example.com", "detectedDateTime": "2026-12-03T11:00:00Z",
        "lastUpdatedDateTime": "2026-12-03T11:05:00Z",
    }  # fmt: skip
    polled = identity_protection_event(detection, kind="riskDetection")
    hubs = event_hubs_event({"category": "UserRiskEvents", "time": "2026-12-03T11:06:00Z", "properties": detection})
    assert polled == hubs


class _BrokenJournal:
    async def source_state(self, source: str) -> None:
        raise RuntimeError("database is locked")


async def test_a_journal_failure_is_counted_and_waited_out_never_the_end_of_the_service() -> None:
    client = GraphClient(AppCredentials("t", "c", SecretStr("s" * 20)), graph_url="https://graph.example/v1.0",
                         now=lambda: AT)  # fmt: skip
    metrics = Metrics()
    poller = RiskPoller(
        client, _BrokenJournal(), handoff=None, metrics=metrics,  # type: ignore[arg-type]
        settings=RiskPolling(interval_s=0.01, max_backoff_s=0.02), now=lambda: AT,
    )  # fmt: skip
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(0.2)
    assert not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await client.close()
    assert poller.status() == {"ready": False, "detail": "RuntimeError: database is locked"}
    errors = metrics.registry.get_sample_value(
        "responder_source_errors_total", {"source": "entra.risk", "kind": "internal"}
    )
    assert errors is not None and errors >= 2


def test_a_secret_file_left_for_config_check_to_read_counts_as_given(tmp_path: Path) -> None:
    text = ENTRA + f"entra_client_secret_file: {tmp_path}/not-there-yet\n"
    settings = load_settings(_config(tmp_path, text), defer_secret_files=True)
    assert settings.entra is not None and settings.entra_client_secret is None
