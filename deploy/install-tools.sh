#!/usr/bin/env bash
# Installs the tools the deploy checks need: promtool and prometheus (Debian's `prometheus` package), node and npm
# (only when missing), and the pinned npm packages of deploy/tools/ into .tools/node. Idempotent; run as root.
#
#   deploy/install-tools.sh            # TENSORGATE_TOOLS_DIR overrides the .tools folder
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS_DIR=${TENSORGATE_TOOLS_DIR:-$ROOT/.tools}
NODE_DIR=$TOOLS_DIR/node
PINNED=$ROOT/deploy/tools

die() {
  echo "install-tools: ERROR: $*" >&2
  exit 1
}
say() { echo "install-tools: $*"; }

# -- Debian packages ------------------------------------------------------------------------------------------
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus >/dev/null 2>&1 || [[ " ${missing[*]} " == *" prometheus "* ]] || missing+=(prometheus)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if ((${#missing[@]})); then
  [[ $(id -u) == 0 ]] || die "need root to run: apt-get install ${missing[*]}"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${missing[*]} by hand"
  export DEBIAN_FRONTEND=noninteractive
  # The prometheus package would start a daemon on :9090; keep services from starting while we install.
  made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  cleanup() { if ((made_policy)); then rm -f /usr/sbin/policy-rc.d; fi; }
  trap cleanup EXIT
  say "apt-get install ${missing[*]}"
  if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
    say "install failed with the current package lists; running apt-get update once"
    apt-get update || die "apt-get update failed"
    apt-get install -y --no-install-recommends "${missing[@]}" || die "apt-get install ${missing[*]} failed"
  fi
fi
command -v promtool >/dev/null 2>&1 || die "promtool still missing after installing Debian's prometheus package"
command -v prometheus >/dev/null 2>&1 || die "prometheus still missing after installing Debian's prometheus package"
command -v node >/dev/null 2>&1 || die "node still missing"
command -v npm >/dev/null 2>&1 || die "npm still missing"

# -- pinned npm packages --------------------------------------------------------------------------------------
[[ -f $PINNED/package.json && -f $PINNED/package-lock.json ]] || die "missing $PINNED/package.json or package-lock.json"
stamp=$(cat "$PINNED/package.json" "$PINNED/package-lock.json" | sha256sum | cut -d' ' -f1)
if [[ -f $NODE_DIR/.stamp && $(cat "$NODE_DIR/.stamp") == "$stamp" && -d $NODE_DIR/node_modules ]]; then
  say "npm packages in $NODE_DIR are current"
else
  mkdir -p "$NODE_DIR"
  cp "$PINNED/package.json" "$PINNED/package-lock.json" "$NODE_DIR/"
  say "npm ci in $NODE_DIR"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed in $NODE_DIR"
  echo "$stamp" >"$NODE_DIR/.stamp"
fi

say "promtool: $(promtool --version 2>&1 | head -1)"
say "node: $(node --version), npm: $(npm --version)"
say "done"
