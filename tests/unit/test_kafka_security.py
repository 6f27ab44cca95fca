"""The Kafka security settings: validated once at the edge, and one verifying SSL context built from them."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from responder.config import ConfigError, load_settings
from responder.service.sources import KafkaTLSError, client_options, kafka_ssl_context
from tests.support.tls import TestCA


def _kafka(tmp_path: Path, **kafka: Any) -> dict[str, Any]:
    return {"kafka": {"bootstrap_servers": "kafka.example:9093", **kafka}, "journal": f"sqlite:///{tmp_path}/j.db"}


def test_an_unknown_security_protocol_is_refused_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**_kafka(tmp_path, security_protocol="TLS"))
    assert "kafka.security_protocol" in str(caught.value)


@pytest.mark.parametrize(
    ("kafka", "expected"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism and sasl_username"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-1", "sasl_username": "u"}, "sasl_mechanism"),
        ({"security_protocol": "PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "u"}, "use SASL_SSL"),
        ({"security_protocol": "SSL", "ssl_certfile": "CERT"}, "set ssl_certfile and ssl_keyfile together"),
        ({"ssl_cafile": "CA"}, "security_protocol is PLAINTEXT"),
        ({"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"}, "kafka.ssl_cafile"),
    ],
)
def test_inconsistent_security_settings_are_refused(tmp_path: Path, kafka: dict[str, Any], expected: str) -> None:
    ca = TestCA(tmp_path)
    issued = ca.issue("client")
    paths = {"CA": str(ca.cafile), "CERT": str(issued.cert)}
    kafka = {k: paths.get(v, v) for k, v in kafka.items()}
    with pytest.raises(ConfigError) as caught:
        load_settings(**_kafka(tmp_path, **kafka))
    assert expected in str(caught.value)


def test_sasl_without_a_password_is_refused(tmp_path: Path) -> None:
    kafka = {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "$ConnectionString"}
    with pytest.raises(ConfigError, match="set kafka_password or kafka_password_file"):
        load_settings(**_kafka(tmp_path, **kafka))


def test_event_hubs_settings_give_a_verifying_context_and_plain_credentials(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    secret = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=s3cr3t"
    settings = load_settings(
        **_kafka(
            tmp_path, security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="$ConnectionString",
            ssl_cafile=str(ca.cafile),
        ),
        kafka_password=secret,
    )  # fmt: skip
    options = client_options(settings)
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert options["sasl_mechanism"] == "PLAIN" and options["sasl_plain_username"] == "$ConnectionString"
    assert options["sasl_plain_password"] == secret
    assert secret not in repr(settings)


def test_turning_off_the_name_check_still_verifies_the_ca(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    settings = load_settings(
        **_kafka(tmp_path, security_protocol="SSL", ssl_check_hostname=False, ssl_cafile=str(ca.cafile))
    )
    assert settings.kafka is not None
    context = kafka_ssl_context(settings.kafka)
    assert context.verify_mode == ssl.CERT_REQUIRED and not context.check_hostname


def test_a_client_certificate_is_loaded_and_a_bad_one_named(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    client = ca.issue("client")
    kafka = {"security_protocol": "SSL", "ssl_cafile": str(ca.cafile)}
    good = load_settings(**_kafka(tmp_path, **kafka, ssl_certfile=str(client.cert), ssl_keyfile=str(client.key)))
    assert good.kafka is not None
    kafka_ssl_context(good.kafka)
    other = ca.issue("other")
    mismatched = load_settings(**_kafka(tmp_path, **kafka, ssl_certfile=str(client.cert), ssl_keyfile=str(other.key)))
    assert mismatched.kafka is not None
    with pytest.raises(KafkaTLSError, match=r"kafka\.ssl_certfile .*client\.pem"):
        kafka_ssl_context(mismatched.kafka)


def test_a_file_that_is_no_certificate_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    settings = load_settings(**_kafka(tmp_path, security_protocol="SSL", ssl_cafile=str(bogus)))
    assert settings.kafka is not None
    with pytest.raises(KafkaTLSError, match=r"kafka\.ssl_cafile .*ca\.pem"):
        kafka_ssl_context(settings.kafka)
