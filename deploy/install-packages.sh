#!/usr/bin/env bash
# Installs the Debian packages the lab and the test suite need, and only those that are missing.
# Quick when everything is present: one dpkg-query, no network.
set -euo pipefail

packages=(
  python3 python3-venv
  iproute2 iputils-ping nftables libnftables1 conntrack
  wireguard-tools wireguard-go
  openssh-server openssh-client
  util-linux procps sudo dpkg openssl
  postgresql python3-nftables
  chromium
)

missing=()
for p in "${packages[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}" >&2
  echo "run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# --no-install-recommends keeps the host lean; policy-rc.d stops sshd from being started on the host.
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
apt-get install -y -q --no-install-recommends "${missing[@]}"
