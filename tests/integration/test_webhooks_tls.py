"""Webhooks over TLS, terminated by the service itself: a real `responder run` with `listen.tls_cert` and
`listen.tls_key` from a throwaway CA, reached by real TLS clients (aiohttp, the stdlib's ssl, `openssl
s_client`). An Okta hook and its verification challenge are answered over HTTPS; plain HTTP, a client that
does not trust the CA and a name the certificate does not carry all fail; a certificate replaced on disk is
served from the next connection after SIGHUP while the listener keeps answering, and a broken replacement
leaves the old one serving."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from responder.config import Settings
from responder.journal import open_journal
from tests.support.process import ServiceProcess, free_port
from tests.support.service import no_hubs, running
from tests.support.tls import Issued, TestCA

OKTA_SECRET = "Basic b2t0YTpzZWNyZXQtdmFsdWU="
TOKEN = "admin-token-for-tls-tests"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
RULES = Path(__file__).resolve().parents[2] / "rules"


@dataclass
class Listener:
    service: ServiceProcess
    ca: TestCA
    served: Issued  # the paths the configuration names
    port: int
    trusting: ssl.SSLContext  # a client context that trusts the test CA

    @property
    def localhost(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def loopback(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def _install(issued: Issued, served: Issued) -> None:
    """Put a certificate and key where the configuration points, each file replaced by a rename, as ACME
    clients do (a reader never sees half a file)."""
    for source, target in ((issued.cert, served.cert), (issued.key, served.key)):
        staged = target.with_suffix(".new")
        shutil.copyfile(source, staged)
        staged.chmod(0o600)
        staged.replace(target)


@pytest.fixture
async def listener(tmp_path: Path) -> AsyncIterator[Listener]:
    ca = TestCA(tmp_path, "webhooks")
    served = Issued(tmp_path / "served" / "fullchain.pem", tmp_path / "served" / "privkey.pem")
    served.cert.parent.mkdir()
    _install(ca.issue("first"), served)
    port = free_port()
    config = tmp_path / "responder.yaml"
    settings = {
        "listen": {
            "host": "127.0.0.1", "port": port, "tls_cert": str(served.cert), "tls_key": str(served.key),
            "idle_timeout_s": 2,
        },
        "journal": f"sqlite:///{tmp_path}/journal.db", "rules": [str(RULES)], "inventory": str(no_hubs(tmp_path)),
        "okta_secret": OKTA_SECRET, "admin_token": TOKEN, "instance": "tls",
    }  # fmt: skip
    config.write_text(json.dumps(settings))  # JSON is YAML
    trusting = ssl.create_default_context(cafile=str(ca.cafile))
    service = ServiceProcess(config, tmp_path / "service.log", f"https://localhost:{port}", tls=trusting)
    await service.start()
    try:
        yield Listener(service, ca, served, port, trusting)
    finally:
        await service.stop()


def _okta_event_hook() -> bytes:
    party = {"id": "00u1", "type": "User", "alternateId": "alice@example.com"}
    event = {
        "uuid": uuid.uuid4().hex, "published": datetime.now(UTC).isoformat(), "severity": "WARN",
        "eventType": "user.account.report_suspicious_activity_by_enduser", "actor": party, "target": [party],
    }  # fmt: skip
    return json.dumps({"eventId": uuid.uuid4().hex, "data": {"events": [event]}}).encode()


async def _served_serial(port: int, trusting: ssl.SSLContext) -> int:
    """The serial of the certificate a new TLS connection is given (verified against the test CA)."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trusting, server_hostname="localhost")
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()
        await writer.wait_closed()


def _serial(issued: Issued) -> int:
    return x509.load_pem_x509_certificate(issued.cert.read_bytes()).serial_number


async def _metric(http: aiohttp.ClientSession, listener: Listener, line: str) -> float:
    async with http.get(f"{listener.loopback}/metrics", headers=ADMIN, ssl=listener.trusting) as r:
        assert r.status == 200
        text = await r.text()
    values = [float(x.removeprefix(line).strip()) for x in text.splitlines() if x.startswith(line + " ")]
    return values[0] if values else 0.0


async def test_a_tls_client_gets_the_okta_challenge_answered_and_a_signed_hook_accepted(listener: Listener) -> None:
    async with aiohttp.ClientSession() as http:
        for base in (listener.localhost, listener.loopback):  # both names the certificate carries (SAN)
            challenge = {"X-Okta-Verification-Challenge": "challenge-1", "Authorization": OKTA_SECRET}
            async with http.get(f"{base}/hooks/okta", headers=challenge, ssl=listener.trusting) as r:
                assert r.status == 200
                assert await r.json() == {"verification": "challenge-1"}
            async with http.post(
                f"{base}/hooks/okta", data=_okta_event_hook(), ssl=listener.trusting,
                headers={"Authorization": OKTA_SECRET, "Content-Type": "application/json"},
            ) as r:  # fmt: skip
                assert r.status == 200, await r.text()
            async with http.post(
                f"{base}/hooks/okta", data=_okta_event_hook(), ssl=listener.trusting,
                headers={"Authorization": "Basic d3Jvbmc6c2VjcmV0LXZhbHVl", "Content-Type": "application/json"},
            ) as r:  # fmt: skip
                assert r.status == 401  # TLS carries the secret; it does not replace it


async def test_the_stdlib_ssl_client_verifies_the_name_and_speaks_tls_1_2_or_later(listener: Listener) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", listener.port, ssl=listener.trusting, server_hostname="localhost"
    )
    try:
        ssl_object: ssl.SSLObject = writer.get_extra_info("ssl_object")
        assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
        writer.write(
            b"GET /hooks/okta HTTP/1.1\r\nHost: localhost\r\nX-Okta-Verification-Challenge: raw-2\r\n"
            b"Authorization: " + OKTA_SECRET.encode() + b"\r\nConnection: close\r\n\r\n"
        )
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b'{"verification": "raw-2"}')


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_tls_1_2_is_served_and_tls_1_1_refused(listener: Listener) -> None:
    def client(version: ssl.TLSVersion) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(listener.ca.cafile)
        context.minimum_version = context.maximum_version = version
        context.set_ciphers("ALL:@SECLEVEL=0")  # so a refusal is the server's, not this client's own policy
        return context

    _, writer = await asyncio.open_connection(
        "127.0.0.1", listener.port, ssl=client(ssl.TLSVersion.TLSv1_2), server_hostname="localhost"
    )
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    writer.close()
    # The server closes on the TLS 1.1 hello (a refusal by this client itself would be NO_PROTOCOLS_AVAILABLE).
    with pytest.raises((ConnectionResetError, ssl.SSLError)) as refused:
        await asyncio.open_connection(
            "127.0.0.1", listener.port, ssl=client(ssl.TLSVersion.TLSv1_1), server_hostname="localhost"
        )
    assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value)


async def test_openssl_s_client_verifies_the_chain_and_the_hostname(listener: Listener) -> None:
    def s_client(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{listener.port}", "-servername", name,
             "-CAfile", str(listener.ca.cafile), "-verify_hostname", name, "-verify_return_error", "-brief"],
            input="", capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip

    good = await asyncio.to_thread(s_client, "localhost")
    assert good.returncode == 0, good.stderr
    assert "Verification: OK" in good.stderr
    wrong = await asyncio.to_thread(s_client, "webhooks.example.com")
    assert wrong.returncode != 0
    assert "hostname mismatch" in (wrong.stderr + wrong.stdout)


async def test_plain_http_an_untrusting_client_and_a_wrong_name_all_fail_and_cost_no_connection_slot(
    listener: Listener,
) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port: no answer in clear
            async with http.get(f"http://127.0.0.1:{listener.port}/healthz") as r:
                await r.read()
        with pytest.raises(aiohttp.ClientConnectorCertificateError):  # the system's CAs do not know the test CA
            async with http.get(f"{listener.localhost}/healthz", ssl=ssl.create_default_context()) as r:
                await r.read()
    with pytest.raises(ssl.SSLCertVerificationError, match=r"Hostname mismatch|doesn't match"):
        await asyncio.open_connection(
            "127.0.0.1", listener.port, ssl=listener.trusting, server_hostname="webhooks.example.com"
        )
    # A failed handshake gives its connection slot back (asyncio's own TLS server would not).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        for _ in range(100):
            if await _metric(http, listener, "responder_connections_open") == 1:  # only this request
                break
            await asyncio.sleep(0.05)
        assert await _metric(http, listener, "responder_connections_open") == 1


async def test_a_connection_that_never_starts_its_handshake_is_closed_after_the_idle_timeout(
    listener: Listener,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)  # TCP only, no ClientHello
    try:
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the listener, nothing said
        assert 1.5 < asyncio.get_running_loop().time() - started < 6  # listen.idle_timeout_s: 2
    finally:
        writer.close()


async def test_sighup_serves_a_renewed_certificate_without_a_pause_and_a_broken_one_keeps_the_old(
    listener: Listener, tmp_path: Path
) -> None:
    assert listener.service.process is not None
    first = _serial(listener.served)
    assert await _served_serial(listener.port, listener.trusting) == first
    failures: list[BaseException] = []
    answered = 0
    stop = asyncio.Event()

    async def keep_asking() -> None:
        """A new connection every few milliseconds, all through the reloads: none may fail."""
        nonlocal answered
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:
            while not stop.is_set():
                try:
                    async with http.get(f"{listener.localhost}/healthz", ssl=listener.trusting) as r:
                        assert r.status == 200
                        answered += 1
                except (aiohttp.ClientError, AssertionError) as exc:
                    failures.append(exc)
                await asyncio.sleep(0.01)

    asker = asyncio.create_task(keep_asking())
    try:
        renewed = listener.ca.issue("renewed")
        _install(renewed, listener.served)
        listener.service.process.send_signal(signal.SIGHUP)
        for _ in range(200):
            if await _served_serial(listener.port, listener.trusting) == _serial(renewed):
                break
            await asyncio.sleep(0.05)
        assert await _served_serial(listener.port, listener.trusting) == _serial(renewed) != first
        async with aiohttp.ClientSession() as http:
            expiry = await _metric(http, listener, "responder_tls_certificate_expiry_timestamp_seconds")
        renewed_until = x509.load_pem_x509_certificate(renewed.cert.read_bytes()).not_valid_after_utc
        assert expiry == renewed_until.timestamp()

        # A broken renewal: the certificate of one key with the key of another.
        other = listener.ca.issue("other")
        shutil.copyfile(other.cert, listener.served.cert)
        listener.service.process.send_signal(signal.SIGHUP)
        async with aiohttp.ClientSession() as http:
            line = 'responder_tls_certificate_reloads_total{outcome="refused"}'
            for _ in range(200):
                if await _metric(http, listener, line) == 1:
                    break
                await asyncio.sleep(0.05)
            assert await _metric(http, listener, line) == 1
        assert await _served_serial(listener.port, listener.trusting) == _serial(renewed)
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.wait_for(asker, 10)
    assert failures == []
    assert answered > 10
    await listener.service.stop()
    log = listener.service.log.read_text()
    assert "listener certificate reloaded: now CN=renewed" in log
    assert f"listener certificate reload refused, still serving CN=renewed, serial {_serial(renewed):x}" in log
    assert f"listen.tls_key {listener.served.key} is not the key of the certificate" in log
    journal = await open_journal(f"sqlite:///{tmp_path}/journal.db")
    try:
        trail = await journal.audit_trail("listener")
    finally:
        await journal.close()
    assert [(a.actor, a.kind, json.loads(a.detail)["outcome"]) for a in trail] == [
        ("signal", "tls.reload", "applied"),
        ("signal", "tls.reload", "refused"),
    ]


def _run(tmp_path: Path, listen: dict[str, object]) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "responder.yaml"
    settings = {
        "listen": {"host": "127.0.0.1", "port": free_port(), **listen}, "journal": f"sqlite:///{tmp_path}/j.db",
        "rules": [str(RULES)], "inventory": str(no_hubs(tmp_path)),
    }  # fmt: skip
    config.write_text(json.dumps(settings))
    responder = str(Path(sys.executable).with_name("responder"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")}
    return subprocess.run(
        [responder, "run", "--config", str(config)], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def _broken_cases(tmp_path: Path) -> dict[str, tuple[dict[str, object], str]]:
    ca = TestCA(tmp_path, "broken")
    good, other = ca.issue("good"), ca.issue("other")
    readable = tmp_path / "readable-key.pem"
    shutil.copyfile(good.key, readable)
    readable.chmod(0o644)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    garbage.chmod(0o600)
    missing = tmp_path / "missing.pem"
    return {
        "cert without key": ({"tls_cert": str(good.cert)}, "listen: tls_cert is set without tls_key"),
        "missing cert": (
            {"tls_cert": str(missing), "tls_key": str(good.key)},
            f"listen.tls_cert {missing}: cannot read: No such file or directory",
        ),
        "not a certificate": (
            {"tls_cert": str(garbage), "tls_key": str(good.key)},
            f"listen.tls_cert {garbage}: no PEM certificate in it",
        ),
        "not a key": ({"tls_cert": str(good.cert), "tls_key": str(garbage)}, f"listen.tls_key {garbage}: no usable"),
        "key of another certificate": (
            {"tls_cert": str(good.cert), "tls_key": str(other.key)},
            f"listen.tls_key {other.key} is not the key of the certificate in listen.tls_cert {good.cert}",
        ),
        "world-readable key": (
            {"tls_cert": str(good.cert), "tls_key": str(readable)},
            f"listen.tls_key {readable} is readable by every user (mode 0644)",
        ),
    }


def test_an_unusable_certificate_or_key_stops_the_start_with_one_line_naming_the_file(tmp_path: Path) -> None:
    for case, (listen, expected) in _broken_cases(tmp_path).items():
        result = _run(tmp_path, listen)
        assert result.returncode == 2, (case, result.stderr[-2000:])
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and expected in errors[0], (case, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, case


def test_plain_http_on_an_address_beyond_this_host_warns_that_a_proxy_must_terminate_tls(tmp_path: Path) -> None:
    """On 0.0.0.0 inside a network namespace of its own (empty: nothing reaches it, and the machine's own
    namespace is left alone)."""
    config = tmp_path / "responder.yaml"
    settings = {
        "listen": {"host": "0.0.0.0", "port": 8080}, "journal": f"sqlite:///{tmp_path}/j.db",
        "rules": [str(RULES)], "inventory": str(no_hubs(tmp_path)),
    }  # fmt: skip
    config.write_text(json.dumps(settings))
    responder = str(Path(sys.executable).with_name("responder"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")}
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["unshare", "--net", responder, "run", "--config", str(config)], stdout=out, stderr=out, env=env
        )
    try:
        for _ in range(300):
            if "listening on" in log.read_text() or process.poll() is not None:
                break
            time.sleep(0.05)
        text = log.read_text()
        assert "listening on http://0.0.0.0:8080" in text, text[-2000:]
        warnings = [line for line in text.splitlines() if "served in clear" in line]
        assert len(warnings) == 1, text[-2000:]
        assert "Okta and Microsoft Graph deliver only to https://" in warnings[0]
        assert "a reverse proxy must terminate TLS" in warnings[0]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


async def test_over_the_connection_cap_a_tls_connection_is_closed_at_once_and_served_again_after(
    tmp_path: Path,
) -> None:
    """In process (`running`, the replay's way to start the service), with the cap at 2."""
    ca = TestCA(tmp_path, "cap")
    issued = ca.issue("listener")
    settings = Settings(
        listen={"tls_cert": issued.cert, "tls_key": issued.key, "max_connections": 2, "idle_timeout_s": 5},
        journal=f"sqlite:///{tmp_path}/journal.db", rules=[RULES], inventory=no_hubs(tmp_path), admin_token=TOKEN,
    )  # fmt: skip
    trusting = ssl.create_default_context(cafile=str(ca.cafile))
    async with running(settings) as (service, base):
        assert base.startswith("https://127.0.0.1:")
        port = int(base.rsplit(":", 1)[1])
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]  # no handshake: slots held
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 2) == b""  # the third: closed at once, nothing in clear
        writer.close()
        for _, held_writer in held:
            held_writer.close()
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                if service.metrics.registry.get_sample_value("responder_connections_open") == 0:  # given back
                    break
                await asyncio.sleep(0.05)
            assert service.metrics.registry.get_sample_value("responder_connections_open") == 0
            async with http.get(f"{base}/metrics", headers=ADMIN, ssl=trusting) as r:
                assert r.status == 200
                assert "responder_connections_refused_total 1.0" in await r.text()
