"""Assembly: turns a fetched version folder into a ModelVersion ready to publish — the runtime for its format with
its options (per-runtime special cases live here; in a child process when the config isolates it), the executor
its config asks for (a thread pool, or a dynamic batcher) wired to its statistics and metrics, and the warm-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from gateway.execution.batcher import Batcher
from gateway.execution.crew import IDLE_S
from gateway.execution.executor import Executor, OnExecution
from gateway.execution.pool import ThreadPool
from gateway.lifecycle.model import ModelVersion, VersionStatus
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.stats import ModelStats
from model_store import ModelConfig
from runtimes import Runtime, RuntimeLoadError, Signature
from runtimes.isolation import ProcessRuntime

RuntimeFactory = Callable[[str], type[Runtime]]
WarmUp = Callable[[ModelVersion], None]


class Assembler:
    """``assemble(...)`` runs in a loading thread; on failure nothing is left open."""

    def __init__(
        self,
        factory: RuntimeFactory,
        metrics: Metrics,
        warmup: WarmUp | None = None,
        allow_pickle: bool = False,
        idle_thread_s: float | None = IDLE_S,
    ) -> None:
        self.idle_thread_s = idle_thread_s  # executor threads retire after this long without requests (None/0: never)
        self.allow_pickle = allow_pickle  # --allow-pickle: torch archives with pickled parts load (with a warning)
        self.factory = factory
        self.metrics = metrics
        self.warmup = warmup

    def assemble(
        self, name: str, version: int, config: ModelConfig, fingerprint: str, path: Path, fmt: str
    ) -> ModelVersion:
        isolated = config.isolated(fmt)
        # an isolated runtime's framework is imported in its child only: the server never imports it for this model
        runtime: Runtime = (
            ProcessRuntime(fmt, f"{name} v{version}", config.instances) if isolated else self.factory(fmt)()
        )
        options = config.runtime_options()
        if fmt == "torch_export" and self.allow_pickle:
            options.setdefault("allow_pickle", True)
        if fmt == "torch_aoti":
            options.setdefault("num_runners", config.instances)  # one AOTInductor runner per instance thread
            if isolated:
                options.setdefault("probe", False)  # the child is the probe: a crash while loading fails the load
        runtime.load(path, options)
        executor: Executor | None = None
        try:
            signature = runtime.signature()
            _check_batch_dim(config, signature)
            stats = ModelStats()
            executor = self._executor(name, version, fmt, config, runtime, signature, stats)
            model = ModelVersion(
                name, version, config, fingerprint, runtime, fmt, runtime.platform, signature, executor, path,
                loaded_at=time.time(), status=VersionStatus(), stats=stats,
            )  # fmt: skip
            if self.warmup is not None:
                self.warmup(model)
        except BaseException:
            if executor is not None:
                executor.close()
            runtime.unload()
            raise
        return model

    def _executor(
        self,
        name: str,
        version: int,
        fmt: str,
        config: ModelConfig,
        runtime: Runtime,
        signature: Signature,
        stats: ModelStats,
    ) -> Executor:
        batching = config.batching
        thread_name = f"tg-{name}-{version}"
        if batching is None or not signature.batched:
            return ThreadPool(runtime, config.instances, _recorder(stats), name=thread_name, idle_s=self.idle_thread_s)
        return Batcher(
            runtime,
            instances=config.instances,
            max_batch_size=batching.max_batch_size,
            max_queue_delay_ms=batching.max_queue_delay_ms,
            preferred_batch_sizes=batching.preferred_batch_sizes,
            on_execution=_recorder(stats, self.metrics, (name, str(version), fmt)),
            default_signature=signature.name,
            name=f"{thread_name}-batch",
            idle_s=self.idle_thread_s,
        )


def _check_batch_dim(config: ModelConfig, signature: Signature) -> None:
    """``max_batch_size`` > 0 (Triton's meaning: the model takes a batch) on a model without a free leading dim on
    every input and output is a load error, as in Triton, rather than a setting silently dropped."""
    if not config.max_batch_size or signature.batched:
        return
    fixed = [f"{s.name} {list(s.shape)}" for s in (*signature.inputs, *signature.outputs) if not s.batched]
    raise RuntimeLoadError(
        f"max_batch_size {config.max_batch_size} needs a variable-size leading (batch) dim on every input and "
        f"output, but the model has {', '.join(fixed)}; set max_batch_size 0 and give the full dims"
    )


def _recorder(
    stats: ModelStats, metrics: Metrics | None = None, labels: tuple[str, str, str] = ("", "", "")
) -> OnExecution:
    """What every runtime call records (the statistics extension; the batch-size histogram when batching)."""

    def on_execution(requests: int, rows: int, seconds: float) -> None:
        if metrics is not None:
            metrics.observe_batch(labels, requests)
        stats.record_execution(rows, seconds)

    return on_execution
