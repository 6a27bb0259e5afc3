#!/usr/bin/env bash
# Profiles a running tensorgate with Triton's perf_analyzer (installed on first use by setup-perf-analyzer.sh).
#   bench/perf_analyzer.sh MODEL HOST:PORT [http|grpc|tfserving] [extra perf_analyzer args...]
# Examples:
#   bench/perf_analyzer.sh mlp_onnx 127.0.0.1:8000 http
#   bench/perf_analyzer.sh mlp_onnx 127.0.0.1:8001 grpc
#   bench/perf_analyzer.sh mlp_tf_savedmodel 127.0.0.1:8001 tfserving --shape input:1,784   (TF Serving has no batch notion: give free dims)
set -euo pipefail
MODEL="${1:?model name}"; URL="${2:?host:port}"; KIND="${3:-http}"; shift $(( $# < 3 ? $# : 3 ))
PA="$("$(dirname "$0")/setup-perf-analyzer.sh")"
COMMON=(--concurrency-range 1:8:2 --measurement-interval 2000 --stability-percentage 100 --max-trials 20)
case "$KIND" in
  http|grpc) exec "$PA" -m "$MODEL" -u "$URL" -i "$KIND" "${COMMON[@]}" "$@" ;;
  tfserving) exec "$PA" -m "$MODEL" -u "$URL" -i grpc --service-kind=tfserving "${COMMON[@]}" "$@" ;;  # free dims need --shape NAME:1,16
  *) echo "protocol must be http, grpc or tfserving" >&2; exit 2 ;;
esac
