#!/usr/bin/env bash
# Installs Debian's chromium (headless screenshots of the bench HTML report) unless it is already there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "chromium is missing: run this script as root or 'apt-get install -y chromium'" >&2
  exit 1
fi
echo "installing chromium (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q chromium >/dev/null 2>&1; then
  apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null || {
    echo "apt-get could not install chromium; the bench report tests need it (/usr/bin/chromium)" >&2
    exit 1
  }
fi
command -v chromium >/dev/null 2>&1 || { echo "chromium still not on PATH after apt-get install" >&2; exit 1; }
chromium --version >&2
