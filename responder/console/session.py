"""The console's session: a signed, expiring cookie that names the operator and role verified at login.

A browser cannot put a bearer token on a navigation or an EventSource, so the console exchanges the token
once (POST /console/login) for this cookie. Pure: the time is a parameter, the key is the caller's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from responder.service.operators import Operator, Role

COOKIE = "responder_console"
TTL_S = 3600  # short-lived: a role taken away at the IdP stops counting here within the hour


def issue(operator: Operator, key: bytes, now: float, ttl_s: int = TTL_S) -> str:
    """The cookie value for `operator`, valid until `now + ttl_s`."""
    body = json.dumps({"id": operator.id, "role": operator.role.name, "via": operator.via, "exp": now + ttl_s})
    payload = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
    return f"{payload}.{_sign(payload, key)}"


def verify(value: str, key: bytes, now: float) -> Operator | None:
    """The operator a cookie value names, None when it is forged, damaged or expired."""
    payload, _, signature = value.partition(".")
    if not payload or not hmac.compare_digest(signature.encode(), _sign(payload, key).encode()):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        expires, role = float(data["exp"]), Role[data["role"]]
        operator = Operator(str(data["id"]), role, f"console:{data['via']}")
    except (ValueError, KeyError, TypeError):
        return None
    return operator if now < expires else None


def _sign(payload: str, key: bytes) -> str:
    digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
