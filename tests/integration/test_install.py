"""`deploy/install.sh` into a staging root, as a package build would run it, and the installed unit's command
started from what was installed, as the unit's user: inside a private mount namespace in which the staging
root's /etc/responder, /opt/responder and /var/lib/responder sit at their real paths (over copy-on-write
layers of this machine's /etc, /opt and /var/lib, so nothing of the machine's own changes)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.support.wheel import build_wheel

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "install.sh"
# What systemd gives a service: none of the test's variables, and / as the working directory (PYTHONPATH
# or this tree as the working directory would put its package before the installed one).
SERVICE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

# The staging root mounted at the real paths; the machine's /etc, /opt and /var/lib under throw-away
# overlays so the mount points can be made without touching them.
NAMESPACE_SCRIPT = r"""
set -e
scratch=$1 root=$2; shift 2
mount -t tmpfs tmpfs "$scratch"
for t in /etc /opt /var/lib; do
  n=$(echo "$t" | tr / _); mkdir -p "$scratch/$n/u" "$scratch/$n/w"
  mount -t overlay overlay -o "lowerdir=$t,upperdir=$scratch/$n/u,workdir=$scratch/$n/w" "$t"
done
for p in etc/responder opt/responder var/lib/responder; do
  mkdir -p "/$p"; mount --bind "$root/$p" "/$p"
done
exec "$@"
"""


@dataclass
class Staged:
    base: Path
    root: Path
    wheel: Path
    python: str
    as_service_user: bool
    """Whether the installed command can run as the staged `responder` user: only with an interpreter outside
    directories that user cannot enter (a root-only pyenv, say)."""

    def install(self) -> subprocess.CompletedProcess[str]:
        """install.sh into the staging root: the wheel alone, its dependencies being the test interpreter's."""
        argv = [str(INSTALL), "--root", str(self.root), "--wheel", str(self.wheel), "--python", self.python]
        # Under root's strictest common umask: what the service reads must come out readable all the same.
        umask = ["sh", "-c", 'umask 077 && exec "$@"', "sh"]
        done = subprocess.run([*umask, *argv, "--no-deps"], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def ids(self) -> tuple[int, int]:
        passwd = (self.root / "etc/passwd").read_text().splitlines()
        (entry,) = [line for line in passwd if line.startswith("responder:")]
        fields = entry.split(":")
        return int(fields[2]), int(fields[3])

    def argv_inside(self, *command: str, service_user: bool = False) -> list[str]:
        """`command` in a mount namespace with the staging root at its real paths; as the staged `responder`
        user (its numeric ids, as systemd's User= would) when asked and possible, else as root."""
        scratch = self.base / "scratch"
        scratch.mkdir(exist_ok=True)
        if service_user and self.as_service_user:
            uid, gid = self.ids()
            command = ("setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *command)
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", NAMESPACE_SCRIPT, "sh",
                str(scratch), str(self.root), *command]  # fmt: skip


def _venv_python() -> tuple[str, bool]:
    """The interpreter for the installed venv, and whether the service user can run it: the system's python3
    when it is this interpreter's version (the test's dependencies then load in it), else this one's base."""
    system = Path("/usr/bin/python3")
    if system.exists():
        version = subprocess.run(
            [str(system), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if version == str(sys.version_info[:2]):
            return str(system), True
    return getattr(sys, "_base_executable", sys.executable), False


@pytest.fixture(scope="module")
def staged() -> Iterator[Staged]:
    if os.geteuid() != 0:
        pytest.fail("the install test needs root (useradd --root, chown, mount namespaces)")
    # Not pytest's tmp_path: the venv's scripts name their interpreter by this path, and it must be
    # traversable (tmp_path's parents are 0700).
    base = Path(tempfile.mkdtemp(prefix="responder-install-"))
    base.chmod(0o755)
    try:
        wheel = build_wheel(ROOT, base / "dist")
        staged = Staged(base, base / "root", wheel, *_venv_python())
        staged.install()
        # The dependencies: this interpreter's, by a path entry (the venv's own `responder` comes first).
        venv_site = next((staged.root / "opt/responder/.venv/lib").glob("python3*/site-packages"))
        (venv_site / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        yield staged
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _mode_owner(path: Path) -> tuple[str, int, int]:
    info = path.stat()
    return oct(stat.S_IMODE(info.st_mode)), info.st_uid, info.st_gid


def test_install_lays_out_the_user_directories_modes_and_unit(staged: Staged) -> None:
    root = staged.root
    passwd = (root / "etc/passwd").read_text()
    entry = re.search(r"^responder:x:(\d+):(\d+):[^:]*:/var/lib/responder:/usr/sbin/nologin$", passwd, re.M)
    assert entry is not None, passwd
    uid, gid = staged.ids()
    assert uid < 1000 and re.search(rf"^responder:x:{gid}:", (root / "etc/group").read_text(), re.M)

    etc = root / "etc/responder"
    assert _mode_owner(etc) == ("0o750", 0, gid)
    for name in ("responder.yaml", "inventory.yaml"):
        assert _mode_owner(etc / name) == ("0o640", 0, gid)
        assert (etc / name).read_bytes() == (ROOT / "deploy/etc" / name).read_bytes()
    for shipped in (ROOT / "rules").rglob("*.yaml"):
        copied = etc / "rules" / shipped.relative_to(ROOT / "rules")
        assert copied.read_bytes() == shipped.read_bytes()
        assert _mode_owner(copied) == ("0o640", 0, gid)
    assert (etc / "connectors/wazuh.yaml").is_file()
    assert _mode_owner(etc / "secrets") == ("0o750", 0, gid)
    token = etc / "secrets/admin-token"
    assert _mode_owner(token) == ("0o640", 0, gid)
    assert re.fullmatch(r"[0-9a-f]{64}\n", token.read_text())
    assert not (etc / "secrets/okta").exists()  # agreed with Okta: the operator writes it

    assert _mode_owner(root / "var/lib/responder") == ("0o700", uid, gid)
    unit = root / "etc/systemd/system/responder.service"
    assert unit.read_bytes() == (ROOT / "deploy/systemd/responder.service").read_bytes()
    assert re.search(r"^User=responder$", unit.read_text(), re.M)
    executable = shlex.split(_exec_start(unit))[0]
    assert executable == "/opt/responder/.venv/bin/responder"
    assert os.access(root / executable.lstrip("/"), os.X_OK)
    assert (root / "usr/local/bin/responder").readlink() == Path(executable)
    package = next((root / "opt/responder/.venv/lib").glob("python3*/site-packages/responder/__init__.py"))
    assert _mode_owner(package)[0] == "0o644" and _mode_owner(root / "opt/responder/.venv")[0] == "0o755"


def test_a_second_run_changes_nothing_and_keeps_an_edited_config(staged: Staged) -> None:
    assert "nothing to change" in staged.install().stdout

    (staged.root / "etc/responder").chmod(0o755)  # a directory's mode is put right
    assert "set /etc/responder/ to 0:" in staged.install().stdout
    assert _mode_owner(staged.root / "etc/responder")[0] == "0o750"

    config = staged.root / "etc/responder/responder.yaml"
    edited = config.read_text() + "# the operator's own line\n"
    config.write_text(edited)
    (staged.root / "etc/responder/rules/identity.yaml").unlink()  # a shipped file gone comes back
    out = staged.install().stdout
    assert "kept /etc/responder/responder.yaml" in out
    assert "created /etc/responder/rules/identity.yaml" in out and "1 change(s) made" in out
    assert config.read_text() == edited
    assert "nothing to change" in staged.install().stdout


def _exec_start(unit: Path) -> str:
    (line,) = [text for text in unit.read_text().splitlines() if text.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=")


async def _inside(staged: Staged, *command: str) -> tuple[int, str]:
    """A command run as the service is, with the staging root at its real paths: exit status, output."""
    process = await asyncio.create_subprocess_exec(
        *staged.argv_inside(*command), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=SERVICE_ENV, cwd="/",
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_installed_units_command_serves_and_stops_cleanly(staged: Staged) -> None:
    etc = staged.root / "etc/responder"
    venv_bin = "/opt/responder/.venv/bin"
    _, gid = staged.ids()

    # Fresh from the install, the check names what is left to the operator, one line each.
    code, out = await _inside(staged, f"{venv_bin}/responder", "config", "check", "--offline")
    lines = out.splitlines()
    assert code == 1, out
    assert lines[0].startswith("/etc/responder/responder.yaml:") and "okta_secret_file" in lines[0]
    assert "does not exist: create it" in lines[0]
    assert lines[1] == "/etc/responder/inventory.yaml: lists no hubs: enroll one with `responder hubs enroll ADDRESS`"
    assert lines[2].startswith("2 problems found")

    okta = etc / "secrets/okta"
    okta.write_text(secrets.token_hex(32) + "\n")
    os.chown(okta, 0, gid)
    okta.chmod(0o640)
    port = _free_port()
    config = etc / "responder.yaml"
    config.write_text(re.sub(r"(?m)^  port: 8080$", f"  port: {port}", config.read_text()))

    code, out = await _inside(staged, f"{venv_bin}/python", "-c", "import responder; print(responder.__file__)")
    assert code == 0 and out.startswith("/opt/responder/.venv/lib/"), out  # the installed package, not this tree

    log = staged.base / "service.log"
    # As the unit's User=responder: it reads the configuration and the secrets through its group, and writes
    # the journal in its own directory; what install.sh gave it must be enough.
    unit = staged.root / "etc/systemd/system/responder.service"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *staged.argv_inside(*shlex.split(_exec_start(unit)), service_user=True),
            stdout=out, stderr=out, env=SERVICE_ENV, cwd="/",
        )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(30):
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as answer:
                        if answer.status == 200:
                            assert await answer.json() == {"status": "ok"}
                            break
                assert process.returncode is None, log.read_text()[-3000:]
                await asyncio.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0, log.read_text()[-3000:]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    journal = staged.root / "var/lib/responder/journal.db"
    assert _mode_owner(journal) == ("0o600", *(staged.ids() if staged.as_service_user else (0, 0)))
    assert not await asyncio.to_thread(Path("/etc/responder").exists)  # the machine's own /etc untouched


def test_install_sh_says_what_it_does_and_refuses_an_unknown_option() -> None:
    done = subprocess.run([str(INSTALL), "--help"], capture_output=True, text=True, timeout=10, check=False)
    assert done.returncode == 0 and "--root DIR" in done.stdout and "/opt/responder/.venv" in done.stdout
    done = subprocess.run([str(INSTALL), "--frobnicate"], capture_output=True, text=True, timeout=10, check=False)
    assert (done.returncode, done.stderr) == (2, "install.sh: unknown option --frobnicate (see --help)\n")
