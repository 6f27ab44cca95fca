"""Contract servers for the overlay admin APIs: NOT the products.

Each class is a small aiohttp server on 127.0.0.1 (free port) that honours what
/work/shared/reference/overlays.md documents for Tailscale, Headscale, NetBird and DefGuard: the
endpoints the responder uses, the auth check, the status codes and error bodies, idempotency (a repeated
delete answers 404), and full-replace PUTs (an omitted field is lost). Nothing else of the products is
modelled. Tests steer them with three knobs: `fail(...)` queues faults (429 with Retry-After, 5xx),
`after_read(...)` changes state right after a GET has been answered (another admin racing us), and
`requests` records what arrived and when.
"""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Json = dict[str, Any]


def hex_node_key(wireguard_key: str) -> str:
    """How Tailscale and Headscale list a node's WireGuard key: `nodekey:<hex>`."""
    return "nodekey:" + base64.b64decode(wireguard_key).hex()


def _now(offset_s: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).isoformat().replace("+00:00", "Z")


@dataclass
class Fault:
    status: int
    count: int
    retry_after: str | None = None
    method: str | None = None
    path_contains: str | None = None


@dataclass
class _Hook:
    method: str
    path_suffix: str
    change: Callable[[], None]
    times: int


@dataclass
class Seen:
    method: str
    path: str
    status: int
    at: float
    authorization: str | None = field(default=None, repr=False)


class ContractServer:
    """Common machinery: bind, faults, hooks, request log, auth check hook."""

    error_key = "message"

    def __init__(self) -> None:
        self.app = web.Application(middlewares=[self._middleware])
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.faults: list[Fault] = []
        self.hooks: list[_Hook] = []
        self.requests: list[Seen] = []
        self.routes()

    def routes(self) -> None:
        raise NotImplementedError

    def authorized(self, request: web.Request) -> bool:
        raise NotImplementedError

    def unauthorized(self) -> web.Response:
        return self.error(401, "unauthorized")

    def error(self, status: int, message: str) -> web.Response:
        return web.json_response({self.error_key: message}, status=status)

    async def start(self) -> str:
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def fail(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: str | None = None,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        self.faults.append(Fault(status, count, retry_after, method, path_contains))

    def after_read(self, path_suffix: str, change: Callable[[], None], times: int = 1, method: str = "GET") -> None:
        self.hooks.append(_Hook(method, path_suffix, change, times))

    def calls(self, method: str, path_contains: str = "") -> list[Seen]:
        return [s for s in self.requests if s.method == method and path_contains in s.path]

    def _fault_for(self, request: web.Request) -> Fault | None:
        for fault in self.faults:
            if fault.count <= 0:
                continue
            if fault.method and fault.method != request.method:
                continue
            if fault.path_contains and fault.path_contains not in request.path:
                continue
            fault.count -= 1
            return fault
        return None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        fault = self._fault_for(request)
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            response: web.StreamResponse = web.json_response(
                {self.error_key: f"injected {fault.status}"}, status=fault.status, headers=headers
            )
        elif not self.public(request) and not self.authorized(request):
            response = self.unauthorized()
        else:
            response = await handler(request)
        self.requests.append(Seen(request.method, request.path, response.status, time.monotonic(), auth))
        if fault is None and response.status < 400:
            for hook in self.hooks:
                if hook.times > 0 and hook.method == request.method and request.path.endswith(hook.path_suffix):
                    hook.times -= 1
                    hook.change()
        return response

    def public(self, request: web.Request) -> bool:
        return False

    async def body(self, request: web.Request) -> Json:
        try:
            data = await request.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}


# -- Tailscale ---------------------------------------------------------------------------------------------


class TailscaleContract(ContractServer):
    """Tailscale API v2 contract: API key or OAuth client-credentials (tokens expire), devices, tags."""

    def __init__(self, api_key: str, client_id: str, client_secret: str, allowed_tags: set[str]) -> None:
        self.api_key, self.client_id, self.client_secret = api_key, client_id, client_secret
        self.allowed_tags = allowed_tags
        self.tokens: dict[str, float] = {}  # access token -> server-side expiry (monotonic)
        self.token_ttl = 3600
        self.devices: dict[str, Json] = {}
        self._seq = itertools.count(1)
        super().__init__()

    def add_device(self, node_id: str, user: str, wg_key: str, address: str, tags: list[str] | None = None) -> None:
        self.devices[node_id] = {
            "id": f"{node_id}-legacy",
            "nodeId": node_id,
            "name": f"{node_id}.tail.ts.net",
            "user": user,
            "addresses": [address, "fd7a:115c:a1e0::1"],
            "nodeKey": hex_node_key(wg_key),
            "authorized": True,
            "tags": tags or [],
            "keyExpiryDisabled": False,
            "expires": _now(86400 * 90),
            "lastSeen": _now(),
        }

    def routes(self) -> None:
        r = self.app.router
        r.add_post("/api/v2/oauth/token", self.token)
        r.add_get("/api/v2/tailnet/{tailnet}/devices", self.list_devices)
        r.add_get("/api/v2/device/{id}", self.get_device)
        r.add_delete("/api/v2/device/{id}", self.delete_device)
        r.add_post("/api/v2/device/{id}/expire", self.expire)
        r.add_post("/api/v2/device/{id}/authorized", self.authorize)
        r.add_post("/api/v2/device/{id}/tags", self.set_tags)

    def public(self, request: web.Request) -> bool:
        return request.path == "/api/v2/oauth/token"

    def authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if header == f"Bearer {self.api_key}":
            return True
        token = header.removeprefix("Bearer ")
        return token in self.tokens and self.tokens[token] > time.monotonic()

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return self.error(400, "unsupported grant_type")
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return self.error(401, "invalid client credentials")
        token = f"tskey-access-{next(self._seq)}"
        self.tokens[token] = time.monotonic() + self.token_ttl
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl,
                                  "scope": "devices:core"})  # fmt: skip

    def _device(self, request: web.Request) -> Json | None:
        key = request.match_info["id"]
        return self.devices.get(key) or next((d for d in self.devices.values() if d["id"] == key), None)

    async def list_devices(self, request: web.Request) -> web.Response:
        return web.json_response({"devices": list(self.devices.values())})

    async def get_device(self, request: web.Request) -> web.Response:
        device = self._device(request)
        if device is None:
            return self.error(404, "not found")
        device["lastSeen"] = _now()  # volatile: a read-modify-write must not mistake this for a conflict
        return web.json_response(device)

    async def delete_device(self, request: web.Request) -> web.Response:
        device = self._device(request)
        if device is None:
            return self.error(404, "not found")
        del self.devices[device["nodeId"]]
        return web.Response(status=200)

    async def expire(self, request: web.Request) -> web.Response:
        device = self._device(request)
        if device is None:
            return self.error(404, "not found")
        device["expires"] = _now(-1)
        return web.Response(status=200)

    async def authorize(self, request: web.Request) -> web.Response:
        device = self._device(request)
        if device is None:
            return self.error(404, "not found")
        body = await self.body(request)
        if not isinstance(body.get("authorized"), bool):
            return self.error(400, "authorized must be a boolean")
        device["authorized"] = body["authorized"]
        return web.json_response({})

    async def set_tags(self, request: web.Request) -> web.Response:
        device = self._device(request)
        if device is None:
            return self.error(404, "not found")
        tags = (await self.body(request)).get("tags")
        if not isinstance(tags, list) or any(t not in self.allowed_tags for t in tags):
            return self.error(400, "tags: unknown tag or not permitted by the tailnet policy")
        device["tags"] = list(tags)  # replaces the whole list
        return web.json_response({})


# -- Headscale ---------------------------------------------------------------------------------------------


class HeadscaleContract(ContractServer):
    """Headscale /api/v1 (grpc-gateway) contract: bearer API key, nodes, expire, delete (404 from v0.27), tags."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.nodes: dict[str, Json] = {}
        super().__init__()

    def unauthorized(self) -> web.Response:
        return web.Response(status=401, text="Unauthorized")

    def add_node(self, node_id: str, user: str, wg_key: str, address: str, tags: list[str] | None = None) -> None:
        self.nodes[node_id] = {
            "id": node_id,
            "machineKey": "mkey:" + "0" * 64,
            "nodeKey": hex_node_key(wg_key),
            "ipAddresses": [address],
            "name": f"host-{node_id}",
            "givenName": f"host-{node_id}",
            "user": {"id": "1", "name": user.split("@", maxsplit=1)[0], "email": user},
            "lastSeen": _now(),
            "expiry": "0001-01-01T00:00:00Z",
            "online": True,
            "tags": tags or [],
        }

    def routes(self) -> None:
        r = self.app.router
        r.add_get("/api/v1/node", self.list_nodes)
        r.add_get("/api/v1/node/{id}", self.get_node)
        r.add_delete("/api/v1/node/{id}", self.delete_node)
        r.add_post("/api/v1/node/{id}/expire", self.expire)
        r.add_post("/api/v1/node/{id}/tags", self.set_tags)

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def _missing(self) -> web.Response:
        return web.json_response({"code": 5, "message": "node not found", "details": []}, status=404)

    async def list_nodes(self, request: web.Request) -> web.Response:
        user = request.query.get("user")
        nodes = [n for n in self.nodes.values() if user is None or n["user"]["name"] == user]
        return web.json_response({"nodes": nodes})

    async def get_node(self, request: web.Request) -> web.Response:
        node = self.nodes.get(request.match_info["id"])
        if node is None:
            return self._missing()
        node["lastSeen"] = _now()
        return web.json_response({"node": node})

    async def delete_node(self, request: web.Request) -> web.Response:
        if self.nodes.pop(request.match_info["id"], None) is None:
            return self._missing()
        return web.json_response({})

    async def expire(self, request: web.Request) -> web.Response:
        node = self.nodes.get(request.match_info["id"])
        if node is None:
            return self._missing()
        node["expiry"] = _now(-1)
        return web.json_response({"node": node})

    async def set_tags(self, request: web.Request) -> web.Response:
        node = self.nodes.get(request.match_info["id"])
        if node is None:
            return self._missing()
        tags = (await self.body(request)).get("tags")
        if not isinstance(tags, list) or any(not str(t).startswith("tag:") for t in tags):
            return web.json_response({"code": 3, "message": "invalid tag"}, status=400)
        node["tags"] = list(tags)
        return web.json_response({"node": node})


# -- NetBird -----------------------------------------------------------------------------------------------


class NetBirdContract(ContractServer):
    """NetBird management API contract: `Token` PAT, peers, users (block), groups (full-replace PUT)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.users: dict[str, Json] = {}
        self.peers: dict[str, Json] = {}
        self.groups: dict[str, Json] = {}
        super().__init__()

    def error(self, status: int, message: str) -> web.Response:
        return web.json_response({"message": message, "code": status}, status=status)

    def add_user(self, user_id: str, email: str, role: str = "user") -> None:
        self.users[user_id] = {"id": user_id, "email": email, "name": email.split("@", maxsplit=1)[0], "role": role,
                               "status": "active", "auto_groups": ["g-all"], "is_blocked": False,
                               "is_service_user": False, "last_login": _now()}  # fmt: skip

    def add_peer(self, peer_id: str, user_id: str, ip: str) -> None:
        self.peers[peer_id] = {"id": peer_id, "name": f"peer-{peer_id}", "ip": ip, "connected": True,
                               "last_seen": _now(), "user_id": user_id, "ssh_enabled": False,
                               "login_expiration_enabled": True, "inactivity_expiration_enabled": False,
                               "login_expired": False, "approval_required": False}  # fmt: skip

    def add_group(self, group_id: str, name: str, peers: list[str], resources: list[Json] | None = None) -> None:
        self.groups[group_id] = {"id": group_id, "name": name, "peers": list(peers), "resources": resources or []}

    def _peer_view(self, peer: Json) -> Json:
        groups = [{"id": g["id"], "name": g["name"]} for g in self.groups.values() if peer["id"] in g["peers"]]
        return {**peer, "groups": groups}

    def _group_view(self, group: Json) -> Json:
        members = [{"id": p, "name": self.peers[p]["name"]} for p in group["peers"] if p in self.peers]
        return {**group, "peers": members, "peers_count": len(members), "resources_count": len(group["resources"])}

    def routes(self) -> None:
        r = self.app.router
        r.add_get("/api/users", self.list_users)
        r.add_put("/api/users/{id}", self.put_user)
        r.add_get("/api/peers", self.list_peers)
        r.add_get("/api/peers/{id}", self.get_peer)
        r.add_delete("/api/peers/{id}", self.delete_peer)
        r.add_get("/api/groups/{id}", self.get_group)
        r.add_put("/api/groups/{id}", self.put_group)

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Token {self.token}"

    async def list_users(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.users.values()))

    async def put_user(self, request: web.Request) -> web.Response:
        user = self.users.get(request.match_info["id"])
        if user is None:
            return self.error(404, "user not found")
        body = await self.body(request)
        missing = [k for k in ("role", "auto_groups", "is_blocked") if k not in body]
        if missing:
            return self.error(422, f"missing required fields: {', '.join(missing)}")
        if body["is_blocked"] and user["role"] == "owner":
            return self.error(403, "the account owner cannot be blocked")
        user.update(role=body["role"], auto_groups=list(body["auto_groups"]), is_blocked=bool(body["is_blocked"]))
        if user["is_blocked"]:
            for peer in self.peers.values():
                if peer["user_id"] == user["id"]:
                    peer["login_expired"] = True
                    peer["connected"] = False
        return web.json_response(user)

    async def list_peers(self, request: web.Request) -> web.Response:
        return web.json_response([self._peer_view(p) for p in self.peers.values()])

    async def get_peer(self, request: web.Request) -> web.Response:
        peer = self.peers.get(request.match_info["id"])
        if peer is None:
            return self.error(404, "peer not found")
        return web.json_response(self._peer_view(peer))

    async def delete_peer(self, request: web.Request) -> web.Response:
        peer_id = request.match_info["id"]
        if self.peers.pop(peer_id, None) is None:
            return self.error(404, "peer not found")
        for group in self.groups.values():
            group["peers"] = [p for p in group["peers"] if p != peer_id]
        return web.Response(status=200)

    async def get_group(self, request: web.Request) -> web.Response:
        group = self.groups.get(request.match_info["id"])
        if group is None:
            return self.error(404, "group not found")
        return web.json_response(self._group_view(group))

    async def put_group(self, request: web.Request) -> web.Response:
        group = self.groups.get(request.match_info["id"])
        if group is None:
            return self.error(404, "group not found")
        body = await self.body(request)
        if not isinstance(body.get("name"), str) or not body["name"]:
            return self.error(422, "name is required")
        peers = body.get("peers") or []
        if any(p not in self.peers for p in peers):
            return self.error(422, "unknown peer in peers")
        # Full replace: whatever the body omits (peers, resources) is gone afterwards.
        group.update(name=body["name"], peers=list(peers), resources=list(body.get("resources") or []))
        return web.json_response(self._group_view(group))


# -- DefGuard ----------------------------------------------------------------------------------------------

_USER_INFO_KEYS = ("id", "username", "first_name", "last_name", "email", "phone", "is_active", "groups",
                   "authorized_apps", "mfa_enabled")  # fmt: skip


class DefGuardContract(ContractServer):
    """DefGuard core /api/v1 contract: bearer token (Business) or session cookie, users (full UserInfo PUT),
    devices (delete; repeat -> 404 with `msg`)."""

    error_key = "msg"

    def __init__(self, admin: str, token: str, password: str) -> None:
        self.admin, self.token, self.password = admin, token, password
        self.sessions: set[str] = set()
        self.users: dict[str, Json] = {}
        self.devices: dict[str, Json] = {}
        self._seq = itertools.count(1)
        super().__init__()
        self.add_user(admin, f"{admin}@example.com", groups=["admin"])

    def add_user(self, username: str, email: str, groups: list[str] | None = None) -> None:
        self.users[username] = {"id": len(self.users) + 1, "username": username, "first_name": username.title(),
                                "last_name": "Example", "email": email, "phone": None, "is_active": True,
                                "groups": groups or [], "authorized_apps": [{"oauth2client_id": 1}],
                                "mfa_enabled": False}  # fmt: skip

    def add_device(self, device_id: int, username: str, wg_key: str, address: str) -> None:
        self.devices[str(device_id)] = {"id": device_id, "name": f"dev-{device_id}", "wireguard_pubkey": wg_key,
                                        "user_id": self.users[username]["id"], "created": _now(),
                                        "wireguard_ips": [address]}  # fmt: skip

    def routes(self) -> None:
        r = self.app.router
        r.add_post("/api/v1/auth", self.login)
        r.add_get("/api/v1/user", self.list_users)
        r.add_get("/api/v1/user/{username}", self.get_user)
        r.add_put("/api/v1/user/{username}", self.put_user)
        r.add_get("/api/v1/device", self.list_devices)
        r.add_get("/api/v1/device/{id}", self.get_device)
        r.add_delete("/api/v1/device/{id}", self.delete_device)

    def public(self, request: web.Request) -> bool:
        return request.path == "/api/v1/auth"

    def authorized(self, request: web.Request) -> bool:
        if request.headers.get("Authorization") == f"Bearer {self.token}":
            return True
        return request.cookies.get("defguard_session") in self.sessions

    def unauthorized(self) -> web.Response:
        return self.error(401, "Unauthorized")

    async def login(self, request: web.Request) -> web.Response:
        body = await self.body(request)
        if body.get("username") != self.admin or body.get("password") != self.password:
            return self.error(401, "invalid credentials")
        session = f"s{next(self._seq)}"
        self.sessions.add(session)
        response = web.json_response({"user": self.users[self.admin]})
        response.set_cookie("defguard_session", session, httponly=True)
        return response

    async def list_users(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.users.values()))

    async def get_user(self, request: web.Request) -> web.Response:
        user = self.users.get(request.match_info["username"])
        if user is None:
            return self.error(404, "user not found")
        devices = [d for d in self.devices.values() if d["user_id"] == user["id"]]
        return web.json_response({"user": user, "devices": devices, "security_keys": []})

    async def put_user(self, request: web.Request) -> web.Response:
        username = request.match_info["username"]
        user = self.users.get(username)
        if user is None:
            return self.error(404, "user not found")
        body = await self.body(request)
        missing = [k for k in _USER_INFO_KEYS if k not in body]
        if missing:
            return self.error(422, f"missing field(s) {', '.join(missing)}")
        if username == self.admin and body["is_active"] is False:
            return self.error(400, "admins cannot disable themselves")
        # Full replace: the stored user becomes exactly the body (groups/apps it omits would be removed).
        self.users[username] = {k: body[k] for k in _USER_INFO_KEYS}
        return web.json_response({})

    async def list_devices(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.devices.values()))

    async def get_device(self, request: web.Request) -> web.Response:
        device = self.devices.get(request.match_info["id"])
        if device is None:
            return self.error(404, f"device id {request.match_info['id']} not found")
        return web.json_response(device)

    async def delete_device(self, request: web.Request) -> web.Response:
        device_id = request.match_info["id"]
        if self.devices.pop(device_id, None) is None:
            return self.error(404, f"device id {device_id} not found")
        return web.Response(status=200)
