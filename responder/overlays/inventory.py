"""Overlay enforcement points in the inventory, and the devices discovered on them.

An overlay is addressed like a hub: `Action.hub` is the overlay's `name` (e.g. "tailnet"). The device an
action means is found in the overlay's own device listing by the WireGuard public key (`Action.peer_key`,
matched against `nodeKey` / `wireguard_pubkey`) or, failing that, by tunnel address (`Action.address`).
Credentials are named here (an environment variable or a file), read only when the adapter opens, and held
as `SecretStr` so that they never print.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from responder.core.identifiers import IPAddress, NftName, NodeName, WireGuardKey
from responder.overlays.errors import OverlayConfigError

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class OverlayKind(StrEnum):
    TAILSCALE = "tailscale"
    HEADSCALE = "headscale"
    NETBIRD = "netbird"
    DEFGUARD = "defguard"


class CutOff(StrEnum):
    """How `remove_peer` cuts a device off; which ones an overlay offers is in `CUT_OFFS`."""

    EXPIRE_KEY = "expire_key"
    """Expire the node key: the device must re-authenticate (and the IdP decides whether it may). Not undoable."""
    DEAUTHORIZE = "deauthorize"
    """Tailscale: mark the device unauthorized. Undoable; only effective with device approval on."""
    DELETE_DEVICE = "delete_device"
    """Delete the device/node/peer. Not undoable; it may rejoin by enrolling again."""
    BLOCK_USER = "block_user"
    """NetBird: block the owner (expires all their peers); DefGuard: disable the owner. Undoable; user-wide."""


CUT_OFFS: dict[OverlayKind, tuple[CutOff, ...]] = {
    # The first entry is the default: the least destructive mode that cuts the device off on its own.
    OverlayKind.TAILSCALE: (CutOff.EXPIRE_KEY, CutOff.DEAUTHORIZE, CutOff.DELETE_DEVICE),
    OverlayKind.HEADSCALE: (CutOff.EXPIRE_KEY, CutOff.DELETE_DEVICE),
    OverlayKind.NETBIRD: (CutOff.BLOCK_USER, CutOff.DELETE_DEVICE),
    OverlayKind.DEFGUARD: (CutOff.BLOCK_USER, CutOff.DELETE_DEVICE),
}

DEFAULT_QUARANTINE_LABEL: dict[OverlayKind, str | None] = {
    OverlayKind.TAILSCALE: "tag:quarantine",
    OverlayKind.HEADSCALE: "tag:quarantine",
    OverlayKind.NETBIRD: None,  # a group id, which only the operator knows
    OverlayKind.DEFGUARD: None,  # a user group name; quarantine there is user-wide
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretSource(_Model):
    """Where a secret lives: exactly one of an environment variable or a file (first line, stripped)."""

    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env (a variable name) or file (a path)")
        return self

    def load(self, overlay: str) -> SecretStr:
        """Read the secret; errors name the variable or file, never the value."""
        if self.env is not None:
            value = os.environ.get(self.env, "").strip()
            if not value:
                raise OverlayConfigError(overlay, f"environment variable {self.env} is not set or empty")
            return SecretStr(value)
        assert self.file is not None  # noqa: S101 - guaranteed by the validator
        try:
            value = self.file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise OverlayConfigError(overlay, f"cannot read secret file {self.file}: {exc.strerror}") from exc
        if not value:
            raise OverlayConfigError(overlay, f"secret file {self.file} is empty")
        return SecretStr(value)


class OverlayCredentials(_Model):
    """An API token (Tailscale API key, Headscale API key, NetBird PAT, DefGuard Business token), or a
    Tailscale OAuth client, or a DefGuard login for the session-cookie flow."""

    token: SecretSource | None = None
    oauth_client_id: str | None = Field(default=None, min_length=1)
    oauth_client_secret: SecretSource | None = None
    username: str | None = Field(default=None, min_length=1)
    password: SecretSource | None = None


class OverlayActions(_Model):
    """How response actions map onto this overlay; every field has a safe default."""

    cut_off: CutOff | None = Field(default=None, description="remove_peer mode; default: first of CUT_OFFS")
    quarantine_label: str | None = Field(
        default=None,
        description="Tag (Tailscale/Headscale), group id (NetBird) or user group (DefGuard) that quarantines",
    )
    set_labels: dict[NftName, str] = Field(
        default_factory=dict,
        description="Hub set name -> tag/group, so add_element/delete_element reach the overlay",
    )


class OverlaySpec(_Model):
    name: NodeName = Field(description="The enforcement point's name: what Action.hub says")
    kind: OverlayKind
    base_url: str = Field(
        description="Tailscale: https://api.tailscale.com/api/v2; Headscale/DefGuard: the server URL; "
        "NetBird: https://api.netbird.io or the self-hosted management URL"
    )
    tailnet: str = Field(default="-", pattern=r"^[A-Za-z0-9_.@-]+$", description="Tailscale only; '-' = default")
    credentials: OverlayCredentials
    actions: OverlayActions = OverlayActions()

    @field_validator("base_url")
    @classmethod
    def _https_unless_loopback(cls, value: str) -> str:
        from urllib.parse import urlsplit  # noqa: PLC0415 - only needed here

        parts = urlsplit(value)
        if parts.scheme not in {"https", "http"} or not parts.hostname:
            raise ValueError("base_url must be an http(s) URL with a host")
        # Tokens travel in headers: cleartext only to this machine (contract servers, a local sidecar).
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
            raise ValueError("base_url must use https (plain http is accepted for loopback only)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        creds = self.credentials
        oauth = creds.oauth_client_id is not None or creds.oauth_client_secret is not None
        login = creds.username is not None or creds.password is not None
        if oauth and self.kind is not OverlayKind.TAILSCALE:
            raise ValueError("credentials.oauth_client_* is for tailscale only")
        if login and self.kind is not OverlayKind.DEFGUARD:
            raise ValueError("credentials.username/password is for defguard only")
        if oauth and (creds.oauth_client_id is None or creds.oauth_client_secret is None):
            raise ValueError("credentials: give both oauth_client_id and oauth_client_secret")
        if login and (creds.username is None or creds.password is None):
            raise ValueError("credentials: give both username and password")
        if sum((creds.token is not None, oauth, login)) != 1:
            raise ValueError("credentials: give exactly one of token, an OAuth client (tailscale) or a login")
        if self.actions.cut_off is not None and self.actions.cut_off not in CUT_OFFS[self.kind]:
            offered = ", ".join(CUT_OFFS[self.kind])
            raise ValueError(f"actions.cut_off {self.actions.cut_off} is not offered by {self.kind} ({offered})")
        return self

    @property
    def cut_off(self) -> CutOff:
        return self.actions.cut_off or CUT_OFFS[self.kind][0]

    @property
    def quarantine_label(self) -> str | None:
        return self.actions.quarantine_label or DEFAULT_QUARANTINE_LABEL[self.kind]


@dataclass(frozen=True, slots=True)
class OverlayDevice:
    """One device as its overlay lists it, mapped to the identity that owns it."""

    overlay: str
    device_id: str
    name: str
    owner: str | None
    """The owner's email or login name: what an identity provider's subject is matched against."""
    owner_id: str | None
    """The overlay's own id for the owner (NetBird user id, DefGuard username, Headscale user name)."""
    node_key: WireGuardKey | None
    addresses: tuple[IPAddress, ...]
    labels: tuple[str, ...] = ()
    """Tags (Tailscale, Headscale) or group ids (NetBird) or user groups (DefGuard)."""


def parse_node_key(value: object) -> WireGuardKey | None:
    """A WireGuard key from the forms overlays list: `nodekey:<64 hex>`, bare hex, or base64. None if neither."""
    if not isinstance(value, str) or not value:
        return None
    text = value.removeprefix("nodekey:")
    try:
        if len(text) == 64:
            return WireGuardKey(base64.b64encode(bytes.fromhex(text)).decode("ascii"))
        return WireGuardKey(text)
    except (ValueError, binascii.Error):
        return None


def parse_addresses(values: object) -> tuple[IPAddress, ...]:
    """Addresses from a listing, skipping what is not a plain address (a CIDR suffix is dropped)."""
    items = values if isinstance(values, list) else [values]
    out: list[IPAddress] = []
    for item in items:
        if not isinstance(item, str) or "%" in item:
            continue
        try:
            out.append(ipaddress.ip_address(item.split("/", 1)[0]))
        except ValueError:
            continue
    return tuple(out)


def find_device(
    devices: list[OverlayDevice], peer_key: WireGuardKey | None, address: IPAddress | None
) -> OverlayDevice | None:
    """The device with this WireGuard key, else the one with this tunnel address."""
    if peer_key is not None:
        for device in devices:
            if device.node_key == peer_key:
                return device
    if address is not None:
        for device in devices:
            if address in device.addresses:
                return device
    return None


def devices_by_owner(devices: list[OverlayDevice]) -> dict[str, tuple[OverlayDevice, ...]]:
    """Owner (lower-cased email or login) -> their devices: how a subject's risk reaches overlay devices."""
    out: dict[str, list[OverlayDevice]] = {}
    for device in devices:
        if device.owner:
            out.setdefault(device.owner.lower(), []).append(device)
    return {owner: tuple(found) for owner, found in out.items()}
