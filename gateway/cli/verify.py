"""``tensorgate verify`` and the golden check: run each model's golden samples (in-process or through a running
gateway over V2 REST) and compare every output with the recorded one, within the config's verify tolerances.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from rich.console import Console
from rich.table import Table

from model_store import ModelConfig, ModelStore, open_store
from model_store.golden import Golden, Result, check_golden, failures, load_golden
from runtimes import detect_format, runtime_class

# ---------------------------------------------------------------------------------------------- whole store


@dataclass(frozen=True)
class VariantReport:
    """The golden check of one model version (a variant), or why it could not run."""

    model: str
    version: int | None
    runtime: str
    results: tuple[Result, ...] = ()
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and all(r.ok for r in self.results)

    @property
    def label(self) -> str:
        return self.model if self.version is None else f"{self.model} v{self.version}"


class RemoteModel:
    """One model version behind a V2 REST endpoint, called with tritonclient's binary tensor extension."""

    def __init__(self, client: Any, model: str, version: int) -> None:
        self.client, self.model, self.version = client, model, version

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        from tritonclient.http import InferInput, InferRequestedOutput
        from tritonclient.utils import np_to_triton_dtype

        request = []
        for name, array in inputs.items():
            item = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            item.set_data_from_numpy(array, binary_data=True)
            request.append(item)
        wanted = [InferRequestedOutput(n, binary_data=True) for n in outputs] if outputs else None
        result = self.client.infer(self.model, request, model_version=str(self.version), outputs=wanted)
        names = [o["name"] for o in result.get_response().get("outputs", [])]
        return {n: result.as_numpy(n) for n in names}


def verify_store(store: ModelStore, models: Sequence[str] | None = None, url: str | None = None) -> list[VariantReport]:
    """Golden-check each model (every version its policy serves): in-process, or through ``url`` when given.
    Models without golden samples are reported (a problem only when named in ``models``)."""
    client = _client(url) if url else None
    reports = []
    for model in models or store.list_models():
        try:
            config = ModelConfig.from_file(store.read_config(model), model)
            versions = config.version_policy.select(store.list_versions(model))
            goldens = {version: load_golden(store, model, version) for version in versions}
        except Exception as exc:
            reports.append(VariantReport(model, None, "?", problem=str(exc)))
            continue
        if not versions:
            reports.append(VariantReport(model, None, config.runtime or "?", problem="no version to check"))
            continue
        if not any(goldens.values()):
            reports.append(VariantReport(model, None, config.runtime or "?", problem="no golden samples"))
            continue
        for version in versions:
            if not goldens[version]:
                reports.append(VariantReport(model, version, config.runtime or "?", problem="no golden samples"))
                continue
            reports.append(_verify_version(store, model, version, config, goldens[version], client))
    return reports


def _verify_version(
    store: ModelStore, model: str, version: int, config: ModelConfig, golden: Golden, client: Any
) -> VariantReport:
    fmt: str = config.runtime or "?"
    try:
        if client is not None:
            return VariantReport(
                model, version, fmt, tuple(check_golden(RemoteModel(client, model, version), golden, config.verify))
            )
        path = Path(store.fetch(model, version))
        try:
            fmt = config.runtime or detect_format(path, config.options.get("filename"))
            runtime = runtime_class(fmt)()
            runtime.load(path, config.runtime_options())
            try:
                return VariantReport(model, version, fmt, tuple(check_golden(runtime, golden, config.verify)))
            finally:
                runtime.unload()
        finally:
            store.release(model, version, path)
    except Exception as exc:
        return VariantReport(model, version, fmt, problem=f"{type(exc).__name__}: {exc}")


def shadow_report(url: str) -> list[str]:
    """What the gateway at ``url`` measured of its routes' shadow variants on live traffic (cumulative since it
    started): calls, comparisons within/beyond tolerance, largest abs/rel error per output, argmax agreement."""
    import httpx

    from gateway.cli.bench.route import shadow_figures, shadow_lines

    parsed = urlparse(url if "://" in url else f"http://{url}")
    text = httpx.get(f"{parsed.scheme}://{parsed.netloc}/metrics", timeout=30).text
    routes = sorted(set(re.findall(r'^tensorgate_shadow_requests_total\{[^}]*route="([^"]+)"', text, re.MULTILINE)))
    lines: list[str] = []
    for route in routes:
        lines.append(f"route {route}, shadow traffic on live requests:")
        lines.extend(f"  {line}" for line in shadow_lines({"shadow": shadow_figures(text, route)}))
    return lines


def _client(url: str) -> Any:
    try:
        import tritonclient.http as httpclient
    except ImportError as exc:
        raise RuntimeError(f"--url needs tritonclient[http]: {exc}") from exc
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if not parsed.netloc:
        raise ValueError(f"--url {url!r} has no host:port")
    return httpclient.InferenceServerClient(parsed.netloc, ssl=parsed.scheme == "https")


def report_table(reports: Sequence[VariantReport]) -> Table:
    """One row per variant and output: worst errors over the samples, tolerance, status."""
    table = Table(title="golden check")
    for column in ("model", "version", "runtime", "output", "max abs err", "max rel err", "atol / rtol", "status"):
        table.add_column(column, justify="right" if "err" in column else "left", no_wrap=True)
    for report in reports:
        if report.problem is not None:
            skipped = report.problem == "no golden samples"
            status = "[yellow]skipped[/]" if skipped else "[red]ERROR[/]"
            table.add_row(report.model, _version(report), report.runtime, "", "", "", "", status)
            continue
        by_output: dict[str, list[Result]] = {}
        for result in report.results:
            by_output.setdefault(result.output, []).append(result)
        for output, results in by_output.items():
            ok = all(r.ok for r in results)
            table.add_row(
                report.model,
                _version(report),
                report.runtime,
                output,
                f"{max(r.max_abs for r in results):.3g}",
                f"{max(r.max_rel for r in results):.3g}",
                f"{results[0].atol:g} / {results[0].rtol:g}",
                "[green]ok[/]" if ok else "[red]FAIL[/]",
            )
    return table


def _version(report: VariantReport) -> str:
    return "" if report.version is None else str(report.version)


# ---------------------------------------------------------------------------------------------- command line


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, help="store holding the models, configs and golden samples")
    parser.add_argument("--models", help="comma-separated model names (default: every model in the store)")
    parser.add_argument(
        "--url", help="a running gateway's HTTP address (http://127.0.0.1:8000); default: load the models here"
    )


def run_verify(args: argparse.Namespace) -> int:
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 150)
    errors = Console(stderr=True)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    try:
        reports = verify_store(open_store(args.store), models, args.url)
    except Exception as exc:
        errors.print(f"[red]verify failed:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    console.print(report_table(reports))
    if args.url:
        for line in shadow_report(args.url):
            console.print(line, highlight=False, soft_wrap=True)
    failed = [r for r in reports if not r.ok and not (r.problem == "no golden samples" and models is None)]
    for report in failed:
        reason = report.problem or failures(report.results)
        errors.print(f"[red]FAIL[/] {report.label} ({report.runtime}): {reason}", highlight=False, soft_wrap=True)
    checked = sum(1 for r in reports if r.results)
    if failed:
        errors.print(f"{len(failed)} of {len(reports)} variants failed", highlight=False, soft_wrap=True)
        return 1
    console.print(f"{checked} variants match their golden samples", highlight=False, soft_wrap=True)
    return 0
