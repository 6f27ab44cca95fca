"""Each delivery of a case sent as its source sends it: Okta and Entra over HTTP with the run's secret and
`clientState` in place of the recorded ones, SSF as a SET signed by the run's transmitter, SIEM alerts
produced to the run's Kafka topic (accepted once the journal has them). Every delivery is a timeline step;
an answer other than the expected one is a failure."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from responder.replay.case import REDACTED, Case, DeliverySpec
from responder.replay.options import Options, ReplayError
from responder.replay.report import CaseReport
from responder.replay.session import POLL_S, Session
from responder.replay.settings import Setup

ROUTES = {"okta": "/hooks/okta", "entra": "/hooks/entra", "entra-lifecycle": "/hooks/entra/lifecycle"}


@dataclass
class Sent:
    """One delivery on its way: `sent` is when, on the service's clock; latencies count from it."""

    index: int  # 1-based; 0 for the clock's last move
    at: float  # the case offset
    sent: datetime


def webhook_headers(delivery: DeliverySpec, secret: str | None) -> dict[str, str]:
    """The recorded headers, with the run's `secret` as `Authorization` (in place of a redacted one, or
    added); redacted headers are dropped."""
    out: dict[str, str] = {}
    for name, value in delivery.headers.items():
        low = name.lower()
        if value == REDACTED:
            if low == "authorization" and secret is not None:
                out["Authorization"] = secret
            continue
        out[name] = value
    if secret is not None and not any(k.lower() == "authorization" for k in out):
        out["Authorization"] = secret
    return out


def with_client_state(raw: bytes, client_state: str) -> bytes:
    """A Graph notification body with the run's `clientState` where the recording has none or a redacted
    one; anything else (also a body that is not JSON) exactly as recorded."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw
    changed = False
    if isinstance(doc, dict) and isinstance(doc.get("value"), list):
        for item in doc["value"]:
            if isinstance(item, dict) and item.get("clientState", REDACTED) == REDACTED:
                item["clientState"] = client_state
                changed = True
    return json.dumps(doc).encode() if changed else raw


class Sender:
    """Sends a case's deliveries to one running service; closes its Kafka producer on leaving."""

    def __init__(self, case: Case, setup: Setup, session: Session, options: Options, report: CaseReport) -> None:
        self._case = case
        self._setup = setup
        self._session = session
        self._options = options
        self._report = report
        self._producer: Any = None  # made at the first kafka delivery

    async def __aenter__(self) -> Sender:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def deliver(self, delivery: DeliverySpec, sent: Sent) -> None:
        fmt = delivery.kafka_format
        if fmt is not None:
            await self._produce(delivery, fmt, sent)
        else:
            await self._post(delivery, sent)

    def _request(self, delivery: DeliverySpec) -> tuple[str, bytes, dict[str, str]]:
        """The route, body and headers of a webhook delivery."""
        via = delivery.via
        if via == "ssf":
            transmitter = self._setup.transmitter
            if transmitter is None:  # prepare() makes one for every case with ssf deliveries
                raise ReplayError("an ssf delivery, but no transmitter was set up")
            body = transmitter.sign(self._case.body_json(delivery)).encode()
            headers = webhook_headers(delivery, None) | {"Content-Type": "application/secevent+jwt"}
            return "/hooks/ssf", body, headers
        secret = self._setup.secrets.okta if via == "okta" else None
        body = self._case.body_bytes(delivery)
        if via.startswith("entra"):
            body = with_client_state(body, self._setup.secrets.client_state)
        headers = webhook_headers(delivery, secret)
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        return ROUTES[via], body, headers

    async def _post(self, delivery: DeliverySpec, sent: Sent) -> None:
        via = delivery.via
        path, body, headers = self._request(delivery)
        started = time.monotonic()
        async with self._session.http.post(self._session.url + path, data=body, headers=headers) as response:
            status = response.status
            text = (await response.text())[:300]
        took = round((time.monotonic() - started) * 1000, 1)
        ok = delivery.status == status if delivery.status is not None else 200 <= status < 300
        note = f" {delivery.note}" if delivery.note else ""
        self._report.step(
            "delivery", sent.at, f"#{sent.index} {via}: HTTP {status}{note}", latency_ms=took, ok=ok,
            data={"via": via, "status": status, "response": text},
        )  # fmt: skip
        if not ok:
            wanted = delivery.status if delivery.status is not None else "2xx"
            self._report.fail(f"~ delivery #{sent.index} ({via}): expected HTTP {wanted}, got {status} {text}")
        elif 200 <= status < 300 and self._options.recorder is not None:
            self._options.recorder.delivery(via, headers, body, self._session.clock())

    async def _produce(self, delivery: DeliverySpec, fmt: str, sent: Sent) -> None:
        from aiokafka import AIOKafkaProducer  # noqa: PLC0415 - only with kafka

        if self._producer is None:
            self._producer = AIOKafkaProducer(bootstrap_servers=self._options.kafka, enable_idempotence=False)
            await self._producer.start()
        clock, journal = self._session.clock, self._session.journal
        body = self._case.body_bytes(delivery)
        headers = [(k, v.encode()) for k, v in delivery.headers.items() if v != REDACTED]
        key = delivery.key.encode() if delivery.key is not None else None
        started = time.monotonic()
        meta = await self._producer.send_and_wait(self._setup.topics[fmt], body, key=key, headers=headers or None)
        delivery_id = f"kafka:{meta.topic}:{meta.partition}:{meta.offset}"
        wait = self._options.settle_timeout_s
        deadline = time.monotonic() + wait
        accepted = False
        while time.monotonic() < deadline:
            received = await journal.received_at(delivery_id)
            if received is not None:
                # Latencies of what follows count from the consumer's hand-off (the first delivery also
                # waits for the consumer group to form), in the service's virtual time.
                sent.sent = clock() - (datetime.now(UTC) - received)
                accepted = True
                break
            await asyncio.sleep(POLL_S)
        took = round((time.monotonic() - started) * 1000, 1)
        text = f"#{sent.index} {delivery.via}: produced to {meta.topic}@{meta.offset}, " + (
            "accepted" if accepted else "NOT accepted (dead-lettered?)"
        )
        self._report.step("delivery", sent.at, text, latency_ms=took, ok=accepted, data={"via": delivery.via})
        if not accepted:
            self._report.fail(f"~ delivery #{sent.index} ({delivery.via}): not in the journal after {wait:g}s")
        elif self._options.recorder is not None:
            self._options.recorder.delivery(delivery.via, dict(delivery.headers), body, clock(), key=key)
