"""What `responder config check` verifies before a start: every file the service reads, every secret (its
presence and strength, never its value), the journal, and whether each hub and Kafka answer.

Each check returns the problems it found, one line each, `FILE:LINE:COL: message` where the problem has a
place in a file; nothing here prints or exits (the command does).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import ssl
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from responder.config import AUTHENTICATING_SECRETS, MIN_SECRET_CHARS, SECRETS, ConfigError, Settings, load_settings
from responder.inventory import HubSpec, Inventory, InventoryError

SERVICE_USER = "responder"
DEFAULT_TIMEOUT_S = 5.0


@dataclass(slots=True)
class Report:
    """The problems found, in the order checked, and what was found fine (for the summary line)."""

    problems: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"ok: {', '.join(self.passed)}"
        return f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''} found; fine: " + (
            ", ".join(self.passed) or "nothing"
        )


def _count(items: Sequence[object], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def load(config: Path) -> tuple[Settings | None, list[str]]:
    """The settings with their `*_file` secrets left unread (`secrets` checks each file), or the problems that
    stop them from loading. Raises FileNotFoundError when `config` does not exist."""
    try:
        return load_settings(config, defer_secret_files=True), []
    except ConfigError as exc:
        return None, exc.problems


def _positions(path: Path) -> dict[Any, tuple[int, int]]:
    # The positions reader comes with the rule loader, slow to import: only when a problem needs a place.
    from responder.policy.yamlpos import YamlError, load_with_positions  # noqa: PLC0415

    try:
        _, positions = load_with_positions(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, YamlError):
        return {}
    return positions


def _at(path: Path, loc: tuple[Any, ...]) -> str:
    """`FILE:LINE:COL` of `loc` in the YAML file `path` (of its nearest enclosing key that is there)."""
    from responder.policy.yamlpos import position  # noqa: PLC0415

    positions = _positions(path)
    if not positions:
        return str(path)
    line, column = position(positions, loc)
    return f"{path}:{line}:{column}"


def _where_set(config: Path, name: str) -> str:
    """Where a setting came from, for a problem line: the environment variable, or its place in the file."""
    variable = f"RESPONDER_{name.upper()}"
    if variable in os.environ:
        return variable
    return _at(config, (name,))


def _service_ids() -> tuple[int, int] | None:
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def _readable_by_service(info: os.stat_result, ids: tuple[int, int] | None) -> bool:
    if ids is None or os.geteuid() != 0:
        return True  # checked by os.access as the user running the check
    uid, gid = ids
    mode = info.st_mode
    return (
        (info.st_uid == uid and bool(mode & stat.S_IRUSR))
        or (info.st_gid == gid and bool(mode & stat.S_IRGRP))
        or bool(mode & stat.S_IROTH)
    )


def secrets(settings: Settings, config: Path) -> list[str]:
    """Each configured secret: its file present, readable by the service, not readable by everyone, not empty,
    and (for those that authenticate a caller) at least MIN_SECRET_CHARS long. Values are never said."""
    problems: list[str] = []
    ids = _service_ids()
    for name in SECRETS:
        path: Path | None = getattr(settings, f"{name}_file")
        if path is None:
            value = getattr(settings, name)
            short = value is not None and len(value.get_secret_value().strip()) < MIN_SECRET_CHARS
            if short and name in AUTHENTICATING_SECRETS:
                problems.append(
                    f"{_where_set(config, name)}: {name} is shorter than {MIN_SECRET_CHARS} characters: "
                    f"use e.g. `openssl rand -hex 32`"
                )
            continue
        where = _where_set(config, f"{name}_file")
        create = (
            f"create it: (umask 027; openssl rand -hex 32 > {path}) && chown root:{SERVICE_USER} {path}"
            if name in AUTHENTICATING_SECRETS
            else f"write the secret into it, mode 0640 root:{SERVICE_USER}"
        )
        try:
            info = path.stat()
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            problems.append(f"{where}: {name}_file {path} does not exist: {create}")
            continue
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            problems.append(f"{where}: {name}_file {path}: cannot read: {why}")
            continue
        if not _readable_by_service(info, ids):
            problems.append(
                f"{where}: {name}_file {path} is not readable by the {SERVICE_USER} user: "
                f"chown root:{SERVICE_USER} {path} && chmod 0640 {path}"
            )
        elif info.st_mode & stat.S_IROTH:
            problems.append(f"{where}: {name}_file {path} is readable by every user: chmod o-rwx {path}")
        elif not text:
            problems.append(f"{where}: {name}_file {path} is empty: {create}")
        elif name in AUTHENTICATING_SECRETS and len(text) < MIN_SECRET_CHARS:
            problems.append(
                f"{where}: {name}_file {path} holds fewer than {MIN_SECRET_CHARS} characters: "
                f"use e.g. `openssl rand -hex 32`"
            )
    return problems


def inventory(settings: Settings, config: Path) -> tuple[Inventory | None, list[str]]:
    """The inventory loaded, with a problem for each of its lines that is wrong, for a missing one, and for
    one that lists nothing to enforce on; each hub's client key must be there for the service to read."""
    path = settings.inventory
    if path is None:
        return None, [
            f"{config}: no `inventory:` set: the service would enforce nothing; "
            "enroll a hub (`responder hubs enroll`) and set inventory: /etc/responder/inventory.yaml"
        ]
    if not path.is_file():
        return None, [f"{_where_set(config, 'inventory')}: inventory {path} does not exist"]
    try:
        inv = Inventory.load(path)
    except InventoryError as exc:
        return None, str(exc).splitlines()
    problems: list[str] = []
    if not inv.hubs and not inv.overlays:
        problems.append(f"{path}: lists no hubs: enroll one with `responder hubs enroll ADDRESS`")
    ids = _service_ids()
    for index, hub in enumerate(inv.hubs):
        key = hub.ssh.client_key
        where = _at(path, ("hubs", index, "ssh", "client_key"))
        try:
            info = key.stat()
        except OSError as exc:
            problems.append(f"{where}: hub {hub.name}: client_key {key}: {exc.strerror}")
            continue
        if not _readable_by_service(info, ids) or not os.access(key, os.R_OK):
            problems.append(f"{where}: hub {hub.name}: client_key {key} is not readable by the {SERVICE_USER} user")
        elif info.st_mode & (stat.S_IROTH | stat.S_IWOTH):
            problems.append(f"{where}: hub {hub.name}: client_key {key} is open to every user: chmod o-rwx {key}")
    return inv, problems


def operators(settings: Settings) -> tuple[str, list[str]]:
    """Who may use the admin API: the API tokens file loads (safe mode, valid entries), and someone can."""
    from responder.service.api_tokens import TokenFileError, load  # noqa: PLC0415 - keeps aiohttp out

    o = settings.operators
    ways: list[str] = []
    if o.oidc is not None:
        ways.append(f"OIDC from {o.oidc.issuer}")
    if o.tokens_file is not None:
        try:
            ways.append(_count(load(o.tokens_file), "API token"))
        except TokenFileError as exc:
            return "", [f"operators.tokens_file: {exc}"]
    bootstrap = o.bootstrap_token and (settings.admin_token is not None or settings.admin_token_file is not None)
    if bootstrap:
        ways.append("the bootstrap admin token")
    # None at all is a choice (an unset secret turns its route off): the admin API then answers 503.
    return f"operators ({', '.join(ways) or 'none: the admin API answers 503'})", []


def rules(settings: Settings) -> tuple[str, list[str]]:
    """The rule files as the service loads them (every problem as file:line:col), and the SIEM connectors
    the Kafka topics name."""
    from responder.policy import PolicyError, load_rules  # noqa: PLC0415 - CEL and the rule models: slow import

    try:
        loaded = load_rules(settings.rules)
    except PolicyError as exc:
        return "", [str(p) for p in exc.problems]
    problems: list[str] = []
    if settings.kafka is not None and settings.kafka.topics:
        from responder.ingest.siem import ConnectorError, load_connectors  # noqa: PLC0415

        try:
            formats = load_connectors(settings.connectors)
        except ConnectorError as exc:
            problems.append(str(exc))
        else:
            problems += [
                f"kafka topic {t.name}: format {t.format!r} is not a connector in {settings.connectors} "
                f"(known: {', '.join(sorted(formats))})"
                for t in settings.kafka.topics
                if t.format not in formats
            ]
    return f"rules ({len(loaded.signals)} signals, {len(loaded.responses)} responses)", problems


def _sqlite_path(url: str) -> Path:
    path = url.removeprefix("sqlite:")
    return Path("/" + path.lstrip("/") if path.startswith("///") else path.removeprefix("//"))


def _public(dsn: str) -> str:
    """The server and database of a DSN, without the credentials it may carry."""
    url = urlsplit(dsn)
    return f"postgresql://{url.hostname or ''}{f':{url.port}' if url.port else ''}{url.path}"


async def journal(settings: Settings, timeout_s: float, *, offline: bool) -> list[str]:
    """SQLite: its directory exists and the service user can write there. PostgreSQL: a connection and a
    query within `timeout_s` (skipped offline)."""
    url = settings.journal
    if url.startswith(("postgresql://", "postgres://")):
        return [] if offline else await _postgres(url, timeout_s)
    if not url.startswith("sqlite:"):
        return [f"journal {url!r}: expected sqlite:///PATH or postgresql://..."]
    return _sqlite(url)


async def _postgres(url: str, timeout_s: float) -> list[str]:
    import asyncpg  # noqa: PLC0415 - only where the journal is PostgreSQL

    try:
        async with asyncio.timeout(timeout_s):
            conn = await asyncpg.connect(url, timeout=timeout_s)
            try:
                await conn.fetchval("SELECT 1")
            finally:
                await conn.close()
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        return [f"journal {_public(url)}: cannot connect within {timeout_s:g}s: {exc or type(exc).__name__}"]
    return []


def _sqlite(url: str) -> list[str]:
    directory = _sqlite_path(url).parent
    if not directory.is_dir():
        return [f"journal {url}: directory {directory} does not exist (deploy/install.sh creates it)"]
    writable = os.access(directory, os.W_OK | os.X_OK)
    ids = _service_ids()
    if ids is not None and os.geteuid() == 0:
        # root may write anywhere: what counts is whether the service user can.
        info, (uid, gid) = directory.stat(), ids
        mode = info.st_mode
        writable = (
            (info.st_uid == uid and mode & stat.S_IWUSR and mode & stat.S_IXUSR)
            or (info.st_gid == gid and mode & stat.S_IWGRP and mode & stat.S_IXGRP)
            or (mode & stat.S_IWOTH and mode & stat.S_IXOTH)
        ) != 0
    if not writable:
        return [
            f"journal {url}: directory {directory} is not writable by the {SERVICE_USER} user: "
            f"chown {SERVICE_USER}:{SERVICE_USER} {directory} && chmod 0700 {directory}"
        ]
    return []


async def _hub(spec: HubSpec, timeout_s: float) -> tuple[str, str] | None:
    """None when an SSH connection with the pinned host key and the client key is made within `timeout_s`;
    else the inventory field at fault (`host_key` or `host`) and why."""
    # The SSH stack loads only when there are hubs to reach.
    from responder.pep.errors import HostKeyMismatch, HubError  # noqa: PLC0415
    from responder.pep.transport import HubTransport, TransportSettings  # noqa: PLC0415

    transport = HubTransport(spec, TransportSettings(connect_timeout=timeout_s, retries=0))
    try:
        async with asyncio.timeout(timeout_s + 1):
            await transport.connection()
    except HostKeyMismatch as exc:
        return "host_key", str(exc)
    except HubError as exc:
        return "host", str(exc)
    except TimeoutError:
        return "host", f"hub {spec.name}: no SSH connection within {timeout_s:g}s"
    finally:
        await transport.close()
    return None


async def hubs(inv: Inventory, path: Path, timeout_s: float) -> list[str]:
    """Every hub connected to at once; a problem line for each that does not answer (placed at its `host`),
    or whose host key is not the pinned one (at its `host_key`)."""
    async with asyncio.TaskGroup() as group:
        tries = [group.create_task(_hub(spec, timeout_s)) for spec in inv.hubs]
    problems: list[str] = []
    for index, task in enumerate(tries):
        if (fault := task.result()) is not None:
            field, why = fault
            problems.append(f"{_at(path, ('hubs', index, 'ssh', field))}: {why}")
    return problems


async def kafka(settings: Settings, timeout_s: float) -> list[str]:
    """A bootstrap connection and the cluster's metadata within `timeout_s`, with the service's TLS and SASL
    options; each configured topic must exist."""
    if settings.kafka is None:
        return []
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    from responder.ingest.kafka import sasl_refusal, tls_refusal  # noqa: PLC0415
    from responder.service.sources import KafkaTLSError, client_options  # noqa: PLC0415

    bootstrap = settings.kafka.bootstrap_servers
    try:
        options = client_options(settings)
    except KafkaTLSError as exc:
        return [f"kafka {bootstrap}: {exc}"]
    timeout_ms = int(timeout_s * 1000)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, connections_max_idle_ms=timeout_ms * 2, **options
    )
    try:
        async with asyncio.timeout(timeout_s):
            await consumer.start()
            topics = await consumer.topics()
    except TimeoutError:
        return [f"kafka {bootstrap}: no metadata within {timeout_s:g}s: is the broker up and reachable?"]
    except (KafkaError, OSError, KeyError) as exc:
        # aiokafka's SCRAM client raises KeyError when the broker refuses the proof.
        said = "the broker refused the credentials" if isinstance(exc, KeyError) else str(exc) or type(exc).__name__
        context = options.get("ssl_context")
        if isinstance(context, ssl.SSLContext):
            said = await tls_refusal(bootstrap, context, said) or said
        if options.get("sasl_mechanism"):
            said = await sasl_refusal(bootstrap, options) or said
        return [f"kafka {bootstrap}: {said}"]
    finally:
        await consumer.stop()
    return [f"kafka {bootstrap}: topic {t.name} does not exist" for t in settings.kafka.topics if t.name not in topics]


async def check(config: Path, *, offline: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S) -> Report:
    """Every check, in the order an operator fixes things; the reachability ones at once, each bounded by
    `timeout_s`. Raises FileNotFoundError when `config` does not exist."""
    report = Report()
    settings, problems = load(config)
    if settings is None:
        report.problems += problems
        return report
    report.passed.append("configuration")

    def add(name: str, found: Sequence[str]) -> None:
        if found:
            report.problems.extend(found)
        elif name:
            report.passed.append(name)

    add("secrets", secrets(settings, config))
    add(*operators(settings))
    inv, found = inventory(settings, config)
    hubs_named = f"inventory ({_count(inv.hubs, 'hub')}, {_count(inv.peers, 'peer')})" if inv is not None else ""
    add(hubs_named, found)
    summary, found = await asyncio.to_thread(rules, settings)
    add(summary, found)
    add("journal", await journal(settings, timeout_s, offline=offline))
    if offline:
        report.passed.append("reachability not checked (--offline)")
        return report
    checks: dict[str, asyncio.Task[list[str]]] = {}
    async with asyncio.TaskGroup() as group:
        if inv is not None and inv.hubs and settings.inventory is not None:
            checks[f"{_count(inv.hubs, 'hub')} reachable"] = group.create_task(hubs(inv, settings.inventory, timeout_s))
        if settings.kafka is not None:
            checks["kafka reachable"] = group.create_task(kafka(settings, timeout_s))
    for name, task in checks.items():
        add(name, task.result())
    return report
