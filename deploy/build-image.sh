#!/usr/bin/env bash
# Builds the ONNX-only tensorgate image with podman and proves it: no torch or TensorFlow inside, the server starts
# as a non-root user, the HEALTHCHECK passes, and one V2 inference on a small ONNX model returns the right numbers.
#
#   deploy/build-image.sh                 # RUNTIMES=all, IMAGE=..., PORT=... override the defaults
#
# Works on a machine without Docker or a registry: installs podman, buildah, runc and debootstrap with apt-get when
# missing, and when no python:3.11-slim image is available locally it makes a stand-in from Debian bookworm with
# debootstrap (python3 + venv) and imports it. Needs root.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNTIMES=${RUNTIMES:-onnx}
IMAGE=${IMAGE:-localhost/tensorgate:$RUNTIMES}
BASE_IMAGE=${BASE_IMAGE:-localhost/tensorgate-base:python3.11-bookworm}
PORT=${PORT:-18000}
WORK=${TENSORGATE_IMAGE_WORK:-$ROOT/.tools/image}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}  # any Python with numpy and onnx, to write the test model

say() { echo "build-image: $*"; }
die() {
  echo "build-image: ERROR: $*" >&2
  exit 1
}
[[ $(id -u) == 0 ]] || die "run as root (podman storage, apt-get, debootstrap)"
mkdir -p "$WORK"
start=$(date +%s)

# -- tools ----------------------------------------------------------------------------------------------------
missing=()
for tool in podman buildah runc debootstrap; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if ((${#missing[@]})); then
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" ||
    { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; } ||
    die "apt-get install ${missing[*]} failed"
fi

# crun cannot run on a hybrid cgroup v1 host and the default rlimits need CAP_SYS_RESOURCE: use runc, fixed ulimits
# and the host network (the default CNI bridge is not wanted here).
export CONTAINERS_CONF=$WORK/containers.conf
cat >"$CONTAINERS_CONF" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
netns = "host"

[engine]
runtime = "runc"
CONF

# -- base image -----------------------------------------------------------------------------------------------
if podman image exists "$BASE_IMAGE"; then
  say "base image $BASE_IMAGE is present"
else
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs=$WORK/rootfs
  rm -rf "$rootfs"
  say "debootstrap bookworm from $mirror (a python:3.11-slim stand-in)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror" \
    >"$WORK/debootstrap.log" 2>&1 || die "debootstrap failed; see $WORK/debootstrap.log"
  ln -sf python3 "$rootfs/usr/bin/python"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  say "imported $BASE_IMAGE"
fi

# -- build ----------------------------------------------------------------------------------------------------
say "podman build RUNTIMES=$RUNTIMES -> $IMAGE"
build_start=$(date +%s)
ca_mount=()
[[ -f /etc/ssl/certs/ca-certificates.crt ]] &&
  ca_mount=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
podman build --pull=never --isolation=chroot --network=host --format docker "${ca_mount[@]}" \
  --build-arg "PYTHON_IMAGE=$BASE_IMAGE" --build-arg "RUNTIMES=$RUNTIMES" -t "$IMAGE" "$ROOT"
say "built in $(($(date +%s) - build_start)) s; size $(podman image inspect "$IMAGE" --format '{{.Size}}' |
  awk '{printf "%.0f MB", $1/1e6}')"

# -- what is inside -------------------------------------------------------------------------------------------
podman run --rm --entrypoint python "$IMAGE" -c '
import importlib.util as u, os, sys
present = {m: u.find_spec(m) is not None for m in ("onnxruntime", "boto3", "torch", "tensorflow")}
print("uid", os.getuid(), "modules", present)
' | tee "$WORK/inside.txt"
if [[ $RUNTIMES == onnx ]]; then
  grep -q "'torch': False" "$WORK/inside.txt" || die "the ONNX-only image carries torch"
  grep -q "'tensorflow': False" "$WORK/inside.txt" || die "the ONNX-only image carries TensorFlow"
  grep -q "'onnxruntime': True" "$WORK/inside.txt" || die "the ONNX-only image lacks onnxruntime"
fi
grep -q "^uid 10001 " "$WORK/inside.txt" || die "the image does not run as uid 10001"

# -- one inference --------------------------------------------------------------------------------------------
store=$WORK/store
rm -rf "$store"
"$PYTHON" - "$store" <<'PY'
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

store = Path(sys.argv[1])
w = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
b = np.array([0.5, -0.5, 1.0], dtype=np.float32)
graph = helper.make_graph(
    [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
    "affine",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
(store / "affine" / "1").mkdir(parents=True)
onnx.save(model, str(store / "affine" / "1" / "model.onnx"))
(store / "affine" / "config.yaml").write_text("sla:\n  p99_ms: 20\n")
PY
chmod -R a+rX "$store"

name=tensorgate-proof-$$
cleanup() { podman rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
podman run -d --name "$name" --read-only --tmpfs /tmp --tmpfs /var/cache/tensorgate \
  -v "$store:/models:ro" -e TENSORGATE_HTTP_PORT="$PORT" -e TENSORGATE_GRPC_PORT=$((PORT + 1)) \
  -e TENSORGATE_METRICS_PORT=$((PORT + 2)) -e TENSORGATE_HOST=127.0.0.1 "$IMAGE" >/dev/null
say "started $name on 127.0.0.1:$PORT"

"$PYTHON" - "$PORT" <<'PY' || { podman logs "$name" | tail -40; die "the image did not answer an inference"; }
import json, sys, time, urllib.request

base = f"http://127.0.0.1:{sys.argv[1]}"
deadline = time.monotonic() + 120
while True:
    try:
        with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2) as resp:
            if resp.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        raise SystemExit("not ready within 120 s")
    time.sleep(0.5)
body = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 1, 0, 2]}]}
req = urllib.request.Request(
    f"{base}/v2/models/affine/infer", json.dumps(body).encode(), {"Content-Type": "application/json"}
)
with urllib.request.urlopen(req, timeout=10) as resp:
    answer = json.load(resp)
print("inference:", json.dumps(answer))
expected = [5.5, 6.5, 10.0, 8.5, 9.5, 13.0]
got = answer["outputs"][0]["data"]
assert [round(v, 4) for v in got] == expected, (got, expected)
with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
    text = resp.read().decode()
lines = [line for line in text.splitlines() if line.startswith("tensorgate_requests_total{")]
print("metrics:", *lines, sep="\n  ")
assert lines, "no tensorgate_requests_total in /metrics"
PY

health=unknown
for _ in $(seq 1 20); do
  podman healthcheck run "$name" >/dev/null 2>&1 && { health=healthy; break; }
  sleep 1
done
[[ $health == healthy ]] || die "HEALTHCHECK did not pass"
say "healthcheck: $health"

stop_start=$(date +%s%N)
podman stop -t 20 "$name" >/dev/null
code=$(podman inspect "$name" --format '{{.State.ExitCode}}')
say "SIGTERM -> exit code $code after $((($(date +%s%N) - stop_start) / 1000000)) ms"
[[ $code == 0 || $code == 143 ]] || die "the server did not stop on SIGTERM (exit $code; 137 means it was killed)"
say "OK: $IMAGE in $(($(date +%s) - start)) s"
