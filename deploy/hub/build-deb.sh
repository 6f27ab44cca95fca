#!/bin/sh
# Build dist/responder-hub-agent_<version>_all.deb from deploy/hub/ (dpkg-deb only; no debhelper needed).
# Usage: deploy/hub/build-deb.sh [OUTDIR]   (default: dist)
#
# Debian policy keeps packages out of /usr/local, so the package installs the agent as
# /usr/sbin/responder-hub-agent; `responder hubs enroll` (a single-file install, not a package) puts it in
# /usr/local/sbin. The forced command in authorized_keys and the sudoers rule name whichever is installed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-dist}
version=$(sed -n 's/^__version__ = "\([^"]*\)".*/\1/p' "$here/responder_hub_agent.py")
[ -n "$version" ] || { echo "build-deb: no __version__ in responder_hub_agent.py" >&2; exit 1; }
stage=$(mktemp -d)
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT
install -d -m 0755 "$stage/DEBIAN" "$stage/usr/sbin" "$stage/usr/share/doc/responder-hub-agent" "$stage/etc/responder-hub"
install -m 0755 "$here/responder_hub_agent.py" "$stage/usr/sbin/responder-hub-agent"
install -m 0644 "$here/README.md" "$stage/usr/share/doc/responder-hub-agent/README.md"
install -m 0644 "$here/sudoers.responder" "$stage/usr/share/doc/responder-hub-agent/sudoers.responder.example"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: responder-hub-agent
Version: $version
Architecture: all
Maintainer: responder maintainers <responder@localhost>
Depends: python3 (>= 3.9), python3-nftables, wireguard-tools, conntrack
Section: net
Priority: optional
Description: responder's hub agent for WireGuard/nftables hubs
 The SSH forced command of the responder's key on a WireGuard hub: it removes
 and restores peers, edits nftables deny sets and kills conntrack flows, each
 validated and read back, and gives back only what it took away.
CONTROL
# The agent's state (what it removed, revoked keys) is root's alone.
cat > "$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    install -d -m 0700 -o root -g root /var/lib/responder-hub
fi
POSTINST
chmod 0755 "$stage/DEBIAN/postinst"
mkdir -p "$out"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out/responder-hub-agent_${version}_all.deb" >/dev/null
echo "$out/responder-hub-agent_${version}_all.deb"
