"""The SASL front the Kafka tests log in through, against the specifications' own examples rather than
against the client it serves: RFC 7677's SCRAM-SHA-256 exchange byte for byte, RFC 4616's PLAIN token, and
the ApiVersions answer the front patches."""

from __future__ import annotations

import base64
import struct

import pytest

from tests.support.sasl_front import (
    SASL_AUTHENTICATE,
    SASL_AUTHENTICATION_FAILED,
    SASL_HANDSHAKE,
    _api_versions,
    _plain,
    _Refused,
    _ScramCredential,
    _ScramServer,
)

# RFC 7677 section 3: user "user", password "pencil".
CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def _rfc_server() -> _ScramServer:
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    return _ScramServer("SCRAM-SHA-256", {"user": _ScramCredential.of("sha256", "pencil", salt)}, SERVER_NONCE)


def test_the_rfc_7677_exchange_comes_out_byte_for_byte() -> None:
    server = _rfc_server()
    assert server.first(CLIENT_FIRST) == SERVER_FIRST
    assert server.final(CLIENT_FINAL) == SERVER_FINAL
    assert server.user == "user"


def test_a_proof_from_another_password_is_refused_as_kafka_refuses_it() -> None:
    server = _rfc_server()
    server.first(CLIENT_FIRST)
    other_proof = base64.b64encode(bytes(32)).decode()
    with pytest.raises(_Refused) as refused:
        server.final(CLIENT_FINAL.rpartition(b",p=")[0] + f",p={other_proof}".encode())
    assert refused.value.code == SASL_AUTHENTICATION_FAILED
    assert "invalid credentials with SASL mechanism SCRAM-SHA-256" in refused.value.message


@pytest.mark.parametrize(
    "client_final",
    [
        CLIENT_FINAL.replace(b"r=rOprNGfwEbeRWgbNEkqO%", b"r=rOprNGfwEbeRWgbNEkqX%"),  # another nonce
        CLIENT_FINAL.replace(b"c=biws", b"c=eSws"),  # a GS2 header other than the client-first one
        CLIENT_FINAL.rpartition(b",p=")[0],  # no proof
    ],
    ids=["nonce", "channel-binding", "no-proof"],
)
def test_a_client_final_message_that_does_not_follow_the_exchange_is_refused(client_final: bytes) -> None:
    server = _rfc_server()
    server.first(CLIENT_FIRST)
    with pytest.raises(_Refused):
        server.final(client_final)


def test_an_unknown_user_or_channel_binding_is_refused_at_the_first_message() -> None:
    with pytest.raises(_Refused, match="no user"):
        _rfc_server().first(b"n,,n=nobody,r=rOprNGfwEbeRWgbNEkqO")
    with pytest.raises(_Refused, match="channel binding"):
        _rfc_server().first(b"p=tls-unique,,n=user,r=rOprNGfwEbeRWgbNEkqO")


def test_a_plain_token_is_authzid_authcid_password() -> None:
    users = {"tim": "tanstaaftanstaaf"}
    assert _plain(b"\0tim\0tanstaaftanstaaf", users) == "tim"  # RFC 4616 section 4's example
    assert _plain(b"tim\0tim\0tanstaaftanstaaf", users) == "tim"  # aiokafka names itself as authzid
    for token in (b"\0tim\0wrong", b"Ursel\0tim\0tanstaaftanstaaf", b"\0nobody\0tanstaaftanstaaf", b"tim"):
        with pytest.raises(_Refused):
            _plain(token, users)


def test_the_broker_api_versions_answer_gets_the_front_sasl_keys() -> None:
    # ApiVersions v1 from a broker: correlation id 7, no error, Produce 0-9 and SaslHandshake 0-0, throttle 0.
    body = struct.pack(">ihi", 7, 0, 2) + struct.pack(">hhh", 0, 0, 9) + struct.pack(">hhh", SASL_HANDSHAKE, 0, 0)
    body += struct.pack(">i", 0)
    patched = _api_versions(struct.pack(">i", len(body)) + body, version=1)
    size, correlation_id, error, count = struct.unpack_from(">iihi", patched)
    assert (size, correlation_id, error) == (len(patched) - 4, 7, 0)
    entries = [struct.unpack_from(">hhh", patched, 14 + 6 * n) for n in range(count)]
    assert entries == [(0, 0, 9), (SASL_HANDSHAKE, 1, 1), (SASL_AUTHENTICATE, 0, 1)]
    assert patched[14 + 6 * count :] == struct.pack(">i", 0)
