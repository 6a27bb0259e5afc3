"""ModelStats: Triton-style per-version statistics (counts and nanoseconds) for the statistics extension."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}

    def merge(self, other: Duration) -> None:
        self.count += other.count
        self.ns += other.ns


@dataclass
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)

    def merge(self, other: BatchStats) -> None:
        self.compute_input.merge(other.compute_input)
        self.compute_infer.merge(other.compute_infer)
        self.compute_output.merge(other.compute_output)


@dataclass
class ModelStats:
    """Every field perf_analyzer reads, zero-filled; the three compute counts always move together."""

    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, BatchStats] = field(default_factory=dict)

    def record_success(self, now_ms: int, batch: int, total: float, queue: float, compute: float) -> None:
        self.last_inference_ms = now_ms
        self.inference_count += batch
        self.success.add(total)
        self.queue.add(queue)
        self.compute_input.add(0.0)
        self.compute_infer.add(compute)
        self.compute_output.add(0.0)

    def record_execution(self, batch: int, compute: float) -> None:
        self.execution_count += 1
        stats = self.batches.get(batch)
        if stats is None:
            stats = self.batches[batch] = BatchStats()
        stats.compute_input.add(0.0)
        stats.compute_infer.add(compute)
        stats.compute_output.add(0.0)

    def record_failure(self, total: float) -> None:
        self.fail.add(total)

    def merge(self, other: ModelStats) -> None:
        """Adds ``other``'s counts into these (the sum over worker processes); the latest last inference wins."""
        self.last_inference_ms = max(self.last_inference_ms, other.last_inference_ms)
        self.inference_count += other.inference_count
        self.execution_count += other.execution_count
        for mine, theirs in (
            (self.success, other.success), (self.fail, other.fail), (self.queue, other.queue),
            (self.compute_input, other.compute_input), (self.compute_infer, other.compute_infer),
            (self.compute_output, other.compute_output),
        ):  # fmt: skip
            mine.merge(theirs)
        for size, batch in other.batches.items():
            self.batches.setdefault(size, BatchStats()).merge(batch)

    def copy(self) -> ModelStats:
        """A copy with nothing shared (taken on the event loop that records these)."""
        out = ModelStats()
        out.merge(self)
        return out

    def to_json(self, name: str, version: str) -> dict[str, Any]:
        zero = Duration().to_json()
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.to_json(),
                "fail": self.fail.to_json(),
                "queue": self.queue.to_json(),
                "compute_input": self.compute_input.to_json(),
                "compute_infer": self.compute_infer.to_json(),
                "compute_output": self.compute_output.to_json(),
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "response_stats": {},
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": b.compute_input.to_json(),
                    "compute_infer": b.compute_infer.to_json(),
                    "compute_output": b.compute_output.to_json(),
                }
                for size, b in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }
