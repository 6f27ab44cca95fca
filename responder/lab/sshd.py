"""OpenSSH server configuration for a lab hub."""

from __future__ import annotations

from pathlib import Path


def sshd_config(
    *, node_dir: Path, host_key: Path, authorized_keys: Path, account_keys: dict[str, Path] | None = None
) -> str:
    """A locked-down sshd: keys only, no forwarding, host key and state in the lab's own directory.
    `account_keys`: accounts (other than root) with their own authorized_keys, which sshd reads as that
    account.

    MaxSessions stays at OpenSSH's default (10) so the enforcement point is tested against the limit real
    hubs have.
    """
    matches = "".join(
        f"Match User {account}\n    AuthorizedKeysFile {keys}\n" for account, keys in (account_keys or {}).items()
    )
    return f"""\
Port 22
ListenAddress 0.0.0.0
HostKey {host_key}
PidFile {node_dir / "sshd.pid"}
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTunnel no
PrintMotd no
LogLevel VERBOSE
{matches}"""


def authorized_keys(plain_key: str, agent_key: str, *, management: str, agent: str) -> str:
    """The responder's two keys, accepted only from the management address: the agent key can run
    nothing but the hub agent (forced command); the plain key is for agentless mode."""
    return (
        f'from="{management}",restrict,command="{agent}" {agent_key}\n'
        f'from="{management}",no-port-forwarding,no-agent-forwarding,no-X11-forwarding {plain_key}\n'
    )
