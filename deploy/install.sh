#!/usr/bin/env bash
# Sets up a host to run the responder as a systemd service. Idempotent: a second run changes nothing and
# says so; a configuration file an operator has edited is never overwritten.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: deploy/install.sh [OPTIONS]

Sets up this host (as root) to run the responder under systemd:
  user and group  responder (system, no login shell, no home but /var/lib/responder)
  /etc/responder/           root:responder 0750: responder.yaml and inventory.yaml (examples, 0640),
                            rules/ and connectors/ (copied from this tree), secrets/ (0750) with a
                            randomly generated admin-token (0640); the other secrets are yours to write
  /opt/responder/.venv      a Python virtual environment with this package (from this source tree, or --wheel),
                            its command linked as /usr/local/bin/responder
  /var/lib/responder        the journal, responder 0700
  /etc/systemd/system/responder.service   installed and enabled (not started: write the secrets first)
Nothing that exists is overwritten, except the unit (customise it with `systemctl edit responder`).

Options:
  --root DIR               install into DIR as a staging root (packaging, tests): every path is prefixed
                           with DIR, the user and group are written into DIR/etc/passwd and DIR/etc/group
                           (useradd/groupadd --root), files are owned by DIR's responder ids, and systemctl
                           is not run.
  --wheel FILE             install this wheel instead of building the package from this source tree.
  --python PYTHON          the interpreter the virtual environment is made from (default: python3).
  --system-site-packages   let the virtual environment see the interpreter's packages (e.g. Debian's
                           python3-* packages).
  --no-deps                install the package alone, without its dependencies: they
                           must already be importable in the virtual environment (offline installs).
  --reinstall              install the package even when the same version is already installed.
  -h, --help               show this help and exit.
EOF
}

# The venv and the unit must be readable by the service whatever the operator's own umask (077 is common
# for root); files with secrets or configuration get their modes explicitly.
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source_tree=$(dirname "$here")
root=""
wheel=""
python=python3
venv_options=()
pip_options=()
reinstall=0

while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --wheel) wheel=${2:?--wheel needs a file}; shift 2 ;;
    --python) python=${2:?--python needs an interpreter}; shift 2 ;;
    --system-site-packages) venv_options+=(--system-site-packages); shift ;;
    --no-deps) pip_options+=(--no-deps); shift ;;
    --reinstall) reinstall=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (it creates a system user and root-owned directories)" >&2
  exit 2
fi
if [ -n "$root" ]; then
  mkdir -p "$root"
  root=$(cd "$root" && pwd)
fi
if [ -n "$wheel" ]; then
  [ -f "$wheel" ] || { echo "install.sh: --wheel $wheel does not exist" >&2; exit 2; }
  wheel=$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")
fi

USER_NAME=responder
ETC=$root/etc/responder
VENV=$root/opt/responder/.venv
STATE=$root/var/lib/responder
UNIT_DIR=$root/etc/systemd/system
changes=0

changed() { echo "  $*"; changes=$((changes + 1)); }

# --- the system user --------------------------------------------------------------------------------
ensure_user() {
  local root_args=()
  if [ -n "$root" ]; then
    mkdir -p "$root/etc"
    for f in passwd group shadow gshadow; do [ -e "$root/etc/$f" ] || : > "$root/etc/$f"; done
    root_args=(--root "$root")
  fi
  if ! grep -q "^$USER_NAME:" "$root/etc/group" 2>/dev/null; then
    groupadd "${root_args[@]}" --system "$USER_NAME"
    changed "created group $USER_NAME"
  fi
  if ! grep -q "^$USER_NAME:" "$root/etc/passwd" 2>/dev/null; then
    # The staging root has no /usr/sbin/nologin: useradd's warning about it says nothing there.
    useradd "${root_args[@]}" --system --gid "$USER_NAME" --no-create-home --home-dir /var/lib/responder \
      --shell /usr/sbin/nologin --comment "responder service" "$USER_NAME" \
      2> >(grep -v "missing or non-executable shell" >&2)
    changed "created user $USER_NAME"
  fi
  # Numeric ids from the (staging) root's own files: the host may not know the name, or know another id.
  uid=$(awk -F: -v u="$USER_NAME" '$1 == u {print $3}' "$root/etc/passwd")
  gid=$(awk -F: -v g="$USER_NAME" '$1 == g {print $3}' "$root/etc/group")
}

# --- directories and files --------------------------------------------------------------------------
# ensure_dir PATH OWNER:GROUP MODE: created, or its owner and mode put right (they are ours to set).
ensure_dir() {
  local path=$1 owner=$2 mode=$3
  if [ ! -d "$path" ]; then
    install -d -o "${owner%:*}" -g "${owner#*:}" -m "$mode" "$path"
    changed "created ${path#"$root"}/ ($mode)"
    return
  fi
  if [ "$(stat -c '%u:%g %a' "$path")" != "$owner ${mode#0}" ]; then
    chown "$owner" "$path" && chmod "$mode" "$path"
    changed "set ${path#"$root"}/ to $owner $mode"
  fi
}

# ensure_file SOURCE TARGET MODE: copied when absent; an existing one is the operator's and kept.
ensure_file() {
  local source=$1 target=$2 mode=$3
  if [ ! -e "$target" ]; then
    install -o 0 -g "$gid" -m "$mode" "$source" "$target"
    changed "created ${target#"$root"}"
  elif ! cmp -s "$source" "$target"; then
    echo "  kept ${target#"$root"} (it differs from ${source#"$source_tree"/}: yours, not overwritten)"
  fi
}

# ensure_tree SOURCE_DIR TARGET_DIR: each file copied when absent (0640, directories 0750); existing kept.
ensure_tree() {
  local source=$1 target=$2 file relative
  ensure_dir "$target" "0:$gid" 0750
  while IFS= read -r -d '' file; do
    relative=${file#"$source"/}
    if [ -d "$file" ]; then
      ensure_dir "$target/$relative" "0:$gid" 0750
    else
      ensure_file "$file" "$target/$relative" 0640
    fi
  done < <(find "$source" -mindepth 1 \( -name __pycache__ -prune \) -o -print0 | sort -z)
}

ensure_config() {
  ensure_dir "$ETC" "0:$gid" 0750
  ensure_file "$here/etc/responder.yaml" "$ETC/responder.yaml" 0640
  ensure_file "$here/etc/inventory.yaml" "$ETC/inventory.yaml" 0640
  ensure_tree "$source_tree/rules" "$ETC/rules"
  ensure_tree "$source_tree/connectors" "$ETC/connectors"
  ensure_dir "$ETC/secrets" "0:$gid" 0750
  # The admin token is ours to make (nobody outside chooses it); the IdPs' secrets are agreed with them.
  if [ ! -e "$ETC/secrets/admin-token" ]; then
    (umask 027 && "$python" -c 'import secrets; print(secrets.token_hex(32))' > "$ETC/secrets/admin-token")
    chown "0:$gid" "$ETC/secrets/admin-token" && chmod 0640 "$ETC/secrets/admin-token"
    changed "created /etc/responder/secrets/admin-token (random, 64 hex characters)"
  fi
  ensure_dir "$STATE" "$uid:$gid" 0700
}

# --- the virtual environment ------------------------------------------------------------------------
wanted_version() {
  if [ -n "$wheel" ]; then
    basename "$wheel" | cut -d- -f2
  else
    sed -n 's/^version = "\(.*\)"$/\1/p' "$source_tree/pyproject.toml" | head -n1
  fi
}

ensure_venv() {
  mkdir -p "$(dirname "$VENV")"
  if [ ! -x "$VENV/bin/python" ]; then
    "$python" -m venv "${venv_options[@]}" "$VENV"
    changed "created the virtual environment /opt/responder/.venv"
  fi
  local want have
  want=$(wanted_version)
  have=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("responder"))' 2>/dev/null || true)
  if [ "$have" = "$want" ] && [ "$reinstall" -eq 0 ]; then
    return
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${pip_options[@]}" \
    "${wheel:-$source_tree}"
  changed "installed responder $want into /opt/responder/.venv${have:+ (was $have)}"
}

# The command on root's PATH, for the operator (the unit names the venv's own).
ensure_command() {
  local link=$root/usr/local/bin/responder
  if [ ! -e "$link" ] && [ ! -L "$link" ]; then
    mkdir -p "$(dirname "$link")"
    ln -s /opt/responder/.venv/bin/responder "$link"
    changed "linked /usr/local/bin/responder -> /opt/responder/.venv/bin/responder"
  elif [ "$(readlink "$link")" != /opt/responder/.venv/bin/responder ]; then
    echo "  kept /usr/local/bin/responder (not a link to /opt/responder/.venv/bin/responder: yours)"
  fi
}

# --- the systemd unit -------------------------------------------------------------------------------
ensure_unit() {
  mkdir -p "$UNIT_DIR"
  local unit=$UNIT_DIR/responder.service
  if ! cmp -s "$here/systemd/responder.service" "$unit"; then
    local was=created
    [ -e "$unit" ] && was=updated
    install -m 0644 "$here/systemd/responder.service" "$unit"
    changed "$was /etc/systemd/system/responder.service"
  fi
  if [ -n "$root" ]; then
    return  # a staging root's units are enabled by whoever boots it
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if ! systemctl is-enabled --quiet responder; then
      systemctl enable --quiet responder
      changed "enabled responder.service"
    fi
  else
    echo "  systemd is not running here: run \`systemctl daemon-reload && systemctl enable responder\` on the host"
  fi
}

echo "installing the responder${root:+ into $root}:"
ensure_user
ensure_config
ensure_venv
ensure_command
ensure_unit

missing=()
for secret in okta; do
  [ -e "$ETC/secrets/$secret" ] || missing+=("$secret")
done
if [ "$changes" -eq 0 ]; then
  echo "nothing to change"
else
  echo "$changes change(s) made"
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo
  echo "Next: write the secrets the configuration names (mode 0640 root:responder), e.g. for Okta's event hook:"
  for secret in "${missing[@]}"; do
    echo "  (umask 027 && openssl rand -hex 32 > /etc/responder/secrets/$secret) && chown root:responder /etc/responder/secrets/$secret"
  done
  echo "(the same for entra-client-state, ssf or kafka if you enable them in responder.yaml), then:"
  echo "  responder config check && systemctl start responder"
fi
