"""``tensorgate bench``: which variant of a model meets its SLA with the most throughput, and at what rate.

Drives REST (binary tensor extension) and gRPC against a running gateway (``--url``) or one it starts on a store
(``--store``): closed loop (``--concurrency``: N requests in flight) and open loop (``--rate``: requests sent at a
rate, Poisson or constant, each timed from its intended send time, so backlog shows), and ``--sweep`` finds the
highest rate meeting the SLA per variant. The SLA verdict comes from the open loop when there is one. Requests
carry the model's golden samples (their real free dimensions) when the store has them, or ``--input-data``
(perf_analyzer's JSON format), else random tensors. Reads the gateway's own histograms before and after each
window, and writes a terminal table, a JSON file and a self-contained HTML report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from gateway.cli.bench.inputs import InputError, Sample, golden_samples, perf_analyzer_samples
from gateway.cli.bench.load import (
    HttpxLoad,
    LoadWindow,
    RestLoad,
    closed_loop,
    open_loop,
    random_inputs,
    round_robin,
)
from gateway.cli.bench.report import render_html, terminal_table
from gateway.cli.bench.result import Run, Variant, capacity, verdict_runs, winner
from gateway.cli.bench.route import RouteBenchError, drive_route, route_html, route_table, shadow_lines
from gateway.cli.bench.scrape import ServerWindow, Snapshot, parse_snapshot, window
from gateway.cli.bench.server import GatewayProcess
from gateway.grpc.client import GrpcLoad

PROTOCOLS = ("rest", "grpc")
_SETTLE_S = 0.02  # lets the gateway record the last responses of a window before /metrics is read


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("gateway")
    where.add_argument("--url", help="REST address of a running gateway, e.g. 127.0.0.1:8000")
    where.add_argument("--grpc-url", help="gRPC address of that gateway, e.g. 127.0.0.1:8001")
    where.add_argument("--metrics-url", help="where /metrics is served (default: the REST address)")
    where.add_argument(
        "--store", help="model store: without --url, a gateway is started on it on free ports and stopped after"
    )
    where.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra argument for the started gateway, e.g. --server-arg=--log-level=debug (repeatable)",
    )
    what = parser.add_argument_group("what to measure")
    pick = what.add_mutually_exclusive_group(required=True)
    pick.add_argument("--models", help="comma-separated model names (the variants to compare)")
    pick.add_argument("--source", help="every variant exported from this source model (<source>_<format>)")
    pick.add_argument(
        "--route", help="drive one route (REST, the first --concurrency level) and plot which variant served over time"
    )
    what.add_argument(
        "--concurrency", default="1,4,16", help="closed loop: comma-separated in-flight request counts ('' for none)"
    )
    what.add_argument("--rate", default="", help="open loop: comma-separated request rates (requests/s)")
    what.add_argument("--arrivals", choices=["poisson", "constant"], default="poisson", help="open-loop arrivals")
    what.add_argument(
        "--sweep", action="store_true", help="find the highest open-loop rate meeting the SLA, per variant and protocol"
    )
    what.add_argument("--sweep-steps", type=int, default=6, help="open-loop runs per sweep (bisection)")
    what.add_argument(
        "--verdict",
        choices=["open", "closed"],
        default="open",
        help="which loop's runs the SLA verdict and winner come from (open: when there are open-loop runs)",
    )
    what.add_argument(
        "--input-data", type=Path, help="request inputs in perf_analyzer's --input-data JSON format (cycled through)"
    )
    what.add_argument(
        "--inputs",
        choices=["auto", "golden", "random"],
        default="auto",
        help="auto: the model's golden samples when the store has them, else random tensors",
    )
    what.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    what.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load before each run")
    what.add_argument("--protocol", choices=["rest", "grpc", "both"], help="default: both when a gRPC address is known")
    what.add_argument("--batch", type=int, help="rows per request (default: as in each sample; 1 for random inputs)")
    what.add_argument("--seed", type=int, default=0, help="seed of the random input tensors")
    what.add_argument(
        "--rest-client",
        choices=["raw", "httpx"],
        default="raw",
        help="raw: a minimal keep-alive HTTP/1.1 client (~50 us CPU per request); httpx: the reference client",
    )
    what.add_argument("--sla-p50-ms", type=float, help="p50 objective for models whose config has no SLA")
    what.add_argument("--sla-p99-ms", type=float, help="p99 objective for models whose config has no SLA")
    what.add_argument("--request-timeout", type=float, default=30.0, help="seconds before a request counts as an error")
    what.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for models to be ready")
    out = parser.add_argument_group("output")
    out.add_argument("--json", type=Path, help="write every figure as JSON here")
    out.add_argument("--html", type=Path, help="write a self-contained HTML report with plots here")
    out.add_argument("--no-progress", action="store_true", help="no live progress bars")


@dataclass
class Plan:
    """What one bench invocation measures, and where."""

    http_url: str
    grpc_target: str | None
    metrics_url: str
    variants: list[Variant]
    protocols: list[str]
    concurrency: list[int]
    duration: float
    warmup: float
    batch: int
    seed: int
    rest_client: str = "raw"
    request_timeout: float = 30.0
    inputs: dict[str, list[Sample]] = field(default_factory=dict)  # model -> samples, one request each
    input_source: dict[str, str] = field(default_factory=dict)  # model -> golden / input-data / random
    rates: list[float] = field(default_factory=list)
    arrivals: str = "poisson"
    sweep: bool = False
    sweep_steps: int = 6
    verdict: str = "open"

    def settings(self) -> dict[str, Any]:
        return {
            "url": self.http_url,
            "grpc_url": self.grpc_target,
            "metrics_url": self.metrics_url,
            "models": [v.model for v in self.variants],
            "protocols": self.protocols,
            "concurrency": self.concurrency,
            "duration_s": self.duration,
            "warmup_s": self.warmup,
            "batch": self.batch,
            "seed": self.seed,
            "rest_client": self.rest_client,
            "request_timeout_s": self.request_timeout,
            "rates": self.rates,
            "arrivals": self.arrivals,
            "sweep": self.sweep,
            "verdict": self.verdict,
            "inputs": {
                model: {"source": self.input_source.get(model), "shapes": [[list(t.shape) for t in s] for s in samples]}
                for model, samples in self.inputs.items()
            },
        }


class BenchError(Exception):
    """A problem with the bench's arguments or the gateway it drives; the message says what to change."""


def http_url(address: str) -> str:
    address = address.rstrip("/")
    return address if "://" in address else f"http://{address}"


def parse_levels(text: str, allow_empty: bool = False) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchError(f"--concurrency takes comma-separated integers, got {text!r}") from None
    if (not levels and not allow_empty) or any(n < 1 for n in levels):
        raise BenchError(f"--concurrency levels must be >= 1, got {text!r}")
    return sorted(set(levels))


def parse_rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchError(f"--rate takes comma-separated requests/s, got {text!r}") from None
    if any(r <= 0 for r in rates):
        raise BenchError(f"--rate values must be > 0, got {text!r}")
    return sorted(set(rates))


def run_bench(args: argparse.Namespace) -> int:
    """Entry point of ``tensorgate bench``; returns the process exit code."""
    console = Console(stderr=True)
    try:
        if args.duration <= 0 or args.warmup < 0 or (args.batch is not None and args.batch < 1):
            raise BenchError("--duration must be > 0, --warmup >= 0 and --batch >= 1")
        rates = parse_rates(args.rate)
        levels = parse_levels(args.concurrency, allow_empty=bool(rates) or args.sweep or bool(args.route))
        args.rates = rates
        if args.route:
            return _run_route(args, console, levels[0] if levels else 16)
        with _gateway(args, console) as (rest_url, grpc_target, metrics_url):
            plan = _plan(args, rest_url, grpc_target, metrics_url, levels)
            doc = _run(plan, console, progress=not args.no_progress)
    except BenchError as exc:
        console.print(f"[bold red]tensorgate bench:[/] {exc}")
        return 2
    if doc["aborted"]:
        console.print(f"[bold red]tensorgate bench stopped early:[/] {doc['aborted']}")
    out = Console()
    if not out.is_terminal:  # piped or captured: room for every column instead of 80
        out = Console(width=160)
    out.print(terminal_table(doc))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        console.print(f"JSON written to {args.json}")
    if args.html is not None:
        try:
            page = render_html(doc)
        except ImportError as exc:
            console.print(f"[bold red]tensorgate bench:[/] the HTML report needs matplotlib ({exc}): "
                          "pip install 'tensorgate[bench]'")  # fmt: skip
            return 2
        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(page, encoding="utf-8")
        console.print(f"HTML report written to {args.html}")
    return 1 if doc["aborted"] else 0


def _run_route(args: argparse.Namespace, console: Console, concurrency: int) -> int:
    """``--route``: one closed-loop run against the route; the table, and the timeline as JSON and HTML."""
    with _gateway(args, console) as (rest_url, _grpc_target, _metrics_url):
        console.print(f"driving route {args.route} for {args.duration:.0f}s at concurrency {concurrency} ...")
        try:
            doc = asyncio.run(
                drive_route(rest_url, args.route, concurrency, args.duration, batch=args.batch or 1, seed=args.seed)
            )
        except RouteBenchError as exc:
            raise BenchError(str(exc)) from None
    out = Console(width=160)
    out.print(route_table(doc))
    for line in shadow_lines(doc):
        out.print(line)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        console.print(f"JSON written to {args.json}")
    if args.html is not None:
        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(route_html(doc), encoding="utf-8")
        console.print(f"HTML report written to {args.html}")
    return 1 if doc["errors"] else 0


@contextlib.contextmanager
def _gateway(args: argparse.Namespace, console: Console) -> Iterator[tuple[str, str | None, str]]:
    if args.url:
        rest = http_url(args.url)
        yield rest, args.grpc_url, http_url(args.metrics_url) if args.metrics_url else rest
        return
    if not args.store:
        raise BenchError("give --url (a running gateway) or --store (start one)")
    console.print(f"starting a gateway on {args.store} ...")
    server = GatewayProcess(args.store, args.server_arg)
    try:
        server.start(timeout=args.ready_timeout)
    except (RuntimeError, TimeoutError) as exc:
        raise BenchError(str(exc)) from None
    try:
        console.print(f"gateway ready: REST {server.http_url}, gRPC {server.grpc_target}")
        metrics = http_url(args.metrics_url) if args.metrics_url else server.metrics_url
        yield server.http_url, server.grpc_target, metrics
    except BenchError as exc:
        code = server.proc.poll() if server.proc is not None else None
        if code is None:
            raise
        raise BenchError(f"{exc}\nthe gateway exited with code {code}; its log ends:\n{server.log()}") from None
    finally:
        server.stop()


def _plan(
    args: argparse.Namespace, rest_url: str, grpc_target: str | None, metrics_url: str, levels: list[int]
) -> Plan:
    protocol = args.protocol or ("both" if grpc_target else "rest")
    protocols = list(PROTOCOLS) if protocol == "both" else [protocol]
    if "grpc" in protocols and not grpc_target:
        raise BenchError("--protocol grpc/both needs --grpc-url (or --store)")
    sla_default = {k: v for k, v in (("p50", args.sla_p50_ms), ("p99", args.sla_p99_ms)) if v is not None}
    with httpx.Client(base_url=rest_url, timeout=10) as client:
        names = _model_names(args, client)
        variants = [_variant(client, name, sla_default, args.ready_timeout) for name in names]
    plan = Plan(
        http_url=rest_url,
        grpc_target=grpc_target,
        metrics_url=metrics_url,
        variants=variants,
        protocols=protocols,
        concurrency=levels,
        duration=float(args.duration),
        warmup=float(args.warmup),
        batch=int(args.batch or 1),
        seed=int(args.seed),
        rest_client=str(args.rest_client),
        request_timeout=float(args.request_timeout),
        rates=list(args.rates),
        arrivals=str(args.arrivals),
        sweep=bool(args.sweep),
        sweep_steps=max(1, int(args.sweep_steps)),
        verdict=str(args.verdict),
    )
    for v in variants:
        plan.input_source[v.model], plan.inputs[v.model] = _inputs(args, v)
    return plan


def _inputs(args: argparse.Namespace, variant: Variant) -> tuple[str, list[Sample]]:
    """Where a variant's requests come from, and the samples (one pre-encoded request each)."""
    try:
        if args.input_data is not None:
            return "input-data", perf_analyzer_samples(args.input_data, variant.inputs, args.batch or 1)
        if args.inputs != "random" and args.store:
            samples = golden_samples(args.store, variant.model, variant.inputs, args.batch)
            if samples:
                return "golden", samples
            if args.inputs == "golden":
                raise BenchError(f"{variant.model!r} has no golden samples in {args.store}")
        elif args.inputs == "golden":
            raise BenchError("--inputs golden needs --store (where the golden samples are)")
    except InputError as exc:
        raise BenchError(str(exc)) from None
    return "random", [random_inputs(variant.inputs, args.batch or 1, args.seed)]


def _model_names(args: argparse.Namespace, client: httpx.Client) -> list[str]:
    if args.models:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
        if not names:
            raise BenchError("--models is empty")
        return list(dict.fromkeys(names))
    names = _source_variants_in_store(args.store, args.source) if args.store else []
    if not names:
        names = _source_variants_served(client, args.source)
    if not names:
        raise BenchError(f"no variant of source model {args.source!r} found (expected {args.source}_<format>)")
    return names


def _source_variants_in_store(store_uri: str, source: str) -> list[str]:
    """Models whose config.yaml says ``source: {model: <source>}``."""
    from model_store import open_store
    from model_store.config import ConfigError, ModelConfig

    store = open_store(store_uri)
    found: list[str] = []
    for name in store.list_models():
        try:
            config = ModelConfig.from_file(store.read_config(name), name)
        except ConfigError:
            continue
        if config.source.get("model") == source:
            found.append(name)
    return sorted(found)


def _source_variants_served(client: httpx.Client, source: str) -> list[str]:
    """Served models named ``<source>_<format>`` (the names ``tensorgate export`` writes)."""
    from runtimes import RUNTIMES

    response = client.post("/v2/repository/index", content=b"{}")
    if response.status_code != 200:
        raise BenchError(f"{client.base_url}/v2/repository/index answered {response.status_code}")
    wanted = {f"{source}_{fmt}" for fmt in RUNTIMES}
    return sorted({row["name"] for row in response.json() if row.get("name") in wanted})


def _variant(client: httpx.Client, name: str, sla_default: dict[str, float], timeout: float) -> Variant:
    deadline = time.monotonic() + timeout
    while True:
        try:
            ready = client.get(f"/v2/models/{name}/ready")
        except httpx.HTTPError as exc:
            raise BenchError(f"cannot reach the gateway at {client.base_url}: {exc}") from None
        if ready.status_code == 200:
            break
        if ready.status_code == 404:
            raise BenchError(f"model {name!r} is not served by {client.base_url}")
        if time.monotonic() > deadline:
            raise BenchError(f"model {name!r} not ready after {timeout:.0f}s: {ready.text[:300]}")
        time.sleep(0.2)
    meta = client.get(f"/v2/models/{name}")
    if meta.status_code != 200:
        raise BenchError(f"metadata of {name!r} answered {meta.status_code}: {meta.text[:300]}")
    return Variant.from_metadata(meta.json(), sla_default)


def _run(plan: Plan, console: Console, progress: bool) -> dict[str, Any]:
    """Measure every run; if the gateway stops answering midway, the runs so far are kept and ``aborted`` says why."""
    started = dt.datetime.now(dt.UTC)
    runs: list[Run] = []
    aborted: str | None = None
    try:
        _event_loop(_measure(plan, console, progress, runs))
    except BenchError as exc:
        if not runs:
            raise
        aborted = str(exc)
    judged = verdict_runs(runs, plan.verdict)
    best = winner(judged)
    sweeps: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        if r.mode == "sweep":
            sweeps.setdefault((r.model, r.protocol), []).append(r)
    return {
        "tool": "tensorgate bench",
        "started": started.isoformat(timespec="seconds"),
        "settings": plan.settings(),
        "variants": [v.to_json() for v in plan.variants],
        "runs": [r.to_json() for r in runs],
        "winner": best,
        "winner_by_protocol": {p: winner([r for r in judged if r.protocol == p]) for p in plan.protocols},
        "verdict": "open loop" if judged and judged[0].mode != "closed" else "closed loop",
        "capacity": [capacity(steps) for steps in sweeps.values()],
        "aborted": aborted,
    }


def _event_loop(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(coro)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)


async def _measure(plan: Plan, console: Console, show_progress: bool, runs: list[Run]) -> None:
    loaders = _loaders(plan)
    metrics = httpx.AsyncClient(base_url=plan.metrics_url, timeout=10)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
    )
    try:
        for variant in plan.variants:
            for loader in loaders.values():
                for sample in plan.inputs[variant.model]:
                    try:
                        await loader.check(variant.model, sample)
                    except (RuntimeError, httpx.HTTPError) as exc:
                        raise BenchError(f"{variant.model}: a first request failed: {exc!r}") from None
        with progress:
            for level in plan.concurrency:
                for variant in plan.variants:
                    for protocol, loader in loaders.items():
                        await _one_run(plan, variant, protocol, loader, level, metrics, progress, runs)
            for rate in plan.rates:
                for variant in plan.variants:
                    for protocol, loader in loaders.items():
                        await _one_run(plan, variant, protocol, loader, rate, metrics, progress, runs, mode="open")
            if plan.sweep:
                for variant in plan.variants:
                    for protocol, loader in loaders.items():
                        await _sweep(plan, variant, protocol, loader, metrics, progress, runs)
    finally:
        for loader in loaders.values():
            await loader.close()
        await metrics.aclose()


Loader = RestLoad | HttpxLoad | GrpcLoad


def _loaders(plan: Plan) -> dict[str, Loader]:
    loaders: dict[str, Loader] = {}
    if "rest" in plan.protocols:
        if plan.rest_client == "httpx":
            loaders["rest"] = HttpxLoad(plan.http_url, max(plan.concurrency), plan.request_timeout)
        else:
            loaders["rest"] = RestLoad(plan.http_url, plan.request_timeout)
    if "grpc" in plan.protocols and plan.grpc_target:
        loaders["grpc"] = GrpcLoad(plan.grpc_target, plan.request_timeout)
    return loaders


async def _scrape(metrics: httpx.AsyncClient, model: str, protocol: str, when: str) -> Snapshot:
    try:
        response = await metrics.get("/metrics")
    except httpx.HTTPError as exc:
        raise BenchError(
            f"the gateway stopped answering: {metrics.base_url}/metrics failed ({type(exc).__name__}) {when}"
        ) from None
    if response.status_code != 200:
        raise BenchError(f"{metrics.base_url}/metrics answered {response.status_code} {when}")
    return parse_snapshot(response.text, model, protocol)


async def _sweep(
    plan: Plan,
    variant: Variant,
    protocol: str,
    loader: Loader,
    metrics: httpx.AsyncClient,
    progress: Progress,
    runs: list[Run],
) -> None:
    """Bisect the open-loop rate between 0 and 1.25x the closed loop's best throughput for the highest rate that
    meets the SLA (each step a full window; the steps are kept as ``sweep`` runs)."""
    if not variant.sla_ms:
        return
    closed = [r.throughput_rps for r in runs if r.model == variant.model and r.protocol == protocol and r.ok]
    if closed:
        top = max(closed)
    else:  # a short closed-loop probe for the order of magnitude
        send = round_robin([loader.sender(variant.model, s) for s in plan.inputs[variant.model]])
        top = (await closed_loop(send, 8, min(plan.duration, 3.0))).throughput
    lo, hi = 0.0, max(top * 1.25, 1.0)
    rate = max(top * 0.9, 1.0)
    for _ in range(plan.sweep_steps):
        run = await _one_run(plan, variant, protocol, loader, rate, metrics, progress, runs, mode="sweep")
        if run.sla_met:
            lo = rate
        else:
            hi = rate
        rate = (lo + hi) / 2 if lo > 0 else hi / 2


async def _one_run(
    plan: Plan,
    variant: Variant,
    protocol: str,
    loader: Loader,
    level: float,
    metrics: httpx.AsyncClient,
    progress: Progress,
    runs: list[Run],
    mode: str = "closed",
) -> Run:
    """Measure one window (closed loop at concurrency ``level``, or open loop at rate ``level``) and append its
    Run; when /metrics cannot be read afterwards, the client's figures are still appended (without server figures)
    before the error stops the bench."""
    load_label = f"c={int(level)}" if mode == "closed" else f"{mode} {level:.0f}/s"
    label = f"{variant.model} [{variant.runtime}] {protocol} {load_label}"
    task = progress.add_task(label, total=plan.warmup + plan.duration, status="warmup")
    send = round_robin([loader.sender(variant.model, s) for s in plan.inputs[variant.model]])

    async def drive(seconds: float, offset: float, phase: str) -> LoadWindow:
        tick = _ticker(progress, task, offset, phase)
        if mode == "closed":
            return await closed_loop(send, int(level), seconds, tick)
        return await open_loop(send, level, seconds, plan.arrivals, plan.seed, on_tick=tick)

    if plan.warmup > 0:
        await drive(plan.warmup, 0.0, "warmup")
    await asyncio.sleep(_SETTLE_S)
    before = await _scrape(metrics, variant.model, protocol, f"after the warmup of {label}")
    load = await drive(plan.duration, plan.warmup, "run")
    await asyncio.sleep(_SETTLE_S)
    try:
        after = await _scrape(metrics, variant.model, protocol, f"after {label}")
    except BenchError:
        runs.append(Run.measured(variant, protocol, plan.batch, load, ServerWindow(0, {}, {})))
        progress.update(task, status="the gateway stopped answering")
        raise
    run = Run.measured(variant, protocol, plan.batch, load, window(before, after))
    if mode == "sweep":
        run.mode = "sweep"
    runs.append(run)
    verdict = {True: "SLA met", False: "SLA missed", None: "no SLA"}[run.sla_met]
    status = f"{run.throughput_rps:8.1f} req/s  p99 {run.latency_ms['p99']:7.2f} ms  {verdict}"
    progress.update(task, completed=plan.warmup + plan.duration, status=status)
    return run


def _ticker(progress: Progress, task: TaskID, offset: float, phase: str) -> Callable[[LoadWindow, float], None]:
    def tick(load: LoadWindow, elapsed: float) -> None:
        rate = len(load.latencies_ns) / elapsed if elapsed > 0 else 0.0
        errors = sum(load.errors.values())
        status = f"{phase}: {rate:8.1f} req/s" + (f"  {errors} errors" if errors else "")
        progress.update(task, completed=offset + elapsed, status=status)

    return tick


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tensorgate bench", description=__doc__)
    add_bench_arguments(parser)
    return run_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
