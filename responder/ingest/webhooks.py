"""The webhook routes: Okta event hooks, Microsoft Graph change and lifecycle notifications, and Shared
Signals push. Each answers only after its events are handed off durably, and before they are decided:
the senders time out after about 3 seconds.

Bad input gets the right 4xx with a JSON message (SSF: RFC 8935's `{"err", "description"}`), counts in
`responder_deliveries{outcome}`, and touches nothing else: a handler raises `Rejected`, and the one wrapper
every route goes through (`Webhooks._traced`) answers it and counts it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer
from pydantic import SecretStr

from responder.core.events import Event
from responder.ingest import entra, okta, ssf
from responder.ingest.errors import PayloadError
from responder.ingest.handoff import Handoff
from responder.ingest.payload import MAX_PAYLOAD_BYTES, parse_json
from responder.journal import DeliveryRecord, JournalUnavailable, RejectedRecord
from responder.telemetry.metrics import Metrics, bounded
from responder.telemetry.tracing import carrier_of_current, context_from

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TRACE_HEADERS = ("traceparent", "tracestate")
KEPT_HEADERS = ("content-type", "user-agent", "x-okta-request-id", *TRACE_HEADERS)
LOGGED_REJECTIONS = 5  # records of one delivery named in its log line; the audit trail has every one
# RFC 8935 section 2.4's registered error codes: the only SSF outcomes that become metric labels.
SET_ERROR_CODES = frozenset(
    {"invalid_request", "invalid_key", "invalid_issuer", "invalid_audience", "authentication_failed", "access_denied"}
)


class DeliveryRecorder(Protocol):
    """Something that keeps accepted deliveries as they arrived (`responder run --record`)."""

    def delivery(
        self,
        via: str,
        headers: Mapping[str, str],
        body: bytes,
        at: datetime | None = None,
        *,
        key: bytes | str | None = None,
    ) -> object: ...


@dataclass(frozen=True)
class SsfReceiver:
    keys: ssf.Keys
    issuer: str
    audience: str
    authorization: SecretStr | None = None


@dataclass(frozen=True)
class WebhookConfig:
    okta_secret: SecretStr | None = None
    entra_client_state: SecretStr | None = None
    ssf: SsfReceiver | None = None
    max_body_bytes: int = MAX_PAYLOAD_BYTES
    body_timeout_s: float = 10.0
    okta_path: str = "/hooks/okta"
    entra_path: str = "/hooks/entra"
    entra_lifecycle_path: str = "/hooks/entra/lifecycle"
    ssf_path: str = "/hooks/ssf"


class Rejected(Exception):
    """A delivery refused: `status` for the sender, `outcome` for `responder_deliveries{outcome}`, `message`
    for both. With a `set_error` code (RFC 8935 section 2.4) the body is SSF's `{"err", "description"}`,
    otherwise `{"error": message}`."""

    def __init__(self, status: int, outcome: str, message: str, *, set_error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.message = message
        self.set_error = set_error

    def response(self) -> web.Response:
        if self.set_error is not None:
            return web.json_response({"err": self.set_error, "description": self.message}, status=self.status)
        return web.json_response({"error": self.message}, status=self.status)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _same(given: str, expected: SecretStr) -> bool:
    return hmac.compare_digest(given.encode(), expected.get_secret_value().encode())


class Webhooks:
    def __init__(
        self,
        config: WebhookConfig,
        handoff: Handoff,
        metrics: Metrics,
        tracer: Tracer | None = None,
        recorder: DeliveryRecorder | None = None,
        *,
        notified: Callable[[Sequence[entra.ChangeNotification]], None] | None = None,
    ) -> None:
        self.config = config
        # Graph notifications, once journaled, for whoever acts on them (the subscriptions keeper): it must
        # return at once, Graph waits for the answer.
        self._notified = notified
        self._handoff = handoff
        self._metrics = metrics
        self._tracer = tracer or trace.NoOpTracer()
        self._recorder = recorder

    def routes(self) -> list[web.RouteDef]:
        c = self.config
        out: list[web.RouteDef] = []
        if c.okta_secret is not None:
            out += [
                web.get(c.okta_path, self._traced("okta", self.okta_verify)),
                web.post(c.okta_path, self._traced("okta", self.okta)),
            ]
        if c.entra_client_state is not None:
            out += [
                web.post(c.entra_path, self._traced("entra", self.entra)),
                web.post(c.entra_lifecycle_path, self._traced("entra", self.entra_lifecycle)),
            ]
        if c.ssf is not None:
            out.append(web.post(c.ssf_path, self._traced("ssf", self.ssf)))
        return out

    async def close(self) -> None:
        """Stop what the routes started in the background (a JWKS fetch under way)."""
        if self.config.ssf is not None:
            await self.config.ssf.keys.close()

    def _traced(self, source: str, handler: Handler) -> Handler:
        """A server span per delivery, continuing the sender's W3C trace context when it sends one."""

        async def traced(request: web.Request) -> web.StreamResponse:
            parent = context_from({k.lower(): v for k, v in request.headers.items() if k.lower() in TRACE_HEADERS})
            with self._tracer.start_as_current_span(
                f"delivery {source}", context=parent, kind=SpanKind.SERVER,
                attributes={"responder.source": source, "http.request.method": request.method,
                            "url.path": request.path},
            ) as span:  # fmt: skip
                try:
                    response = await handler(request)
                except Rejected as rejected:
                    self._count(source, rejected.outcome)
                    response = rejected.response()
                span.set_attribute("http.response.status_code", response.status)
                return response

        return traced

    def _count(self, source: str, outcome: str) -> None:
        self._metrics.deliveries.labels(source, outcome).inc()

    async def _body(self, request: web.Request, content_type: str) -> bytes:
        if request.content_type != content_type:
            raise Rejected(
                415, "bad_content_type", f"expected Content-Type {content_type}, got {request.content_type or 'none'}"
            )
        if request.content_length is not None and request.content_length > self.config.max_body_bytes:
            raise Rejected(413, "too_large", f"body over {self.config.max_body_bytes} bytes")
        try:
            # A body trickled in a byte at a time would hold the connection (and a file) for as long as
            # the sender likes.
            async with asyncio.timeout(self.config.body_timeout_s):
                return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise Rejected(413, "too_large", f"body over {self.config.max_body_bytes} bytes") from None
        except TimeoutError:
            raise Rejected(
                408, "slow_body", f"the body did not arrive within {self.config.body_timeout_s:g} s"
            ) from None

    def _json(self, body: bytes) -> Any:
        try:
            return parse_json(body, max_bytes=self.config.max_body_bytes)
        except PayloadError as exc:
            raise Rejected(400, "bad_json", f"the body is {exc}") from None

    async def _hand_off(
        self,
        request: web.Request,
        source: str,
        delivery_id: str,
        body: bytes,
        events: list[Event],
        *,
        rejected: Sequence[RejectedRecord] = (),
    ) -> int:
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() in KEPT_HEADERS}
        # The delivery's own span, so that what follows (decision, actions) hangs below it in the trace.
        delivery = DeliveryRecord(
            f"{source}:{delivery_id}", source, _now(), carrier_of_current(), headers, body, tuple(rejected)
        )
        started = time.perf_counter()
        with self._tracer.start_as_current_span("journal.accept", attributes={"responder.events": len(events)}):
            try:
                accepted = await self._handoff.accept(delivery, events)
            except JournalUnavailable:
                self._count(source, "journal_unavailable")
                raise
        self._metrics.handoff_seconds.labels(source).observe(time.perf_counter() - started)
        self._metrics.events.labels(source).inc(accepted.new)
        self._metrics.duplicates.labels(source).inc(accepted.duplicates)
        self._count(source, "accepted")
        if self._recorder is not None:
            via = "entra-lifecycle" if delivery_id.startswith("lifecycle:") else source
            self._recorder.delivery(via, dict(request.headers), body)
        return accepted.new

    # --- Okta -------------------------------------------------------------------------------------

    async def okta_verify(self, request: web.Request) -> web.Response:
        challenge = request.headers.get("x-okta-verification-challenge")
        if not challenge:
            raise Rejected(400, "bad_request", "missing X-Okta-Verification-Challenge header")
        self._okta_authenticate(request)
        self._count("okta", "verified")
        return web.json_response({"verification": challenge})

    def _okta_authenticate(self, request: web.Request) -> None:
        assert self.config.okta_secret is not None  # noqa: S101 - the route exists only with a secret
        if not _same(request.headers.get("Authorization", ""), self.config.okta_secret):
            raise Rejected(401, "unauthorized", "wrong or missing authentication header")

    async def okta(self, request: web.Request) -> web.Response:
        self._okta_authenticate(request)
        body = await self._body(request, "application/json")
        document = self._json(body)
        try:
            envelope = okta.delivery(document)
        except PayloadError as exc:
            raise Rejected(400, "invalid", str(exc)) from None
        # Okta does not retry a 4xx: one malformed event must not cost the rest of the batch. Each one
        # skipped is counted, logged and kept in the audit trail with its reason; the body is kept with
        # the delivery, so the event itself is not lost either.
        events, skipped = okta.events_of(envelope)
        delivery_id = envelope.eventId or uuid.uuid4().hex
        self._skipped("okta", delivery_id, skipped, len(envelope.data.events))
        await self._hand_off(request, "okta", delivery_id, body, events, rejected=skipped)
        return web.Response(status=200)

    def _skipped(self, source: str, delivery_id: str, skipped: Sequence[RejectedRecord], total: int) -> None:
        """Count and log the records of a delivery that became no event. One line a delivery, naming a few,
        not one a record: a delivery of 1,000 bad records must not write 1,000 (the audit trail has all)."""
        if not skipped:
            return
        self._metrics.deliveries.labels(source, "invalid_event").inc(len(skipped))
        named = "; ".join(f"record {r.index}{f' ({r.record_id:.64})' if r.record_id else ''}: {r.reason:.200}"
                          for r in skipped[:LOGGED_REJECTIONS])  # fmt: skip
        log.warning(
            "%s delivery %s: %d of %d records skipped (audit trail, kind record.rejected): %s%s",
            source, delivery_id, len(skipped), total, named, "; ..." if len(skipped) > LOGGED_REJECTIONS else "",
        )  # fmt: skip

    # --- Microsoft Graph --------------------------------------------------------------------------

    def _validation(self, request: web.Request) -> web.Response | None:
        token = request.query.get("validationToken")
        if token is None:
            return None
        self._count("entra", "validated")
        # Opaque, echoed as plain text only (never HTML), as Graph requires.
        return web.Response(text=token[:1024], content_type="text/plain")

    async def _notifications(self, request: web.Request, lifecycle: bool) -> web.Response:
        if (answer := self._validation(request)) is not None:
            return answer
        body = await self._body(request, "application/json")
        doc = self._json(body)
        try:
            batch = entra.parse_batch(doc)
        except PayloadError as exc:
            raise Rejected(400, "invalid", str(exc)) from None
        assert self.config.entra_client_state is not None  # noqa: S101 - the route exists only with it
        expected = self.config.entra_client_state.get_secret_value()
        received = _now()
        split = entra.notification_events(batch, expected, received)
        if split.forged:
            log.warning("dropped %d Graph notifications with a wrong clientState", split.forged)
            if not split.genuine and not split.rejected:
                raise Rejected(401, "client_state_mismatch", "clientState does not match")
            self._count("entra", "client_state_mismatch")
        for n in split.genuine:
            if n.lifecycleEvent:
                self._metrics.lifecycle.labels(bounded(n.lifecycleEvent, entra.LIFECYCLE_EVENTS)).inc()
                log.warning(
                    "Graph subscription %s: lifecycle event %.64s — %s",
                    n.subscriptionId,
                    n.lifecycleEvent,
                    "handed to entra.subscriptions"
                    if self._notified is not None
                    else "reauthorize it"
                    if n.lifecycleEvent == "reauthorizationRequired"
                    else "recreate it and resync",
                )
        delivery_id = (split.genuine[0].id if split.genuine else None) or uuid.uuid4().hex
        skipped = split.rejected
        self._skipped("entra", delivery_id, skipped, len(batch.notifications) + len(batch.rejected))
        # The journal keeps the body, but not the shared secret in it: whoever reads a journal (or a
        # backup of it) must not be able to forge notifications.
        kept = json.dumps(entra.redact_client_state(doc)).encode()
        await self._hand_off(
            request, "entra", f"{'lifecycle:' if lifecycle else ''}{delivery_id}", kept, split.events, rejected=skipped
        )
        if self._notified is not None and split.genuine:
            self._notified(split.genuine)
        return web.Response(status=202)

    async def entra(self, request: web.Request) -> web.Response:
        return await self._notifications(request, lifecycle=False)

    async def entra_lifecycle(self, request: web.Request) -> web.Response:
        return await self._notifications(request, lifecycle=True)

    # --- Shared Signals ---------------------------------------------------------------------------

    async def ssf(self, request: web.Request) -> web.Response:
        receiver = self.config.ssf
        assert receiver is not None  # noqa: S101 - the route exists only with a receiver
        if receiver.authorization is not None and not _same(
            request.headers.get("Authorization", ""), receiver.authorization
        ):
            raise Rejected(
                401, "unauthorized", "wrong or missing Authorization header", set_error="authentication_failed"
            )
        if request.content_type != "application/secevent+jwt":
            raise Rejected(
                400, "bad_content_type", "Content-Type must be application/secevent+jwt", set_error="invalid_request"
            )
        body = await self._body(request, "application/secevent+jwt")
        try:
            token = body.decode("ascii").strip()
            verified = await ssf.verify(token, receiver.keys, issuer=receiver.issuer, audience=receiver.audience)
            events = ssf.events_of(verified)
        except UnicodeDecodeError:
            raise Rejected(400, "invalid", "the body is not a compact JWS", set_error="invalid_request") from None
        except ssf.SetError as exc:
            raise Rejected(400, bounded(exc.code, SET_ERROR_CODES), str(exc), set_error=exc.code) from None
        await self._hand_off(request, "ssf", f"{verified.claims['iss']}:{verified.claims['jti']}", body, events)
        return web.Response(status=202)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON, never an HTML page or a stack trace: an unexpected exception is logged here,
    with its traceback, and the client gets a 500 that names only the request's id in that log line."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason}, status=exc.status)
    except JournalUnavailable:
        # Nothing was stored: the sender keeps the delivery and sends it again (Okta once, Graph and SSF
        # transmitters for hours). The log names the journal and why, once a minute (Availability).
        return web.json_response(
            {"error": "the journal cannot store deliveries right now; retry later"},
            status=503, headers={"Retry-After": "30"},
        )  # fmt: skip
    except Exception:
        incident = uuid.uuid4().hex[:12]
        log.exception("%s %s failed (incident %s)", request.method, request.path, incident)
        return web.json_response({"error": "internal error", "incident": incident}, status=500)
