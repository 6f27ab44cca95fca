"""What is wrong with a payload, said so that the sender's operator can fix it."""

from __future__ import annotations


class PayloadError(ValueError):
    """The payload cannot be turned into events; the message says which field and why."""


class Unauthorized(PayloadError):
    """A secret, client state or signature did not match."""
