#!/usr/bin/env bash
# Installs Triton's perf_analyzer into its own virtualenv (.tools/perf-analyzer) and prints the path of a wrapper.
# tritonclient[all]==2.51.0 is the newest wheel whose binary runs on Debian 12 (glibc 2.36); it needs Debian's
# libb64-0d and libcudart.so.12 (pip package nvidia-cuda-runtime-cu12; only loaded, no GPU is used).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="${TOOLS_DIR:-$ROOT/.tools}"
VENV="$TOOLS/perf-analyzer"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3

if ! ldconfig -p 2>/dev/null | grep -q libb64.so.0d; then
  if [ "$(id -u)" != 0 ]; then echo "perf_analyzer needs Debian's libb64-0d: run as root or apt-get install libb64-0d" >&2; exit 1; fi
  echo "installing libb64-0d (apt-get)" >&2
  (apt-get install -y -q libb64-0d >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q libb64-0d >/dev/null; })
fi
if [ ! -x "$VENV/bin/perf_analyzer" ] || [ ! -f "$VENV/.ok" ]; then
  echo "creating $VENV with tritonclient[all]==2.51.0 (perf_analyzer)" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'tritonclient[all]==2.51.0' 'nvidia-cuda-runtime-cu12' >&2
  touch "$VENV/.ok"
fi
CUDART="$("$VENV/bin/python" -c 'import nvidia.cuda_runtime, os; print(os.path.join(list(nvidia.cuda_runtime.__path__)[0], "lib"))')"
cat > "$TOOLS/perf_analyzer" <<WRAP
#!/usr/bin/env bash
export LD_LIBRARY_PATH="$CUDART\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$VENV/bin/perf_analyzer" "\$@"
WRAP
chmod +x "$TOOLS/perf_analyzer"
"$TOOLS/perf_analyzer" --version >/dev/null 2>&1 || "$TOOLS/perf_analyzer" --help >/dev/null 2>&1 || { echo "perf_analyzer does not start" >&2; exit 1; }
echo "$TOOLS/perf_analyzer"
