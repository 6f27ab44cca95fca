"""API tokens for automation, as an operator keeps them: created, listed and revoked with the CLI, used
against the real service, refused once expired or revoked (after SIGHUP's reload); the file holds hashes only."""

from __future__ import annotations

import asyncio
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import make_mocked_request
from typer.testing import CliRunner, Result

from responder.cli import app
from responder.config import Settings
from responder.service.api_tokens import ApiTokens, TokenFileError, create, digest, load
from responder.service.operators import Operator, Refused, Role
from tests.support.service import no_hubs, running

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def _create(path: Path, name: str, role: str, expires: str = "30d") -> str:
    return _cli("operators", "token", "create", name, "--role", role, "--expires", expires, "--tokens-file", str(path))


async def _as(token: str, tokens: ApiTokens) -> Operator | None:
    request = make_mocked_request("GET", "/api/decisions", headers={"Authorization": f"Bearer {token}"})
    return await tokens.authenticate(request)


def test_create_prints_the_token_once_and_the_file_keeps_only_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    token = _create(path, "ci-deploy", "approver").strip()
    assert token.startswith("rsp_") and len(token) == 4 + 43  # 32 random bytes, base64url
    text = path.read_text()
    assert token not in text and token.removeprefix("rsp_") not in text
    assert digest(token) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (entry,) = yaml.safe_load(text)["tokens"]
    assert entry["name"] == "ci-deploy" and entry["role"] == "approver"
    lifetime = datetime.fromisoformat(entry["expires_at"]) - datetime.fromisoformat(entry["created_at"])
    assert lifetime == timedelta(days=30)


def test_list_shows_each_token_with_its_state_and_revoke_marks_it(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    _create(path, "ci", "viewer")
    _create(path, "soar", "admin", "12h")
    _cli("operators", "token", "revoke", "ci", "--tokens-file", str(path))
    rows = json.loads(_cli("operators", "token", "list", "--json", "--tokens-file", str(path)))
    assert [(r["name"], r["role"], r["state"]) for r in rows] == [
        ("ci", "viewer", "revoked"),
        ("soar", "admin", "valid"),
    ]
    assert "soar" in _cli("operators", "token", "list", "--tokens-file", str(path))


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["create", "x", "--role", "boss"], "role must be one of"),
        (["create", "x", "--role", "admin", "--expires", "forever"], "--expires must be"),
        (["create", "x", "--role", "admin", "--expires", "999d"], "at most 400d"),
        (["create", "Bad Name", "--role", "admin"], "a token name is"),
        (["revoke", "nobody"], "no token named 'nobody'"),
    ],
)
def test_a_wrong_command_says_what_is_wrong_in_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    result = CliRunner().invoke(app, ["operators", "token", *args, "--tokens-file", str(tmp_path / "t.yaml")])
    assert result.exit_code == 2
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_name_is_not_given_twice(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    _create(path, "ci", "viewer")
    result = CliRunner().invoke(
        app, ["operators", "token", "create", "ci", "--role", "admin", "--tokens-file", str(path)]
    )
    assert result.exit_code == 2 and "exists" in result.stderr


async def test_a_token_is_its_named_operator_until_it_expires(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    token = _create(path, "soar", "approver", "1h").strip()
    now = datetime.now(UTC)
    clock = [now]
    tokens = ApiTokens(path, lambda: clock[0])
    assert await _as(token, tokens) == Operator("token:soar", Role.APPROVER, "token")
    clock[0] = now + timedelta(hours=2)
    with pytest.raises(Refused, match=r"API token 'soar' expired at .*create a new one"):
        await _as(token, tokens)
    with pytest.raises(Refused, match="unknown API token"):
        await _as("rsp_" + "A" * 43, tokens)
    assert await _as("not-an-api-token", tokens) is None  # the bootstrap token's or an IdP's, perhaps


def test_a_tokens_file_others_may_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    _create(path, "ci", "viewer")
    path.chmod(0o664)
    with pytest.raises(TokenFileError, match="writable by group or others: chmod 600"):
        load(path)


async def test_the_service_takes_new_and_revoked_tokens_on_reload(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    ci = _create(path, "ci", "viewer").strip()
    settings = Settings(
        journal=f"sqlite:///{tmp_path}/journal.db", inventory=no_hubs(tmp_path), rules=(ROOT / "rules",),
        operators={"tokens_file": path},  # type: ignore[arg-type]
    )  # fmt: skip
    async with running(settings) as (service, base), aiohttp.ClientSession() as http:

        async def status(token: str) -> tuple[int, str]:
            async with http.get(f"{base}/api/decisions", headers={"Authorization": f"Bearer {token}"}) as r:
                return r.status, await r.text()

        assert (await status(ci))[0] == 200
        later = _create(path, "later", "viewer").strip()
        assert (await status(later))[0] == 401  # not before the reload
        _cli("operators", "token", "revoke", "ci", "--tokens-file", str(path))
        service.request_reload()
        assert (await status(later))[0] == 200
        code, body = await status(ci)
        assert code == 401 and "API token 'ci' was revoked" in body
        path.write_text("tokens: [{oops")
        service.request_reload()  # a broken file keeps the tokens in force
        assert (await status(later))[0] == 200


async def test_the_cli_calls_the_service_with_the_operators_own_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    viewer = _create(path, "reader", "viewer").strip()
    settings = Settings(
        journal=f"sqlite:///{tmp_path}/journal.db", inventory=no_hubs(tmp_path), rules=(ROOT / "rules",),
        operators={"tokens_file": path},  # type: ignore[arg-type]
    )  # fmt: skip
    config = tmp_path / "config.yaml"
    config.write_text(f"journal: sqlite:///{tmp_path}/journal.db\n")
    async with running(settings) as (_, base):

        def cli(*args: str, token: str | None) -> Result:
            env = {"RESPONDER_OPERATOR_TOKEN": token, "RESPONDER_ADMIN_TOKEN": None, "RESPONDER_ADMIN_TOKEN_FILE": None}
            return CliRunner().invoke(app, [*args, "--url", base, "--config", str(config)], env=env)

        listed = await asyncio.to_thread(cli, "decisions", "--json", token=viewer)
        assert listed.exit_code == 0, listed.output
        refused = await asyncio.to_thread(cli, "undo", "no-such-decision", token=viewer)
        assert refused.exit_code == 2 and "403: token:reader is a viewer: this needs admin" in refused.stderr
        missing = await asyncio.to_thread(cli, "decisions", token=None)
        assert missing.exit_code == 2 and "set RESPONDER_OPERATOR_TOKEN" in missing.stderr


def test_an_existing_file_keeps_its_mode_so_the_service_user_can_still_read_it(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    _create(path, "first", "viewer")
    path.chmod(0o640)  # root:responder, as the README says
    _create(path, "second", "viewer")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [t.name for t in load(path)] == ["first", "second"]


async def test_tokens_created_at_the_same_time_are_all_kept(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    now = datetime.now(UTC)
    await asyncio.gather(
        *(asyncio.to_thread(create, path, f"bot-{n}", Role.VIEWER, timedelta(days=1), now) for n in range(8))
    )
    assert sorted(t.name for t in load(path)) == [f"bot-{n}" for n in range(8)]
