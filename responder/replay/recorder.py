"""Record mode: every accepted delivery written into an incident case draft, secrets redacted.

The webhook routes and the Kafka consumer call `Recorder.delivery(via, headers, body)` after a delivery
was handed off. The draft (one YAML file per recording session, rewritten after each delivery) holds the
deliveries with their offsets from the first one and an empty `expect:` to fill in. Redaction:
authentication headers become `<redacted>` (replay puts its own secret there), Entra `clientState`
likewise, cookies and unknown credential-like headers are dropped, and a Shared Signals SET is stored as
its claims (replay signs them again with a key of its own: the transmitter's signature cannot be kept).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import yaml

from responder.ingest.entra import redact_client_state
from responder.replay.case import REDACTED, VIA, format_offset
from responder.replay.report import CaseReport

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]

# Headers a replay needs or a reader wants; anything else is dropped (hop-by-hop, cookies, proxies...).
KEPT = ("content-type", "user-agent", "x-okta-request-id", "traceparent", "tracestate")
# Headers that authenticate the sender: kept as a placeholder so the draft says one was sent.
SECRET = ("authorization", "x-api-key", "x-okta-verification-challenge")
_SECRETISH = re.compile(r"secret|token|signature|password|auth|cookie|key", re.IGNORECASE)


def _now() -> datetime:
    return datetime.now(UTC)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        if low in SECRET:
            out[low] = REDACTED
        elif low in KEPT and not _SECRETISH.search(low):
            out[low] = value
    return out


def _ssf_claims(token: bytes) -> Any:
    """The SET's claims, unverified: the service verified them before the recorder saw them."""
    try:
        return jwt.api_jws.PyJWS().decode(token.decode("ascii").strip(), options={"verify_signature": False})
    except (jwt.PyJWTError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a compact JWS: {exc}") from None


def draft_body(via: str, body: bytes) -> Any:
    """What the draft stores as `body`: the JSON document (Entra's clientState redacted), an SSF SET's
    claims, or the text itself when it is not JSON."""
    if via == "ssf":
        return json.loads(_ssf_claims(body))
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body.decode("utf-8", "replace")
    return redact_client_state(doc) if via.startswith("entra") else doc


class Recorder:
    """Appends accepted deliveries to a case draft in `directory` (thread- and task-safe, never raises)."""

    def __init__(self, directory: Path, *, name: str | None = None, clock: Clock = _now) -> None:
        self.directory = directory
        self._clock = clock
        self._lock = threading.Lock()
        self._first: datetime | None = None
        self._deliveries: list[dict[str, Any]] = []
        stamp = clock().strftime("%Y%m%dT%H%M%SZ")
        self.name = name or f"recorded-{stamp}"
        self.path = directory / f"{self.name}.yaml"

    def delivery(
        self,
        via: str,
        headers: Mapping[str, str],
        body: bytes,
        at: datetime | None = None,
        *,
        key: bytes | str | None = None,
    ) -> Path | None:
        """Record one accepted delivery; returns the draft's path (None if it could not be written)."""
        try:
            return self._record(via, headers, body, at or self._clock(), key)
        except Exception:
            log.exception("recorder: delivery via %s not recorded", via)
            return None

    def _record(self, via: str, headers: Mapping[str, str], body: bytes, at: datetime, key: bytes | str | None) -> Path:
        if not VIA.fullmatch(via):
            raise ValueError(f"via {via!r} is not one of okta, entra, entra-lifecycle, ssf, kafka:<format>")
        entry: dict[str, Any] = {}
        with self._lock:
            if self._first is None:
                self._first = at
            entry["at"] = format_offset(max(0.0, (at - self._first).total_seconds()))
            entry["via"] = via
            kept = redact_headers(headers)
            if via == "ssf":
                kept.pop("content-type", None)  # replay sets it, the body is no longer a JWS
            if kept:
                entry["headers"] = kept
            if via.startswith("kafka:") and key is not None:
                entry["key"] = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
            entry["body"] = draft_body(via, body)
            self._deliveries.append(entry)
            self._write()
        return self.path

    def draft(self) -> dict[str, Any]:
        since = self._first.isoformat() if self._first else "?"
        return {
            "name": self.name,
            "description": f"Recorded by `responder run --record` from {since}; trim it and fill in `expect`.",
            "deliveries": list(self._deliveries),
            "expect": {"decisions": [], "untouched": [], "reachability": []},
        }

    def _write(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(self.draft(), sort_keys=False, allow_unicode=True, width=120)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{self.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            Path(tmp).replace(self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def expectations_from(report: CaseReport) -> dict[str, Any]:
    """An `expect:` block that says what a run did: its decisions (with state, approval and actions) and
    the actions it enforced. For drafts: run once, look the result over, keep it as the expectation."""
    expect: dict[str, Any] = {
        "decisions": [
            {"subject": d.subject, "response": d.response}
            | ({"state": d.state} if report.mode == "lab" else {})
            | {"approval": d.approval, "actions": sorted(d.actions)}
            for d in report.decisions
        ]
    }
    if report.mode == "lab":
        expect["enforced"] = list(report.enforced)
    return expect


def fill_expectations(case_file: Path, report: CaseReport) -> None:
    """Write `expectations_from(report)` into the case file's `expect` (keeping untouched/reachability)."""
    data = yaml.safe_load(case_file.read_text(encoding="utf-8"))
    expect = dict(data.get("expect") or {})
    expect.update(expectations_from(report))
    data["expect"] = expect
    case_file.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120), encoding="utf-8")
