# tensorgate — `make serve` (set up + serve the demo store) and `make test` (set up + the whole suite).
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
STORE  ?= demo_store
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001

.PHONY: serve test test-cuda venv tools demo lint unit perf-analyzer clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run make PYTHON=python3" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo ">> installing tensorgate with every runtime into $(VENV) (first time: a few minutes)"
	$(PY) -m pip install -q --disable-pip-version-check -U pip wheel
	$(PY) -m pip install -q --disable-pip-version-check -e '.[all,dev]'
	@rm -f $(VENV)/.installed-* && touch $@

# System tools the tests drive for real: promtool/prometheus, chromium, perf_analyzer (own venv), node packages.
tools: venv
	@bash deploy/install-tools.sh
	@bash bench/install-browser.sh
	@bash bench/setup-perf-analyzer.sh >/dev/null

demo: venv
	$(VENV)/bin/tensorgate demo --store $(STORE)

serve: demo
	@$(PY) -c "import json; json.dump({'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [1, 784], 'data': [0.5] * 784}]}, open('$(STORE)/.example-request.json', 'w'))"
	@echo ""
	@echo "tensorgate is starting on the demo store $(STORE):"
	@echo "  REST  http://127.0.0.1:$(HTTP_PORT)  (V2 /v2/..., TF Serving /v1/..., Prometheus /metrics)"
	@echo "  gRPC  127.0.0.1:$(GRPC_PORT)         (inference.GRPCInferenceService, tensorflow.serving.*)"
	@echo "example request (the MLP on ONNX Runtime, V2 JSON):"
	@echo "  curl -s 127.0.0.1:$(HTTP_PORT)/v2/models/mlp_onnx/infer -d @$(STORE)/.example-request.json"
	@echo "compare the MLP's runtimes against its SLA (from another shell):"
	@echo "  $(VENV)/bin/tensorgate bench --url 127.0.0.1:$(HTTP_PORT) --grpc-url 127.0.0.1:$(GRPC_PORT) --source mlp --concurrency 1,4,16 --duration 5 --html bench.html"
	@echo ""
	$(VENV)/bin/tensorgate serve --store $(STORE) --host 0.0.0.0 --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT)

lint: venv
	$(VENV)/bin/ruff check gateway runtimes model_store tests bench
	$(VENV)/bin/ruff format --check gateway runtimes model_store tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: venv
	$(PY) -m pytest -q

test: venv tools lint
	$(PY) -m pytest -q --durations=15

# The GPU suite (AOTInductor on CUDA, served): needs an NVIDIA GPU and a CUDA build of torch in the venv.
test-cuda: venv
	$(PY) -m pytest -q -m cuda tests/e2e/test_cuda_serving.py

perf-analyzer:
	@bash bench/setup-perf-analyzer.sh

clean:
	rm -rf $(VENV) .tools $(STORE) .mypy_cache .ruff_cache .pytest_cache
