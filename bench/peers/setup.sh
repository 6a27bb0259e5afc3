#!/usr/bin/env bash
# Installs the peer servers the comparison runs against, each in its own virtualenv under .tools/peers/
# (MLServer 1.7.1 and KServe 0.21.0, both with the project's onnxruntime version), plus wrk and h2load.
# Idempotent: a virtualenv with a matching stamp file is left alone.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
TOOLS="${TOOLS_DIR:-$ROOT/.tools}/peers"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
PROJECT_PY="$ROOT/.venv/bin/python"

say() { echo "[peers/setup] $*" >&2; }
# pip, with its lines about unreadable local index folders (a property of some hosts) left out.
pip_quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; } >&2; }

if [ -x "$PROJECT_PY" ]; then
  ORT_VERSION="$("$PROJECT_PY" -c 'import importlib.metadata as m; print(m.version("onnxruntime"))')"
else
  ORT_VERSION="${ORT_VERSION:?the project virtualenv (.venv) is missing: set ORT_VERSION to the onnxruntime version to use}"
fi
say "onnxruntime $ORT_VERSION (the project's version) goes into every peer"

# venv NAME STAMP PACKAGES...: create .tools/peers/NAME with PACKAGES unless its stamp says it already has them.
venv() {
  local name="$1"; shift
  local dir="$TOOLS/$name" stamp="$TOOLS/$name/.stamp" want="$*"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "$name: up to date ($dir)"
    return
  fi
  say "$name: creating $dir with: $want"
  rm -rf "$dir"
  mkdir -p "$TOOLS"
  "$PYTHON" -m venv "$dir"
  pip_quiet "$dir/bin/pip" install -q --disable-pip-version-check --upgrade pip
  # shellcheck disable=SC2086
  pip_quiet "$dir/bin/pip" install -q --disable-pip-version-check $want
  "$dir/bin/python" -c 'import onnxruntime, numpy' >&2
  echo "$want" > "$stamp"
  say "$name: ready"
}

venv mlserver "mlserver==1.7.1" "uvloop==0.21.0" "onnxruntime==$ORT_VERSION"
"$TOOLS/mlserver/bin/python" -c 'import mlserver; print("[peers/setup] mlserver", mlserver.__version__)' >&2
venv kserve "kserve==0.21.0" "onnxruntime==$ORT_VERSION"
"$TOOLS/kserve/bin/python" -c 'import kserve, importlib.metadata as m; print("[peers/setup] kserve", m.version("kserve"))' >&2

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    say "needs Debian packages ${missing[*]}: run as root or apt-get install ${missing[*]}"
    exit 1
  fi
  say "installing ${missing[*]} (apt-get)"
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
fi
say "wrk: $(command -v wrk)"
say "h2load: $(command -v h2load) ($(h2load --version 2>&1 | head -1))"
say "done"
