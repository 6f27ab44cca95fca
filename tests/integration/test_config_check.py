"""`responder config check` as an operator runs it: a good setup passes, and each thing wrong (a missing
secret, a broken rule, a hub that does not answer or is not the pinned one, Kafka down) is one line and
exit 1. The hub is a real SSH server on loopback (asyncssh) with its own host key; Kafka is the real
broker, or a loopback port nothing listens on."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
import yaml

from tests.support.process import free_port
from tests.support.tls import TestCA, loopback_socket, tls_terminator

ROOT = Path(__file__).resolve().parents[2]
RESPONDER = str(Path(sys.executable).with_name("responder"))
TOKEN = "0123456789abcdef0123456789abcdef"


@dataclass
class SshHub:
    """An SSH server on loopback that accepts one client key: what `config check` connects to."""

    port: int
    host_key: str
    client_key: Path


@pytest.fixture
async def ssh_hub(tmp_path: Path) -> AsyncIterator[SshHub]:
    host = asyncssh.generate_private_key("ssh-ed25519")
    client = asyncssh.generate_private_key("ssh-ed25519")
    client_key = tmp_path / "hub_ed25519"
    client.write_private_key(str(client_key))
    client_key.chmod(0o600)
    server = await asyncssh.create_server(
        asyncssh.SSHServer, "127.0.0.1", 0, server_host_keys=[host],
        authorized_client_keys=asyncssh.import_authorized_keys(client.export_public_key().decode()),
    )  # fmt: skip
    try:
        port = server.sockets[0].getsockname()[1]
        yield SshHub(port, host.export_public_key().decode().strip(), client_key)
    finally:
        server.close()
        await server.wait_closed()


def _setup(tmp: Path, hub: SshHub, **config: object) -> Path:
    """A complete setup in `tmp`, as install.sh lays one out, with one hub: the configuration's path."""
    secrets = tmp / "secrets"
    secrets.mkdir(mode=0o750)
    (secrets / "admin-token").write_text(TOKEN + "\n")
    (secrets / "admin-token").chmod(0o640)
    shutil.copytree(ROOT / "rules", tmp / "rules")
    hub_entry = {
        "name": "hub1",
        "tunnel_network": "10.100.0.0/24",
        "address": "10.100.0.1",
        "ssh": {"host": "127.0.0.1", "port": hub.port, "user": "responder", "host_key": hub.host_key,
                "client_key": str(hub.client_key)},
    }  # fmt: skip
    (tmp / "inventory.yaml").write_text(yaml.safe_dump({"hubs": [hub_entry], "peers": []}, sort_keys=False))
    (tmp / "state").mkdir(mode=0o700)
    settings = {
        "inventory": str(tmp / "inventory.yaml"),
        "rules": [str(tmp / "rules")],
        "connectors": str(ROOT / "connectors"),
        "journal": f"sqlite:///{tmp}/state/journal.db",
        "admin_token_file": str(secrets / "admin-token"),
        **config,
    }
    path = tmp / "responder.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


async def _check(config: Path, *args: str) -> tuple[int, list[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")}
    process = await asyncio.create_subprocess_exec(
        RESPONDER, "config", "check", "--config", str(config), "--timeout", "2", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode().splitlines(), err.decode()


async def test_a_good_setup_passes_offline_and_online(tmp_path: Path, ssh_hub: SshHub) -> None:
    config = _setup(tmp_path, ssh_hub)
    code, lines, err = await _check(config, "--offline")
    assert (code, err) == (0, ""), lines
    (summary,) = lines
    assert re.fullmatch(
        r"ok: configuration, secrets, operators \(the bootstrap admin token\), inventory \(1 hub, 0 peers\), "
        r"rules \(\d+ signals, \d+ responses\), "
        r"journal, reachability not checked \(--offline\)",
        summary,
    ), summary
    code, lines, err = await _check(config)
    assert code == 0, lines
    assert lines[-1].endswith("journal, 1 hub reachable"), lines


async def test_a_missing_secret_is_one_line_that_says_how_to_create_it(tmp_path: Path, ssh_hub: SshHub) -> None:
    okta = tmp_path / "secrets" / "okta"
    config = _setup(tmp_path, ssh_hub, okta_secret_file=str(okta))
    code, lines, _ = await _check(config, "--offline")
    assert code == 1
    (problem, summary) = lines
    assert problem.startswith(f"{config}:7:1: okta_secret_file {okta} does not exist: create it: ")
    assert "openssl rand -hex 32" in problem and "chown root:responder" in problem
    assert summary.startswith("1 problem found; fine: configuration, operators (the bootstrap admin token), inventory")


async def test_secret_values_are_never_printed_and_weak_or_open_ones_are_named(tmp_path: Path, ssh_hub: SshHub) -> None:
    okta, entra = tmp_path / "okta", tmp_path / "entra"
    okta.write_text("short-secret\n")
    okta.chmod(0o640)
    entra.write_text("an-entra-client-state-that-is-long-enough\n")
    entra.chmod(0o644)
    config = _setup(tmp_path, ssh_hub, okta_secret_file=str(okta), entra_client_state_file=str(entra))
    code, lines, _ = await _check(config, "--offline")
    assert code == 1
    assert lines[:2] == [
        f"{config}:7:1: okta_secret_file {okta} holds fewer than 16 characters: use e.g. `openssl rand -hex 32`",
        f"{config}:8:1: entra_client_state_file {entra} is readable by every user: chmod o-rwx {entra}",
    ]
    assert len(lines) == 3
    assert "short-secret" not in "\n".join(lines) and "long-enough" not in "\n".join(lines)


async def test_a_bad_rule_file_is_one_line_with_its_position(tmp_path: Path, ssh_hub: SshHub) -> None:
    config = _setup(tmp_path, ssh_hub)
    rules = tmp_path / "rules" / "responses.yaml"
    rules.write_text(rules.read_text().replace("min_score: 40", "min_score: forty", 1))
    code, lines, _ = await _check(config, "--offline")
    assert code == 1
    (problem, summary) = lines
    # The place named is the line the bad value is on, whatever else the shipped rules gain.
    at = next(n for n, line in enumerate(rules.read_text().splitlines(), 1) if "min_score: forty" in line)
    position, message = problem.removeprefix(f"{rules}:").split(": ", 1)
    assert position == f"{at}:5", problem
    assert message.endswith(".min_score: Input should be a valid number, unable to parse string as a number")
    assert message.startswith("responses."), problem
    assert summary.startswith("1 problem found")


async def test_a_hub_not_answering_is_one_line_at_its_host(tmp_path: Path, ssh_hub: SshHub) -> None:
    config = _setup(tmp_path, SshHub(free_port(), ssh_hub.host_key, ssh_hub.client_key))
    code, lines, _ = await _check(config)
    assert code == 1
    (problem, summary) = lines
    assert problem.startswith(f"{tmp_path}/inventory.yaml:6:5: hub hub1: cannot connect to 127.0.0.1:"), problem
    assert summary.startswith("1 problem found")


async def test_a_hub_whose_host_key_is_not_the_pinned_one_is_one_line(tmp_path: Path, ssh_hub: SshHub) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    config = _setup(tmp_path, SshHub(ssh_hub.port, other, ssh_hub.client_key))
    code, lines, _ = await _check(config)
    assert code == 1
    (problem, _) = lines
    assert problem.startswith(f"{tmp_path}/inventory.yaml:9:5: hub hub1: host key does not match the pinned key")


async def test_kafka_not_reachable_is_one_line(tmp_path: Path, ssh_hub: SshHub) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    config = _setup(tmp_path, ssh_hub, kafka={"bootstrap_servers": bootstrap})
    code, lines, _ = await _check(config)
    assert code == 1
    (problem, summary) = lines
    assert problem.startswith(f"kafka {bootstrap}: "), problem
    assert summary.startswith("1 problem found") and "1 hub reachable" in summary


async def test_kafka_whose_certificate_the_ca_does_not_sign_is_one_line_that_says_so(
    tmp_path: Path, ssh_hub: SshHub
) -> None:
    # The handshake is refused before anything is handed on: no broker behind the TLS server is needed.
    listen = loopback_socket()
    port = listen.getsockname()[1]
    server = TestCA(tmp_path, "kafka").issue("broker")
    other = TestCA(tmp_path, "other")
    kafka = {"bootstrap_servers": f"localhost:{port}", "security_protocol": "SSL", "ssl_cafile": str(other.cafile)}
    config = _setup(tmp_path, ssh_hub, kafka=kafka)
    async with tls_terminator(listen, free_port(), server):
        code, lines, _ = await _check(config)
    assert code == 1
    (problem, _) = lines
    assert problem.startswith(f"kafka localhost:{port}: TLS: the broker's certificate is refused ("), problem
    assert "check kafka.ssl_cafile and that the certificate names localhost" in problem


@pytest.mark.kafka
async def test_kafka_reachable_passes_and_a_missing_topic_is_one_line(
    tmp_path: Path, ssh_hub: SshHub, kafka_bootstrap: str
) -> None:
    config = _setup(tmp_path, ssh_hub, kafka={"bootstrap_servers": kafka_bootstrap})
    code, lines, _ = await _check(config)
    assert code == 0, lines
    assert lines[-1].endswith("1 hub reachable, kafka reachable")

    (tmp_path / "topics").mkdir()
    topics = [{"name": "no-such-topic", "format": "wazuh"}]
    config = _setup(tmp_path / "topics", ssh_hub, kafka={"bootstrap_servers": kafka_bootstrap, "topics": topics})
    code, lines, _ = await _check(config)
    assert code == 1
    assert lines[0] == f"kafka {kafka_bootstrap}: topic no-such-topic does not exist"
    assert len(lines) == 2


async def test_a_postgresql_journal_not_answering_is_one_line_without_its_password(
    tmp_path: Path, ssh_hub: SshHub
) -> None:
    dsn = f"postgresql://responder:hunter2-not-shown@127.0.0.1:{free_port()}/responder"
    config = _setup(tmp_path, ssh_hub, journal=dsn)
    code, lines, _ = await _check(config, "--offline")
    assert code == 0, lines  # offline: the database is not tried
    code, lines, _ = await _check(config)
    assert code == 1
    (problem, _) = lines
    assert problem.startswith(f"journal postgresql://127.0.0.1:{dsn.rpartition(':')[2]}: cannot connect within 2s: ")
    assert "hunter2" not in "\n".join(lines)


async def test_a_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    code, lines, err = await _check(tmp_path / "nope.yaml")
    assert (code, lines) == (2, [])
    assert err.strip() == f"error: config file {tmp_path}/nope.yaml does not exist"


async def test_an_api_tokens_file_others_may_write_is_named_with_the_fix(tmp_path: Path, ssh_hub: SshHub) -> None:
    tokens = tmp_path / "api-tokens.yaml"
    tokens.write_text("tokens: []\n")
    tokens.chmod(0o666)
    config = _setup(tmp_path, ssh_hub, operators={"tokens_file": str(tokens)})
    code, lines, _ = await _check(config, "--offline")
    assert code == 1
    assert lines[0] == f"operators.tokens_file: {tokens} is writable by group or others: chmod 600 {tokens}"
    tokens.chmod(0o600)
    code, lines, _ = await _check(config, "--offline")
    assert code == 0 and "operators (0 API tokens, the bootstrap admin token)" in lines[-1], lines
