"""A SASL front for the test broker: it logs clients in with PLAIN or SCRAM, then hands their bytes on.

The Tansu the tests use (0.6.0) cannot be given SASL users (see tests/integration/test_kafka_tls.py), so a
successful login is tested against this front instead, written from the specifications, not from a client:

- Kafka's SASL framing: KIP-43 (SaslHandshake, api_key 17: the client names a mechanism, the broker answers
  with the ones it has) and KIP-152 (SaslAuthenticate, api_key 36: each SASL token in a request of its own,
  failures as error code 58 SASL_AUTHENTICATION_FAILED with a message before the broker closes). Both are
  announced by adding them to the broker's own ApiVersions (api_key 18) answer, since a client only sends
  what the broker says it knows. Before a login the front answers ApiVersions and these two and nothing
  else: any other request closes the connection, as a Kafka broker does.
- PLAIN, RFC 4616: one token `authzid NUL authcid NUL passwd`; Kafka takes an empty authzid or the authcid.
- SCRAM, RFC 5802 with SHA-256 from RFC 7677 and SHA-512 as KIP-84 adds it for Kafka: the server keeps only
  salt, iteration count, StoredKey and ServerKey; it answers the client-first message with its nonce, salt
  and iterations, checks the ClientProof against StoredKey over the AuthMessage, and proves itself with the
  ServerSignature. Like Kafka it does no SASLprep and takes no channel binding.

After a login the front is a plain pipe: every byte both ways unchanged, so the broker behind it serves
the rest (consume, commit, produce). Compose it behind `tls_terminator` for SASL_SSL: client, TLS, this
front, broker. Only ApiVersions v0-v2 are patched (aiokafka sends v0); a higher version is answered
UNSUPPORTED_VERSION with the versions the front speaks, which is how a Kafka broker makes a client fall
back (KIP-511).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import secrets
import socket
import struct
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
# Kafka error codes (the protocol guide's table).
UNSUPPORTED_VERSION, UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED = 35, 33, 34, 58
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
# What the front speaks itself: SaslHandshake v1 only (v0 means raw tokens without SaslAuthenticate, which
# KIP-152 replaced), SaslAuthenticate v0-v1 (v2 is flexible), ApiVersions v0-v2 (v3 is flexible).
_OWN_VERSIONS = {API_VERSIONS: (0, 2), SASL_HANDSHAKE: (1, 1), SASL_AUTHENTICATE: (0, 1)}
SCRAM_ITERATIONS = 4096  # RFC 7677's minimum, and Kafka's
LOGIN_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Login:
    """A login the front accepted: who, and how."""

    user: str
    mechanism: str


@dataclass(slots=True)
class SaslFront:
    """What the front saw, for the test to check that a real exchange took place."""

    logins: list[Login] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # one line per refused login or request


class _Refused(Exception):
    """A login refused: the Kafka error code and message the client gets before the connection closes."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class _ScramCredential:
    """What a SCRAM server keeps for a user (RFC 5802 section 3): never the password itself."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def of(cls, hash_name: str, password: str, salt: bytes | None = None) -> _ScramCredential:
        salt = secrets.token_bytes(16) if salt is None else salt
        salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, SCRAM_ITERATIONS)
        client_key = hmac.digest(salted, b"Client Key", hash_name)
        return cls(
            salt=salt, iterations=SCRAM_ITERATIONS, stored_key=hashlib.new(hash_name, client_key).digest(),
            server_key=hmac.digest(salted, b"Server Key", hash_name),
        )  # fmt: skip


def _attributes(message: str) -> dict[str, str]:
    """`a=1,b=2` as a mapping; a SCRAM message is attributes, each one letter, `=`, and a value."""
    pairs = [part.split("=", 1) for part in message.split(",")]
    if any(len(p) != 2 or len(p[0]) != 1 for p in pairs):
        raise _Refused(SASL_AUTHENTICATION_FAILED, f"malformed SCRAM message: {message!r}")
    return dict((p[0], p[1]) for p in pairs)


class _ScramServer:
    """The server side of one SCRAM exchange (RFC 5802 section 5): two tokens in, two out."""

    def __init__(
        self, mechanism: str, credentials: Mapping[str, _ScramCredential], server_nonce: str | None = None
    ) -> None:
        self.mechanism = mechanism
        self._server_nonce = secrets.token_urlsafe(18) if server_nonce is None else server_nonce
        self._hash = _HASHES[mechanism]
        self._credentials = credentials
        self.user = ""
        self._credential: _ScramCredential | None = None
        self._gs2_header = ""
        self._nonce = ""
        self._client_first_bare = ""
        self._server_first = ""

    def first(self, token: bytes) -> bytes:
        """client-first-message in, server-first-message out."""
        message = token.decode()
        flag, authzid, bare = [*message.split(",", 2), "", ""][:3]
        if flag not in ("n", "y"):  # "p=..." asks for channel binding, which Kafka does not offer
            raise _Refused(SASL_AUTHENTICATION_FAILED, "SCRAM channel binding is not supported")
        attributes = _attributes(bare)
        if "m" in attributes or "n" not in attributes or "r" not in attributes:
            raise _Refused(SASL_AUTHENTICATION_FAILED, "SCRAM client-first message without n= and r=, or with m=")
        self.user = attributes["n"].replace("=2C", ",").replace("=3D", "=")
        if authzid and authzid != f"a={attributes['n']}":
            raise _Refused(SASL_AUTHENTICATION_FAILED, "SCRAM authorization id differs from the user")
        self._credential = self._credentials.get(self.user)
        if self._credential is None:
            raise _Refused(SASL_AUTHENTICATION_FAILED, f"Authentication failed: no user {self.user!r}")
        self._gs2_header = f"{flag},{authzid},"
        self._client_first_bare = bare
        self._nonce = attributes["r"] + self._server_nonce
        salt = base64.b64encode(self._credential.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={self._credential.iterations}"
        return self._server_first.encode()

    def final(self, token: bytes) -> bytes:
        """client-final-message in, server-final-message out once the ClientProof holds."""
        assert self._credential is not None, "final before first"
        message = token.decode()
        without_proof, separator, _ = message.rpartition(",p=")
        attributes = _attributes(message)
        if not separator or attributes.get("r") != self._nonce:
            raise _Refused(SASL_AUTHENTICATION_FAILED, "SCRAM client-final message without proof or nonce")
        if base64.b64decode(attributes.get("c", "")) != self._gs2_header.encode():
            raise _Refused(SASL_AUTHENTICATION_FAILED, "SCRAM channel binding data differs from the GS2 header")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        client_signature = hmac.digest(self._credential.stored_key, auth_message, self._hash)
        proof = base64.b64decode(attributes["p"])
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=False))
        if len(proof) != len(client_signature) or not hmac.compare_digest(
            hashlib.new(self._hash, client_key).digest(), self._credential.stored_key
        ):
            raise _Refused(
                SASL_AUTHENTICATION_FAILED,
                f"Authentication failed during authentication due to invalid credentials with SASL mechanism "
                f"{self.mechanism}",
            )
        server_signature = hmac.digest(self._credential.server_key, auth_message, self._hash)
        return b"v=" + base64.b64encode(server_signature)


def _plain(token: bytes, users: Mapping[str, str]) -> str:
    """RFC 4616: the user a PLAIN token proves, or `_Refused`."""
    parts = token.split(b"\0")
    if len(parts) != 3:
        raise _Refused(SASL_AUTHENTICATION_FAILED, "malformed PLAIN token")
    authzid, user, password = (p.decode() for p in parts)
    expected = users.get(user)
    if authzid not in ("", user) or expected is None or not hmac.compare_digest(password.encode(), expected.encode()):
        raise _Refused(
            SASL_AUTHENTICATION_FAILED,
            "Authentication failed: Invalid username or password",
        )
    return user


# The wire: big-endian sizes, nullable strings with an int16 length, bytes with an int32 length.
def _string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    data = value.encode()
    return struct.pack(">h", len(data)) + data


def _bytes(value: bytes) -> bytes:
    return struct.pack(">i", len(value)) + value


@dataclass(frozen=True, slots=True)
class _Request:
    """One request frame, its header (v1: api key, version, correlation id, client id) read."""

    frame: bytes  # with its size prefix, to hand on unchanged
    api_key: int
    api_version: int
    correlation_id: int
    body: bytes

    @classmethod
    def parse(cls, frame: bytes) -> _Request:
        api_key, api_version, correlation_id, client_id_size = struct.unpack_from(">hhih", frame, 4)
        return cls(frame, api_key, api_version, correlation_id, frame[14 + max(client_id_size, 0) :])


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    size = await reader.readexactly(4)
    return size + await reader.readexactly(struct.unpack(">i", size)[0])


def _response(correlation_id: int, body: bytes) -> bytes:
    """A response with header v0 (the correlation id alone): what every version the front answers uses."""
    message = struct.pack(">i", correlation_id) + body
    return struct.pack(">i", len(message)) + message


def _api_versions(broker_answer: bytes, version: int) -> bytes:
    """The broker's ApiVersions v0-v2 answer with the front's SASL keys in place of the broker's."""
    correlation_id, error, count = struct.unpack_from(">ihi", broker_answer, 4)
    entries = [struct.unpack_from(">hhh", broker_answer, 14 + 6 * n) for n in range(count)]
    kept = [e for e in entries if e[0] not in (SASL_HANDSHAKE, SASL_AUTHENTICATE)]
    kept += [(key, *_OWN_VERSIONS[key]) for key in (SASL_HANDSHAKE, SASL_AUTHENTICATE)]
    body = struct.pack(">hi", error, len(kept)) + b"".join(struct.pack(">hhh", *e) for e in kept)
    if version >= 1:  # throttle_time_ms
        body += broker_answer[14 + 6 * count : 18 + 6 * count]
    return _response(correlation_id, body)


class _Connection:
    """One client's connection until its login: the SASL state a broker keeps for it."""

    def __init__(
        self, front: SaslFront, users: Mapping[str, str], scram: Mapping[str, Mapping[str, _ScramCredential]]
    ) -> None:
        self._front = front
        self._users = users
        self._scram_credentials = scram
        self._mechanism: str | None = None
        self._scram: _ScramServer | None = None

    async def login(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        broker: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> bool:
        """Run the SASL exchange: True once the client has proved who it is, False when it was refused (its
        answer, if it gets one, already written)."""
        (client_r, client_w), (broker_r, broker_w) = client, broker
        while True:
            request = _Request.parse(await _read_frame(client_r))
            if request.api_key == API_VERSIONS and request.api_version <= _OWN_VERSIONS[API_VERSIONS][1]:
                broker_w.write(request.frame)
                await broker_w.drain()
                client_w.write(_api_versions(await _read_frame(broker_r), request.api_version))
            elif request.api_key == API_VERSIONS:
                entries = [(key, *versions) for key, versions in _OWN_VERSIONS.items()]
                body = struct.pack(">hi", UNSUPPORTED_VERSION, len(entries))
                body += b"".join(struct.pack(">hhh", *e) for e in entries)
                client_w.write(_response(request.correlation_id, body))
            elif request.api_key == SASL_HANDSHAKE and request.api_version == 1 and self._mechanism is None:
                answer, accepted = self._handshake(request)
                client_w.write(answer)
                if not accepted:
                    return False
            elif request.api_key == SASL_AUTHENTICATE and request.api_version <= 1 and self._mechanism:
                answer, outcome = self._authenticate(request)
                client_w.write(answer)
                if outcome is not None:
                    await client_w.drain()
                    return outcome
            else:
                # Anything else before a login, or a SASL request out of turn: Kafka closes the connection.
                self._front.refused.append(f"api_key {request.api_key} v{request.api_version} before a login")
                return False
            await client_w.drain()

    def _handshake(self, request: _Request) -> tuple[bytes, bool]:
        """SaslHandshake v1: the answer, and whether the mechanism asked for is one the front has."""
        (size,) = struct.unpack_from(">h", request.body)
        asked = request.body[2 : 2 + size].decode()
        known = struct.pack(">i", len(MECHANISMS)) + b"".join(_string(m) for m in MECHANISMS)
        if asked not in MECHANISMS:
            self._front.refused.append(f"mechanism {asked!r} is not enabled")
            return _response(request.correlation_id, struct.pack(">h", UNSUPPORTED_SASL_MECHANISM) + known), False
        self._mechanism = asked
        if asked in _HASHES:
            self._scram = _ScramServer(asked, self._scram_credentials[asked])
        return _response(request.correlation_id, struct.pack(">h", 0) + known), True

    def _authenticate(self, request: _Request) -> tuple[bytes, bool | None]:
        """SaslAuthenticate v0-v1, one SASL token: the answer, and True once logged in, False when refused,
        None while the exchange goes on (after SCRAM's first message)."""
        (size,) = struct.unpack_from(">i", request.body)
        token = request.body[4 : 4 + size]
        lifetime = struct.pack(">q", 0) if request.api_version >= 1 else b""  # 0: no re-authentication
        try:
            if self._scram is None:
                user: str | None = _plain(token, self._users)
                answer = b""
            elif not self._scram.user:
                user, answer = None, self._scram.first(token)
            else:
                user, answer = self._scram.user, self._scram.final(token)
        except (_Refused, UnicodeDecodeError, ValueError) as exc:
            refusal = exc if isinstance(exc, _Refused) else _Refused(SASL_AUTHENTICATION_FAILED, str(exc))
            self._front.refused.append(f"{self._mechanism}: {refusal.message}")
            body = struct.pack(">h", refusal.code) + _string(refusal.message) + _bytes(b"") + lifetime
            return _response(request.correlation_id, body), False
        body = struct.pack(">h", 0) + _string(None) + _bytes(answer) + lifetime
        if user is None:
            return _response(request.correlation_id, body), None
        self._front.logins.append(Login(user, str(self._mechanism)))
        return _response(request.correlation_id, body), True


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@asynccontextmanager
async def sasl_front(listen: socket.socket, target_port: int, users: Mapping[str, str]) -> AsyncIterator[SaslFront]:
    """For the block, on `listen` (a bound loopback socket): a front that logs clients in as `users` (name
    to password) with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, then pipes them to 127.0.0.1:`target_port`.
    The broker must advertise the address clients reach (this front's, or a TLS terminator's before it)."""
    front = SaslFront()
    scram = {m: {u: _ScramCredential.of(h, p) for u, p in users.items()} for m, h in _HASHES.items()}
    open_writers: set[asyncio.StreamWriter] = set()
    handlers: set[asyncio.Task[None]] = set()

    async def accepted(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if task := asyncio.current_task():
            handlers.add(task)
            task.add_done_callback(handlers.discard)
        open_writers.add(client_w)
        try:
            broker_r, broker_w = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_w.close()
            open_writers.discard(client_w)
            return
        open_writers.add(broker_w)
        try:
            async with asyncio.timeout(LOGIN_TIMEOUT_S):
                logged_in = await _Connection(front, users, scram).login((client_r, client_w), (broker_r, broker_w))
            if logged_in:
                async with asyncio.TaskGroup() as group:
                    group.create_task(_pipe(client_r, broker_w))
                    group.create_task(_pipe(broker_r, client_w))
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, struct.error, ValueError):
            pass  # a client gone, slow or speaking something else: its connection closes, as a broker's would
        finally:
            for writer in (client_w, broker_w):
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                writer.close()
                open_writers.discard(writer)

    server = await asyncio.start_server(accepted, sock=listen)
    try:
        yield front
    finally:
        server.close()
        for writer in open_writers:
            writer.close()
        # Closed sockets end every pipe; waiting for the handlers here keeps them from outliving the block.
        if handlers:
            await asyncio.wait(handlers, timeout=5)
        await server.wait_closed()
