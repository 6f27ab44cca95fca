"""The shipped sudoers rule for agentless mode, checked by the real `sudo` as the `responder` account: every
command that turned that account into root (or handed it the hub's private key) is refused, and the one
intended command runs as root.

Nothing on this machine changes: a private mount namespace gets its own /etc/sudoers.d (holding only the
shipped rule), an /etc/passwd, /etc/group and /etc/shadow with a `responder` account (no password), and a
/usr/local/sbin holding the hub agent; all of it disappears with the namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "hub"
RULE = DEPLOY / "sudoers.responder"
AGENT = DEPLOY / "responder_hub_agent.py"
A_KEY = "kF+9VpeGbHm8F8jvDQg9y1Yz3ZtDZ8Dg7rWJ4oGQWl4="

# Each was allowed by the rule this one replaces (sudo 1.9.13: `*` matches spaces).
ATTACKS = {
    "tee into sudoers.d": ["/usr/bin/tee", "-a", "/var/lib/responder-hub/x", "/etc/sudoers.d/zz", "/srv/y.revoked"],
    "cat /etc/shadow": ["/usr/bin/cat", "/var/lib/responder-hub/a.revoked", "/etc/shadow", "/srv/b.revoked"],
    "wg private key from a file": ["/usr/bin/wg", "set", "wg0", "private-key", "/etc/shadow"],
    "wg peer for everything": ["/usr/bin/wg", "set", "wg0", "peer", A_KEY, "allowed-ips", "0.0.0.0/0"],
    "wg dump with the private key": ["/usr/bin/wg", "show", "wg0", "dump"],
    "any nft ruleset": ["/usr/sbin/nft", "-j", "-f", "-"],
    "conntrack with extra options": ["/usr/sbin/conntrack", "-D", "-s", "10.0.0.1", "-f", "ipv6"],
    "the agent with a chosen config": ["/usr/local/sbin/responder-hub-agent", "--config", "/tmp/mine.json"],
    "the agent with any argument": ["/usr/local/sbin/responder-hub-agent", "x"],
}
INTENDED = ["/usr/local/sbin/responder-hub-agent"]

NAMESPACE_SETUP = """
set -eu
mount -t tmpfs -o mode=0755 rsp-sudoers /etc/sudoers.d
install -o root -g root -m 0440 "$RULE" /etc/sudoers.d/responder
for f in passwd group shadow; do cp -p /etc/$f "$WORK/$f"; done
grep -q '^responder:' "$WORK/passwd" || echo 'responder:x:64999:64999::/nonexistent:/bin/sh' >> "$WORK/passwd"
grep -q '^responder:' "$WORK/group" || echo 'responder:x:64999:' >> "$WORK/group"
grep -q '^responder:' "$WORK/shadow" || echo 'responder:*:20000:0:99999:7:::' >> "$WORK/shadow"
for f in passwd group shadow; do mount --bind "$WORK/$f" /etc/$f; done
mount -t tmpfs -o mode=0755 rsp-sbin /usr/local/sbin
install -o root -g root -m 0755 "$AGENT" /usr/local/sbin/responder-hub-agent
exec "$PYTHON" -c "$CHECK" "$CASES"
"""

# Run inside the namespace, as root: ask sudo, as `responder`, about each command (`sudo -n -l CMD`
# exits 0 only if the rule lets it run without a password), then run the intended one for real.
CHECK = """
import json, subprocess, sys
cases = json.loads(sys.argv[1])
as_responder = ["runuser", "-u", "responder", "--", "sudo", "-n"]
out = {"listed": {}, "run": None, "attack_run": None}
for label, argv in cases["ask"].items():
    done = subprocess.run([*as_responder, "-l", *argv], capture_output=True, text=True)
    out["listed"][label] = done.returncode
hello = subprocess.run([*as_responder, *cases["run"]], input='{"id": 1, "op": "hello"}\\n',
                       capture_output=True, text=True, timeout=30)
out["run"] = [hello.returncode, hello.stdout, hello.stderr]
attack = subprocess.run([*as_responder, "/usr/bin/tee", "-a", "/etc/sudoers.d/zz"], input="responder ALL=(ALL) ALL\\n",
                        capture_output=True, text=True, timeout=30)
out["attack_run"] = [attack.returncode, attack.stderr, subprocess.run(["ls", "/etc/sudoers.d"],
                     capture_output=True, text=True).stdout.split()]
print(json.dumps(out))
"""


def _ask_sudo(rule: Path, tmp_path: Path) -> dict[str, object]:
    if os.geteuid() != 0:
        pytest.fail("this test runs the real sudo in a private mount namespace: run it as root")
    missing = [tool for tool in ("sudo", "visudo", "unshare", "runuser") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {missing}: run deploy/install-packages.sh (the `sudo` Debian package)")
    cases = {"ask": {**ATTACKS, **{"intended": INTENDED}}, "run": INTENDED}
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "RULE": str(rule),
        "AGENT": str(AGENT),
        "WORK": str(tmp_path),
        "PYTHON": sys.executable,
        "CHECK": CHECK,
        "CASES": json.dumps(cases),
    }
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", NAMESPACE_SETUP],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_shipped_rule_is_valid_sudoers() -> None:
    if shutil.which("visudo") is None:
        pytest.fail("missing visudo: run deploy/install-packages.sh (the `sudo` Debian package)")
    checked = subprocess.run(["visudo", "-cf", str(RULE)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_command_that_gave_root_or_the_private_key_is_refused(tmp_path: Path) -> None:
    listed = _ask_sudo(RULE, tmp_path)["listed"]
    assert isinstance(listed, dict)
    allowed = sorted(label for label in ATTACKS if listed[label] == 0)
    assert allowed == [], f"the rule lets the responder account run: {allowed}"


def test_the_hub_agent_runs_as_root_with_its_request_on_stdin(tmp_path: Path) -> None:
    answer = _ask_sudo(RULE, tmp_path)
    assert isinstance(answer["listed"], dict)
    assert answer["listed"]["intended"] == 0
    status, stdout, stderr = answer["run"]  # type: ignore[misc]
    assert status == 0, stderr
    hello = json.loads(stdout)
    assert hello["ok"] is True and "add_peers" in hello["result"]["ops"]
    # And the same account writing into sudoers.d for real is stopped by sudo itself.
    status, stderr, entries = answer["attack_run"]  # type: ignore[misc]
    assert status != 0 and "password is required" in stderr
    assert entries == ["responder"]
