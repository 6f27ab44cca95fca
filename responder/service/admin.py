"""The admin API: what the responder decided and did, and the operator's approve and undo.

Every route but /healthz needs a verified operator (`responder.service.operators`) of the role it names:
reading (and /metrics when it is served here: it names every peer's public key and traffic;
`metrics_routes` serves it on a separate address instead) needs a viewer, approving an approver, undoing
and reloading the rules an admin. The audit trail names that operator, never what a request body says.
Without any way to authenticate configured the API answers 503 rather than run open.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from responder.journal import DecisionState, IntentState, Journal
from responder.policy.reload import ReloadResult
from responder.service.lifecycle import LifecycleError
from responder.service.operators import BootstrapToken, Operators, Role, operator_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_LIMIT = 1000  # decisions in one answer


class Lifecycle(Protocol):
    async def approve(self, decision_id: str, actor: str) -> None: ...
    async def undo(self, decision_id: str, actor: str) -> None: ...


class Readiness(Protocol):
    async def __call__(self) -> Mapping[str, bool]: ...


class OperatorRequest(BaseModel):
    """An operator's request body. `actor` is accepted for older clients and ignored: who acted is the
    verified identity of the request."""

    model_config = ConfigDict(extra="forbid")
    actor: str = Field(default="operator", min_length=1, max_length=128, pattern=r"^[\w.@+-]+$")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def admin_routes(
    journal: Journal,
    lifecycle: Lifecycle,
    readiness: Readiness,
    registry: CollectorRegistry | None,
    token: SecretStr | None,
    *,
    subject_state: Callable[[str], Mapping[str, object]] | None = None,
    unenforced: Callable[[], Mapping[str, object]] | None = None,
    reload_rules: Callable[[str], Awaitable[ReloadResult]] | None = None,
    sources: Callable[[], Mapping[str, Mapping[str, object]]] | None = None,
    operators: Operators | None = None,
) -> list[web.RouteDef]:
    """The admin routes; /metrics among them, for viewers, unless `registry` is None (served elsewhere).
    `operators` says who may call them; without it, the shared admin `token` alone (an admin)."""
    if operators is None:
        operators = Operators([BootstrapToken(token)] if token is not None else [])
    viewer, approver, admin = (operators.require(r) for r in (Role.VIEWER, Role.APPROVER, Role.ADMIN))

    async def show_subject(request: web.Request) -> web.Response:
        if subject_state is None:
            return _error(404, "no decision engine in this process")
        key = request.match_info["key"]
        if ":" not in key or len(key) > 300:
            return _error(400, "a subject key looks like user:alice@example.com, peer:admin1 or ip:10.100.0.10")
        return web.json_response(dict(subject_state(key)))

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks = dict(await readiness())
        ready = all(checks.values())
        body: dict[str, object] = {"ready": ready, "checks": checks}
        if unenforced is not None:
            # By hub: actions in force that the hub has not verified (yet), the oldest, and any outage.
            body["unenforced"] = dict(unenforced())
        if sources is not None:
            # By pull source: {"ready": bool, "detail": str}; a failing one shows here and in `checks`.
            body["sources"] = {name: dict(status) for name, status in sources().items()}
        return web.json_response(body, status=200 if ready else 503)

    async def list_decisions(request: web.Request) -> web.Response:
        unknown = sorted(set(request.query) - {"state", "limit"})
        if unknown:
            return _error(400, f"unknown query parameter {unknown[0]!r}: use state and limit")
        state_name = request.query.get("state")
        try:
            state = DecisionState(state_name) if state_name else None
        except ValueError:
            return _error(400, f"state must be one of {[s.value for s in DecisionState]}, not {state_name!r}")
        limit_text = request.query.get("limit", "100")
        # int() alone would take "-1" (SQLite reads a negative LIMIT as no limit at all), " 5" and "1_0".
        if not (limit_text.isascii() and limit_text.isdigit() and 1 <= int(limit_text) <= MAX_LIMIT):
            return _error(400, f"limit must be an integer from 1 to {MAX_LIMIT}, not {limit_text[:32]!r}")
        decisions = await journal.decisions(state, int(limit_text))
        outstanding = await journal.outstanding_of([d.id for d in decisions])
        views = [_decision_view(asdict(d)) | {"unverified_actions": outstanding.get(d.id, 0)} for d in decisions]
        return web.json_response({"decisions": views})

    async def show_decision(request: web.Request) -> web.Response:
        decision = await journal.decision(request.match_info["id"])
        if decision is None:
            return _error(404, "no such decision")
        intents = await journal.intents_for(decision.id)
        view = _decision_view(asdict(decision))
        view["actions"] = [_intent_view(asdict(i)) for i in intents]
        view["unverified_actions"] = sum(i.state in (IntentState.PENDING, IntentState.FAILED) for i in intents)
        view["audit"] = [asdict(a) for a in await journal.audit_trail(decision.id)]
        return web.json_response(view)

    def operator(verb: Callable[[str, str], Awaitable[None]]) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            req = await _operator_request(request)
            if isinstance(req, web.Response):
                return req
            decision_id = request.match_info["id"]
            if await journal.decision(decision_id) is None:
                return _error(404, "no such decision")
            try:
                await verb(decision_id, operator_of(request).id)
            except LifecycleError as exc:
                return _error(409, str(exc))
            return web.json_response({"id": decision_id, "accepted": True}, status=202)

        return handle

    metrics = [web.get("/metrics", viewer(_exposition(registry)))] if registry is not None else []
    return [
        web.get("/healthz", healthz),
        *metrics,
        web.get("/readyz", viewer(readyz)),
        web.get("/api/decisions", viewer(list_decisions)),
        web.get("/api/decisions/{id}", viewer(show_decision)),
        web.get("/api/subjects/{key}", viewer(show_subject)),
        web.post("/api/decisions/{id}/approve", approver(operator(lifecycle.approve))),
        web.post("/api/decisions/{id}/undo", admin(operator(lifecycle.undo))),
        web.post("/api/rules/reload", admin(_reload_route(reload_rules))),
    ]


async def _operator_request(request: web.Request) -> OperatorRequest | web.Response:
    """The operator's request body, or the 400 answer that says what is wrong with it."""
    try:
        body = await request.json() if request.can_read_body else {}
        return OperatorRequest.model_validate(body)
    except RecursionError:
        return _error(400, "invalid request body: nested too deeply")
    except (ValueError, ValidationError) as exc:
        return _error(400, f"invalid request body: {exc}")


def _reload_route(reload_rules: Callable[[str], Awaitable[ReloadResult]] | None) -> Handler:
    """POST /api/rules/reload: 200 with the rules now in force, or 422 with each problem as file:line."""

    async def reload(request: web.Request) -> web.Response:
        if reload_rules is None:
            return _error(404, "no decision engine in this process")
        req = await _operator_request(request)
        if isinstance(req, web.Response):
            return req
        result = await reload_rules(operator_of(request).id)
        view = {"applied": result.applied, "signals": result.signals, "responses": result.responses}
        if not result.applied:
            # The rules in force are still the old ones.
            problems = {"error": "rules not reloaded: the running rules stay", "problems": list(result.errors)}
            return web.json_response(view | problems, status=422)
        return web.json_response(view)

    return reload


def metrics_routes(registry: CollectorRegistry) -> list[web.RouteDef]:
    """/metrics without a token, for a listener of its own whose address is the access control."""
    return [web.get("/metrics", _exposition(registry))]


def _exposition(registry: CollectorRegistry) -> Handler:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics


def _decision_view(d: dict[str, Any]) -> dict[str, Any]:
    d["body"] = json.loads(d["body"])
    d["state"] = str(d["state"])
    return d


def _intent_view(i: dict[str, Any]) -> dict[str, Any]:
    if i.get("action"):
        i["action"] = json.loads(i["action"])
    i["state"], i["kind"] = str(i["state"]), str(i["kind"])
    # Restore data may hold what is needed to re-add a peer; it stays server-side.
    i.pop("restore", None)
    return i
