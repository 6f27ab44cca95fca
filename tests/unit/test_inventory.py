import base64
from pathlib import Path

import pytest

from responder.inventory import Inventory, InventoryError

KEY = base64.b64encode(b"k" * 32).decode()


def _inventory(**peer: object) -> dict[str, object]:
    return {
        "hubs": [
            {
                "name": "hub1",
                "ssh": {
                    "host": "198.18.1.1",
                    "user": "root",
                    "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDr5 hub1",
                    "client_key": "/tmp/id",
                },
                "tunnel_network": "10.100.0.0/24",
                "address": "10.100.0.1",
            }
        ],
        "peers": [{"name": "admin1", "hub": "hub1", "public_key": KEY, "tunnel_ip": "10.100.0.10", **peer}],
    }


def test_valid_inventory_pins_the_host_key_without_its_comment() -> None:
    inv = Inventory.model_validate(_inventory(sets=["admin_devices"], owner="alice@example.com"))
    assert inv.hubs[0].ssh.host_key == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDr5"
    assert inv.peer_by_ip(inv.peers[0].tunnel_ip)[0].owner == "alice@example.com"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hub": "hub9"}, "unknown hub"),
        ({"tunnel_ip": "10.200.0.10"}, "outside"),
        ({"public_key": "not-a-key"}, "WireGuard key"),
        ({"sets": ["admin devices; flush ruleset"]}, "nftables"),
        ({"colour": "red"}, "Extra inputs"),
    ],
)
def test_invalid_peer_is_refused_with_the_reason(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Inventory.model_validate(_inventory(**change))


def test_host_key_verification_cannot_be_switched_off() -> None:
    data = _inventory()
    data["hubs"][0]["ssh"]["host_key"] = None  # type: ignore[index]
    with pytest.raises(ValueError, match="host_key"):
        Inventory.model_validate(data)
    data["hubs"][0]["ssh"]["host_key"] = "ssh-ed25519 AAAA"  # type: ignore[index]
    data["hubs"][0]["ssh"]["known_hosts"] = None  # type: ignore[index]
    with pytest.raises(ValueError, match="known_hosts"):
        Inventory.model_validate(data)


def test_load_reports_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text("hubs:\n  - name: Hub One\n")
    with pytest.raises(InventoryError) as err:
        Inventory.load(path)
    assert str(path) in str(err.value)
    assert "hubs.0.name" in str(err.value)
