"""Validated identifiers that may reach a hub's command line.

Every value that ends up in a `wg`, `nft` or `conntrack` argv is one of these types, checked once at the
edge. The checks are strict on purpose: nft resolves anything that is not an address through DNS, and
Python's `ipaddress` accepts IPv6 scope ids with shell metacharacters.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Annotated, Any

from pydantic import AfterValidator, GetCoreSchemaHandler
from pydantic_core import core_schema

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
_INTERFACE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,14}$")
_NODE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class WireGuardKey(str):
    """A WireGuard public (or private) key: 32 bytes, canonical base64, 44 characters ending in '='."""

    __slots__ = ()

    def __new__(cls, value: str) -> WireGuardKey:
        if not isinstance(value, str) or len(value) != 44 or not value.endswith("="):
            raise ValueError("a WireGuard key is 44 base64 characters ending in '='")
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("a WireGuard key must be valid base64") from exc
        # Re-encoding catches non-canonical padding bits (the 43rd character).
        if len(raw) != 32 or base64.b64encode(raw).decode("ascii") != value:
            raise ValueError("a WireGuard key must encode exactly 32 bytes canonically")
        return super().__new__(cls, value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: type[Any], handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls, core_schema.str_schema(), serialization=core_schema.to_string_ser_schema()
        )


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid nftables table/set name (letter first, then letters, digits, '_', at most 32)"
        )
    return value


def _check_interface(value: str) -> str:
    if not _INTERFACE.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid interface name (at most 15 of [A-Za-z0-9_.-])")
    return value


def _check_node(value: str) -> str:
    if not _NODE.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid node name (lowercase letter first, [a-z0-9-])")
    return value


@lru_cache(maxsize=65536)  # the same few thousand addresses recur in every SIEM stream; results are immutable
def parse_address(value: str) -> IPAddress:
    """Parse an IP address, refusing IPv6 scope ids (`%...`), which `ipaddress` would otherwise keep."""
    if "%" in value:
        raise ValueError(f"{value!r}: scoped IPv6 addresses are not accepted")
    return ipaddress.ip_address(value)


def distinct_addresses(values: Iterable[str]) -> list[IPAddress]:
    """The addresses among `values`, each once, in order; a value that is not one is passed over (an
    alert's field may hold a host name where another holds an address)."""
    out: list[IPAddress] = []
    for value in values:
        try:
            address = parse_address(value)
        except ValueError:
            continue
        if address not in out:
            out.append(address)
    return out


@lru_cache(maxsize=65536)  # formatting an address costs more than deciding on it; the same ones recur
def address_text(address: IPAddress) -> str:
    return str(address)


NftName = Annotated[str, AfterValidator(_check_name)]
InterfaceName = Annotated[str, AfterValidator(_check_interface)]
NodeName = Annotated[str, AfterValidator(_check_node)]
