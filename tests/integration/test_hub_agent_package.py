"""The hub agent as a Debian package: `make hub-agent-deb` (deploy/hub/build-deb.sh) builds it with
dpkg-deb, and the agent it installs is the release this responder ships."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from responder.enrollment import AgentRelease
from responder.enrollment.core import AGENT_SOURCE

BUILD = AGENT_SOURCE.parent / "build-deb.sh"


def _dpkg_deb(*argv: str) -> str:
    return subprocess.run(["dpkg-deb", *argv], capture_output=True, text=True, check=True).stdout


def test_the_package_carries_the_agent_its_version_and_its_dependencies(tmp_path: Path) -> None:
    release = AgentRelease.shipped()
    built = subprocess.run(["sh", str(BUILD), str(tmp_path)], capture_output=True, text=True, check=True)
    deb = tmp_path / f"responder-hub-agent_{release.version}_all.deb"
    assert built.stdout.strip() == str(deb) and deb.exists()

    fields = dict(
        line.split(": ", 1)
        for line in _dpkg_deb("-f", str(deb), "Package", "Version", "Architecture", "Depends").splitlines()
    )
    assert fields == {
        "Package": "responder-hub-agent",
        "Version": release.version,
        "Architecture": "all",
        "Depends": "python3 (>= 3.9), python3-nftables, wireguard-tools, conntrack",
    }
    listing = {line.split()[-1]: line.split()[:2] for line in _dpkg_deb("-c", str(deb)).splitlines()}
    assert listing["./usr/sbin/responder-hub-agent"] == ["-rwxr-xr-x", "root/root"]
    assert "./usr/share/doc/responder-hub-agent/sudoers.responder.example" in listing
    assert not any(path.startswith("./usr/local") for path in listing)  # Debian policy

    root = tmp_path / "root"
    _dpkg_deb("-x", str(deb), str(root))
    agent = root / "usr" / "sbin" / "responder-hub-agent"
    assert AgentRelease.of(agent.read_bytes()).sha256 == release.sha256
    hello = subprocess.run(
        [str(agent), "--config", str(tmp_path / "none.json")],
        input='{"id": 1, "op": "hello"}\n', capture_output=True, text=True, check=True, timeout=10,
    )  # fmt: skip
    answer = json.loads(hello.stdout)["result"]
    assert (answer["release"], answer["sha256"]) == (release.version, release.sha256)

    postinst = subprocess.run(
        ["dpkg-deb", "-I", str(deb), "postinst"], capture_output=True, text=True, check=True
    ).stdout
    assert "install -d -m 0700 -o root -g root /var/lib/responder-hub" in postinst
