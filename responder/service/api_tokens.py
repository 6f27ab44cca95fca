"""Per-operator API tokens for automation: random, named, one role each, expiring; only their hash at rest.

A token is `rsp_` and 32 random bytes (base64url), shown once when it is created. The tokens file
(`operators.tokens_file`, YAML) keeps for each its name, role, SHA-256, creation and expiry, and when it
was revoked: nothing in it lets anyone sign in, so it can be reviewed, diffed and kept in configuration
management like the rest of the configuration, and `responder operators token` edits it without the
service or the journal's credentials. The service reads it at start and again on SIGHUP.

SHA-256, not a password hash: a password hash is slow to make guessing a low-entropy secret costly, but
these tokens carry 256 random bits, so no number of guesses finds one, and a fast hash keeps every request
cheap. Comparison is constant-time over every entry, so timing tells nothing about which hash came close.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from responder.service.operators import Operator, Refused, Role

log = logging.getLogger(__name__)

PREFIX = "rsp_"
NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"
MAX_LIFETIME = timedelta(days=400)  # tokens expire: a forgotten one stops working within about a year
_DURATION = re.compile(r"^(\d{1,4})([hdw])$")
_UNIT = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_HEADER = (
    "# responder API tokens (`responder operators token create|list|revoke`).\n"
    "# SHA-256 of each token only: the tokens themselves were shown once and are kept nowhere.\n"
)


class TokenFileError(ValueError):
    """The tokens file cannot be used; the message names the file and what to change."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=NAME)
    role: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: AwareDatetime
    expires_at: AwareDatetime
    revoked_at: AwareDatetime | None = None


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: list[_Entry] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ApiToken:
    """One token as the file keeps it: never the token itself."""

    name: str
    role: Role
    sha256: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None

    @property
    def operator(self) -> Operator:
        return Operator(f"token:{self.name}", self.role, "token")

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "valid"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def parse_lifetime(text: str) -> timedelta:
    """`30d`, `12h`, `8w`: how long a new token lives, at most `MAX_LIFETIME`."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"--expires must be a number and h, d or w, such as 30d, not {text!r}")
    lifetime = int(match[1]) * _UNIT[match[2]]
    if not timedelta(0) < lifetime <= MAX_LIFETIME:
        raise ValueError(f"--expires must be more than 0 and at most {MAX_LIFETIME.days}d, not {text!r}")
    return lifetime


def load(path: Path) -> list[ApiToken]:
    """The tokens in `path` (none if it does not exist); `TokenFileError` if it is unsafe or malformed."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return []
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        # Whoever may write it may add a token of their own: hashes are public, the file's integrity is not.
        raise TokenFileError(f"{path} is writable by group or others: chmod 600 {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        parsed = _File.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise TokenFileError(f"{path}: cannot read it: {exc}") from None
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise TokenFileError(f"{path}: {'.'.join(map(str, problem['loc']))}: {problem['msg']}") from None
    tokens = []
    for e in parsed.tokens:
        try:
            role = Role.parse(e.role)
        except ValueError as bad:
            raise TokenFileError(f"{path}: token {e.name!r}: {bad}") from None
        tokens.append(ApiToken(e.name, role, e.sha256, e.created_at, e.expires_at, e.revoked_at))
    names = [t.name for t in tokens]
    if len(set(names)) != len(names):
        raise TokenFileError(f"{path}: a token name appears twice")
    return tokens


def save(path: Path, tokens: Sequence[ApiToken]) -> None:
    """Write `tokens` to `path` atomically: a new file 0600; an existing one keeps its group and mode (e.g.
    0640 root:responder, so the service user reads what root's CLI writes), never writable by others."""
    entries = [
        {
            "name": t.name,
            "role": t.role.name.lower(),
            "sha256": t.sha256,
            "created_at": t.created_at.isoformat(),
            "expires_at": t.expires_at.isoformat(),
            **({"revoked_at": t.revoked_at.isoformat()} if t.revoked_at is not None else {}),
        }
        for t in tokens
    ]
    text = _HEADER + yaml.safe_dump({"tokens": entries}, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            with contextlib.suppress(FileNotFoundError):
                before = path.stat()
                os.fchmod(out.fileno(), stat.S_IMODE(before.st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH))
                with contextlib.suppress(PermissionError):  # only root may give it away; the mode still holds
                    os.fchown(out.fileno(), -1, before.st_gid)
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _editing(path: Path) -> Iterator[None]:
    """Two `responder operators token` commands at once do not lose each other's change: the directory is
    locked while one reads, changes and writes the file (no lock file left behind)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        yield
    finally:
        os.close(directory)  # releases the lock


def create(path: Path, name: str, role: Role, lifetime: timedelta, now: datetime) -> tuple[str, ApiToken]:
    """A new token named `name`: the token (to show once) and what the file keeps of it."""
    if not re.match(NAME, name):
        raise ValueError(f"a token name is 1-64 of a-z 0-9 . _ - (starting with a letter or digit), not {name!r}")
    with _editing(path):
        return _create(path, name, role, lifetime, now)


def _create(path: Path, name: str, role: Role, lifetime: timedelta, now: datetime) -> tuple[str, ApiToken]:
    tokens = load(path)
    if any(t.name == name for t in tokens):
        raise ValueError(f"a token named {name!r} exists: revoke it first or choose another name")
    token = new_token()
    entry = ApiToken(name, role, digest(token), now, now + lifetime)
    save(path, [*tokens, entry])
    return token, entry


def revoke(path: Path, name: str, now: datetime) -> ApiToken:
    """Mark the token `name` revoked (kept in the file, for review); revoking it again changes nothing."""
    with _editing(path):
        return _revoke(path, name, now)


def _revoke(path: Path, name: str, now: datetime) -> ApiToken:
    tokens = load(path)
    found = next((t for t in tokens if t.name == name), None)
    if found is None:
        raise ValueError(f"no token named {name!r} in {path}")
    if found.revoked_at is not None:
        return found
    revoked = replace(found, revoked_at=now)
    save(path, [revoked if t.name == name else t for t in tokens])
    return revoked


class ApiTokens:
    """An `Authenticator` for `rsp_` bearer tokens; `reload()` re-reads the file (SIGHUP), keeping the
    tokens in force when the file cannot be read."""

    def __init__(self, path: Path, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.path = path
        self._clock = clock
        self._tokens = load(path)

    def reload(self) -> bool:
        try:
            self._tokens = load(self.path)
        except TokenFileError as exc:
            log.error("API tokens not reloaded, the previous ones stay: %s", exc)  # noqa: TRY400 - no traceback: the message says it
            return False
        log.info("API tokens reloaded from %s: %d", self.path, len(self._tokens))
        return True

    async def authenticate(self, request: web.Request) -> Operator | None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        token = given.strip()
        if scheme.lower() != "bearer" or not token.startswith(PREFIX):
            return None
        hashed = digest(token).encode()
        found = None
        for entry in self._tokens:  # every entry compared: no early exit to time
            if hmac.compare_digest(hashed, entry.sha256.encode()):
                found = entry
        if found is None:
            raise Refused("unknown API token")
        state = found.state(self._clock())
        if state == "revoked":
            raise Refused(f"API token {found.name!r} was revoked")
        if state == "expired":
            raise Refused(f"API token {found.name!r} expired at {found.expires_at.isoformat()}: create a new one")
        return found.operator
