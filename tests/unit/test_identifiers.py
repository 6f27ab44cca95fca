import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from responder.core.identifiers import WireGuardKey, parse_address

VALID = base64.b64encode(bytes(range(32))).decode()


def test_wireguard_key_accepts_canonical_base64_of_32_bytes() -> None:
    assert WireGuardKey(VALID) == VALID


@pytest.mark.parametrize(
    "value",
    [
        "",
        VALID[:-1],
        VALID[:-1] + "A",
        VALID[:42] + "B=",  # 43rd char carries padding bits: not canonical
        "$(id)" + VALID[5:],
        VALID[:-2] + ";=",
        VALID + "\n",
        "A" * 44,
    ],
)
def test_wireguard_key_rejects_non_keys(value: str) -> None:
    with pytest.raises(ValueError, match="WireGuard key"):
        WireGuardKey(value)


@given(st.text(max_size=60))
def test_wireguard_key_accepts_only_what_round_trips(value: str) -> None:
    try:
        key = WireGuardKey(value)
    except ValueError:
        return
    assert len(base64.b64decode(key, validate=True)) == 32
    assert base64.b64encode(base64.b64decode(key)).decode() == value


@pytest.mark.parametrize("value", ["fe80::1%$(id)", "fe80::1%eth0", "10.0.0.1; rm -rf /", "10.100.0.999"])
def test_parse_address_refuses_scopes_and_garbage(value: str) -> None:
    with pytest.raises(ValueError):
        parse_address(value)
