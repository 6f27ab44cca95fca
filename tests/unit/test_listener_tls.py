"""The listener's TLS settings and certificate loading, without a listener: what is accepted and refused."""

from __future__ import annotations

import json
import shutil
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from responder.config import ConfigError, load_settings
from responder.service.certificate import ListenerCertificate, ListenerTLSError, load_certificate, server_context
from responder.service.listener import only_this_host
from responder.telemetry.metrics import Metrics
from tests.support.tls import TestCA


@pytest.mark.parametrize(
    ("host", "only_here"),
    [("127.0.0.1", True), ("127.0.0.53", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("", False), ("192.0.2.10", False), ("responder.example.com", False)],
)  # fmt: skip
def test_only_loopback_addresses_count_as_this_host_only(host: str, only_here: bool) -> None:
    assert only_this_host(host) is only_here


def test_the_server_context_refuses_anything_below_tls_1_2_and_asks_no_client_certificate() -> None:
    context = server_context()
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_NONE
    assert context.options & ssl.OP_NO_COMPRESSION


@pytest.mark.parametrize("only", ["tls_cert", "tls_key"])
def test_a_certificate_without_its_key_or_a_key_without_its_certificate_is_a_config_error(
    tmp_path: Path, only: str
) -> None:
    config = tmp_path / "responder.yaml"
    config.write_text(json.dumps({"listen": {only: "/etc/responder/tls/x.pem"}}))
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    other = "tls_key" if only == "tls_cert" else "tls_cert"
    assert error.value.problems == [
        f"{config}:1:2: listen: {only} is set without {other}: set both (the certificate and its key) or neither"
    ]


def test_a_group_readable_key_is_accepted_and_a_world_readable_one_refused(tmp_path: Path) -> None:
    issued = TestCA(tmp_path).issue("listener")
    issued.key.chmod(0o640)  # Debian's ssl-cert group, an ACME deploy hook's chgrp
    loaded = load_certificate(issued.cert, issued.key)
    assert loaded.subject == "CN=listener"
    issued.key.chmod(0o604)
    with pytest.raises(ListenerTLSError, match=r"is readable by every user \(mode 0604\)"):
        load_certificate(issued.cert, issued.key)


def test_an_encrypted_key_is_refused_with_what_to_do(tmp_path: Path) -> None:
    issued = TestCA(tmp_path).issue("listener")
    key = serialization.load_pem_private_key(issued.key.read_bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    issued.key.write_bytes(encrypted)
    with pytest.raises(ListenerTLSError, match="the key is encrypted; give it unencrypted"):
        load_certificate(issued.cert, issued.key)


class _RefusingJournal:
    async def audit(self, *_: object) -> None:
        raise OSError("disk full")


async def test_a_reload_the_journal_cannot_record_still_serves_the_new_certificate_and_an_expired_one_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = TestCA(tmp_path)
    first = ca.issue("first")
    later = datetime.now(UTC) + timedelta(days=2)  # past the test certificates' one day
    certificate = ListenerCertificate(
        first.cert, first.key, load_certificate(first.cert, first.key),
        journal=_RefusingJournal(), metrics=Metrics(), clock=lambda: later,  # type: ignore[arg-type]
    )  # fmt: skip
    assert "the listener certificate CN=first" in caplog.text and "has expired" in caplog.text
    renewed = ca.issue("renewed")
    shutil.copyfile(renewed.cert, first.cert)
    shutil.copyfile(renewed.key, first.key)
    assert await certificate.reload("test") is True
    assert certificate.current.subject == "CN=renewed"
    assert "listener certificate reload applied, but the audit trail could not record it" in caplog.text
