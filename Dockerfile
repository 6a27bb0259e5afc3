# tensorgate model-serving gateway.
#
#   docker build --build-arg RUNTIMES=onnx -t tensorgate:onnx .   # ONNX Runtime + S3 store; no torch, no TensorFlow
#   docker build --build-arg RUNTIMES=all  -t tensorgate:all  .   # ONNX Runtime, PyTorch, TensorFlow, S3 store
#
# Ports: 8000 HTTP (KServe V2 + TF Serving REST, /metrics), 8001 gRPC, 8002 Prometheus metrics.
# Settings come from TENSORGATE_* environment variables; the model store defaults to /models.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG RUNTIMES=onnx
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/tensorgate
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY runtimes ./runtimes
COPY model_store ./model_store
RUN case "${RUNTIMES}" in \
      onnx) extras="onnx,s3" ;; \
      all) extras="all" ;; \
      *) echo "RUNTIMES must be 'onnx' or 'all', got '${RUNTIMES}'" >&2; exit 1 ;; \
    esac \
 && /opt/tensorgate/bin/pip install --no-cache-dir "/src[${extras}]" \
 && find /opt/tensorgate -name '__pycache__' -type d -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
ARG RUNTIMES=onnx
LABEL org.opencontainers.image.title="tensorgate" \
      org.opencontainers.image.description="Model-serving gateway for ONNX, TensorFlow SavedModel and PyTorch .pt2 models" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.tensorgate.runtimes="${RUNTIMES}"
RUN useradd --uid 10001 --gid 0 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tensorgate \
 && mkdir -p /models /var/cache/tensorgate \
 && chown 10001:0 /var/cache/tensorgate \
 && chmod 0775 /var/cache/tensorgate
COPY --from=build /opt/tensorgate /opt/tensorgate
ENV PATH=/opt/tensorgate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TENSORGATE_STORE=/models \
    TENSORGATE_HOST=0.0.0.0 \
    TENSORGATE_HTTP_PORT=8000 \
    TENSORGATE_GRPC_PORT=8001 \
    TENSORGATE_METRICS_PORT=8002 \
    TENSORGATE_LOG_FORMAT=json \
    TENSORGATE_CACHE_DIR=/var/cache/tensorgate
USER 10001:0
WORKDIR /var/cache/tensorgate
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/live' % os.environ.get('TENSORGATE_HTTP_PORT', '8000'), timeout=2)"]
# The server drains in-flight requests on SIGTERM; exec form keeps it PID 1 so the signal reaches it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tensorgate", "serve"]
