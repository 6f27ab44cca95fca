"""The key-free `wg show <if> FIELD` forms say the same about peers as `dump`, without its private key."""

from __future__ import annotations

from responder.pep.wgdump import parse_dump, parse_peer_fields

A = "QnFK+pfH2Fj+RfFxNhC/gty3+B8eRxdGcTQk82hX/k4="
B = "mCNqybRbzL26f8Tqn1G3Jf3u0f8lq2mV3m7lW6oFq0Y="
PRIVATE = "oPiJyTu8DUtMmeD7JageWmmcHpsbc8Zyqpm/kfc5qXA="
DUMP = (
    f"{PRIVATE}\tAuHS2fqBg4S+x5waQE9wFNVttwn7GrQIPKX/AFYzhwU=\t51820\toff\n"
    f"{A}\t(none)\t198.18.3.1:37949\t10.100.0.20/32,10.100.1.0/24\t1796286439\t92\t180\t25\n"
    f"{B}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n"
)
FIELDS = {
    "allowed-ips": f"{A}\t10.100.0.20/32 10.100.1.0/24\n{B}\t(none)\n",
    "endpoints": f"{A}\t198.18.3.1:37949\n{B}\t(none)\n",
    "persistent-keepalive": f"{A}\t25\n{B}\toff\n",
    "latest-handshakes": f"{A}\t1796286439\n{B}\t0\n",
    "transfer": f"{A}\t92\t180\n{B}\t0\t0\n",
}


def test_the_field_forms_and_the_dump_agree() -> None:
    assert parse_peer_fields(FIELDS) == parse_dump(DUMP)


def test_fields_not_asked_for_keep_their_empty_value() -> None:
    peers = parse_peer_fields({"allowed-ips": FIELDS["allowed-ips"]})
    assert peers[A] == {"key": A, "endpoint": None, "allowed_ips": ["10.100.0.20/32", "10.100.1.0/24"],
                        "latest_handshake": 0, "rx": 0, "tx": 0, "keepalive": None}  # fmt: skip
    assert peers[B]["allowed_ips"] == []
