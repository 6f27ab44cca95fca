"""The listener's TLS certificate: loaded from `listen.tls_cert` and `listen.tls_key`, checked, and replaced
on SIGHUP without closing the listener (ACME renewals rewrite the files; the service is told to reload).

Each load builds a new server context from the files and checks it whole before anything changes; only a
context that loaded is swapped in, and each new connection takes the context current when it is accepted
(responder/service/listener.py). Loading into the live context instead is not safe: when `load_cert_chain`
meets a key that does not match, OpenSSL has already taken the new certificate and dropped the old key,
and every handshake after fails. A refused reload leaves the old certificate serving and says why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from responder.journal import Journal
from responder.service.signalled import SignalledReloads
from responder.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


class ListenerTLSError(ValueError):
    """The listener's certificate or key cannot be used: which file, and why, in one line."""


@dataclass(frozen=True, slots=True)
class Certificate:
    """What was loaded: the context new connections get, and the leaf certificate's particulars."""

    context: ssl.SSLContext
    subject: str
    serial: int
    not_after: datetime

    def describe(self) -> str:
        return f"{self.subject}, serial {self.serial:x}, valid until {self.not_after:%Y-%m-%d %H:%M} UTC"


def server_context() -> ssl.SSLContext:
    """The stdlib's server defaults (forward-secret AEAD ciphers, no compression, no renegotiation) with
    TLS 1.2 as the floor whatever the system's OpenSSL configuration allows."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE  # webhook senders authenticate by their secret, not a certificate
    return context


def load_certificate(cert: Path, key: Path) -> Certificate:
    """A server context holding `cert` (the chain, leaf first, PEM) and `key` (PEM, not encrypted).
    Raises ListenerTLSError naming the file at fault."""
    leaf = _leaf(cert)
    private = _private_key(key)
    if private.public_key().public_bytes(*_SPKI) != leaf.public_key().public_bytes(*_SPKI):
        raise ListenerTLSError(f"listen.tls_key {key} is not the key of the certificate in listen.tls_cert {cert}")
    context = server_context()
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:  # the files changed since they were read, or OpenSSL refuses them
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise ListenerTLSError(f"listen.tls_cert {cert} / listen.tls_key {key}: {reason}") from None
    return Certificate(context, leaf.subject.rfc4514_string(), leaf.serial_number, leaf.not_valid_after_utc)


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _read(path: Path, field: str) -> tuple[bytes, int]:
    """The file's bytes and its mode, from one open file (the mode of what was read, not of a later one)."""
    try:
        with path.open("rb") as file:
            return file.read(), os.fstat(file.fileno()).st_mode
    except OSError as exc:
        raise ListenerTLSError(f"{field} {path}: cannot read: {exc.strerror}") from None


def _leaf(path: Path) -> x509.Certificate:
    data, _ = _read(path, "listen.tls_cert")
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ListenerTLSError(
            f"listen.tls_cert {path}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)"
        ) from None
    return chain[0]


def _private_key(path: Path) -> PrivateKeyTypes:
    data, mode = _read(path, "listen.tls_key")
    # Every local user could take the key and impersonate this listener. Group-readable stays allowed:
    # Debian's ssl-cert group and ACME deploy hooks hand keys to services that way (0640).
    if mode & stat.S_IROTH:
        raise ListenerTLSError(
            f"listen.tls_key {path} is readable by every user (mode {stat.S_IMODE(mode):04o}): "
            "chmod 600 it, or 640 with a group the service is in"
        )
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ListenerTLSError(f"listen.tls_key {path}: the key is encrypted; give it unencrypted (mode 600)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ListenerTLSError(
            f"listen.tls_key {path}: no usable PEM private key in it (expected -----BEGIN PRIVATE KEY-----)"
        ) from None


class ListenerCertificate:
    """Owns the listener's certificate: `current` is what a new connection gets; `reload` replaces it from
    the same files when they load, and otherwise keeps it. Every reload is logged, counted and audited."""

    def __init__(
        self,
        cert: Path,
        key: Path,
        first: Certificate,
        *,
        journal: Journal,
        metrics: Metrics,
        clock: Callable[[], datetime],
    ) -> None:
        self.cert, self.key, self.current = cert, key, first
        self._journal, self._metrics, self._clock = journal, metrics, clock
        self._serving(first)
        self._lock = asyncio.Lock()  # one reload at a time
        self._signalled = SignalledReloads(
            self.reload, "listener certificate reload failed; the certificate being served stays", log
        )

    def context(self) -> ssl.SSLContext:
        return self.current.context

    def request(self) -> None:
        """Ask for a reload by the signal (safe from a signal handler); `run` carries it out."""
        self._signalled.request()

    async def run(self, stop: asyncio.Event) -> None:
        """Carry out requested reloads until `stop`."""
        await self._signalled.run(stop)

    async def reload(self, actor: str) -> bool:
        """Load the files again; serve them from the next connection on if they load. Never raises
        ListenerTLSError: a refusal is logged, counted and audited, and the old certificate stays."""
        async with self._lock:
            detail: dict[str, object] = {"cert": str(self.cert), "key": str(self.key)}
            try:
                loaded = await asyncio.to_thread(load_certificate, self.cert, self.key)
            except ListenerTLSError as exc:
                log.warning("listener certificate reload refused, still serving %s: %s", self.current.describe(), exc)
                detail |= {"outcome": "refused", "error": str(exc), "serving": self.current.describe()}
            else:
                previous, self.current = self.current, loaded
                log.info("listener certificate reloaded: now %s (was serial %x)", loaded.describe(), previous.serial)
                self._serving(loaded)
                detail |= {"outcome": "applied", "serving": loaded.describe()}
            outcome = str(detail["outcome"])
            self._metrics.tls_certificate_reloads.labels(outcome=outcome).inc()
            try:
                await self._journal.audit(self._clock().isoformat(), actor, "tls.reload", "listener", detail)
            except Exception:
                # The reload itself stands (the new certificate is served, or the old one still is).
                log.exception("listener certificate reload %s, but the audit trail could not record it", outcome)
            return outcome == "applied"

    def _serving(self, certificate: Certificate) -> None:
        self._metrics.tls_certificate_expiry.set(certificate.not_after.timestamp())
        if certificate.not_after <= self._clock():
            log.warning(
                "the listener certificate %s has expired: Okta and Microsoft Graph refuse it; renew it and "
                "`systemctl reload responder`", certificate.describe(),
            )  # fmt: skip
