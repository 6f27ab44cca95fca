#!/bin/sh
# Secrets for `make run` on this machine: created once, readable by root only, never printed.
set -eu
dir=${1:-.run}
mkdir -p "$dir"
chmod 700 "$dir"
for name in okta-secret admin-token entra-client-state; do
    if [ ! -s "$dir/$name" ]; then
        umask 077
        head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "$dir/$name"
    fi
done
