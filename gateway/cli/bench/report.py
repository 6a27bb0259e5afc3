"""The bench report: a rich table for the terminal and a self-contained HTML page (inline SVG plots, no JS).

matplotlib (the ``bench`` extra) is imported only when the HTML page is rendered.
"""

from __future__ import annotations

import html
import math
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

_COLUMNS = (
    ("model", "variant"),
    ("runtime", "runtime"),
    ("protocol", "proto"),
    ("concurrency", "conc"),
    ("throughput_rps", "req/s"),
    ("p50", "p50 ms"),
    ("p90", "p90 ms"),
    ("p99", "p99 ms"),
    ("error_count", "errors"),
    ("server_p99", "srv p99 ms"),
    ("server_overhead", "srv overhead ms"),
    ("server_compute", "srv compute ms"),
    ("sla", "SLA"),
)


_LEFT = ("model", "runtime", "protocol", "sla")


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{float(value):.{digits}f}"


def _sla_text(run: dict[str, Any]) -> str:
    if run["sla_met"] is None:
        return "no SLA"
    targets = "/".join(f"{k} {v:g}" for k, v in run["sla_ms"].items())
    return f"met ({targets} ms)" if run["sla_met"] else f"missed: {'; '.join(run['sla_misses'])}"


def _cells(run: dict[str, Any]) -> dict[str, str]:
    server = run["server"]
    return {
        "model": run["model"],
        "runtime": run["runtime"],
        "protocol": run["protocol"],
        "concurrency": str(run["concurrency"]),
        "throughput_rps": _num(run["throughput_rps"], 1),
        "p50": _num(run["latency_ms"].get("p50")),
        "p90": _num(run["latency_ms"].get("p90")),
        "p99": _num(run["latency_ms"].get("p99")),
        "error_count": str(run["error_count"]),
        "server_p99": _num(server.get("p99_ms")),
        "server_overhead": _num(server.get("overhead_mean_ms"), 3),
        "server_compute": _num(server.get("compute_mean_ms"), 3),
        "sla": _sla_text(run),
    }


def _is_winner(run: dict[str, Any], best: dict[str, Any] | None) -> bool:
    return bool(best) and all(run[k] == best[k] for k in ("model", "protocol", "concurrency"))  # type: ignore[index]


def winner_text(doc: dict[str, Any]) -> str:
    best = doc.get("winner")
    if doc.get("aborted"):
        return f"Stopped early ({doc['aborted'].splitlines()[0]}); {_winner_line(best)}"
    return _winner_line(best)


def _winner_line(best: dict[str, Any] | None) -> str:
    if not best:
        return "No variant met its SLA at any concurrency."
    return (
        f"Winner: {best['model']} ({best['runtime']}) over {best['protocol']} at concurrency {best['concurrency']}: "
        f"{best['throughput_rps']:.1f} req/s, p99 {_num(best['p99_ms'])} ms (chosen by {best['basis']})"
    )


_TERMINAL = (
    ("variant", "variant"),
    ("protocol", "proto"),
    ("concurrency", "conc"),
    ("throughput_rps", "req/s"),
    ("p50", "p50"),
    ("p90", "p90"),
    ("p99", "p99"),
    ("error_count", "err"),
    ("server_p99", "srv p99"),
    ("server_overhead", "srv ovh"),
    ("server_compute", "srv cmp"),
    ("sla", "SLA"),
)


def terminal_table(doc: dict[str, Any]) -> RenderableType:
    """Runs as rows (latencies in ms); the winner in green, SLA misses in red; the winner line below."""
    table = Table(title="tensorgate bench (latencies in ms)", title_justify="left")
    for key, title in _TERMINAL:
        if key in ("variant", "protocol", "sla"):
            table.add_column(title, no_wrap=key != "sla")
        else:
            table.add_column(title, justify="right", no_wrap=True)
    best = doc.get("winner")
    for run in doc["runs"]:
        cells = _cells(run)
        cells["variant"] = f"{run['model']} ({run['runtime']})"
        cells["sla"] = {True: "met", False: "missed", None: "-"}[run["sla_met"]]
        style = "bold green" if _is_winner(run, best) else ("red" if run["sla_met"] is False else None)
        table.add_row(*(cells[k] for k, _ in _TERMINAL), style=style)
    return Group(table, Text(winner_text(doc), style="bold"))


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #1d1d1f; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
.meta { color: #555; font-size: 13px; }
.winner { background: #e8f6e8; border: 1px solid #7cc47c; padding: 10px 14px; border-radius: 6px; font-weight: 600; }
.none { background: #fdecea; border-color: #e07b73; }
table { border-collapse: collapse; font-size: 12.5px; margin-top: 8px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; }
th { background: #f4f4f6; } td.l, th.l { text-align: left; }
tr.best td { background: #e8f6e8; font-weight: 600; } td.miss { color: #b3261e; } td.met { color: #1e7b34; }
figure { margin: 12px 0 24px 0; } figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 12.5px; color: #555; }
"""


def render_html(doc: dict[str, Any]) -> str:
    """The whole report as one HTML string: summary, winner, table of runs and three inline SVG plots."""
    from gateway.cli.bench.plots import breakdown_svg, latency_svg, throughput_svg  # matplotlib: the bench extra

    settings = doc["settings"]
    best = doc.get("winner")
    rows: list[str] = []
    for run in doc["runs"]:
        cells = _cells(run)
        tds = []
        for key, _ in _COLUMNS:
            cls = "l" if key in _LEFT else ""
            if key == "sla":
                cls = "l " + {True: "met", False: "miss", None: ""}[run["sla_met"]]
            tds.append(f'<td class="{cls.strip()}">{html.escape(cells[key])}</td>')
        row_class = ' class="best"' if _is_winner(run, best) else ""
        rows.append(f"<tr{row_class}>{''.join(tds)}</tr>")
    head = "".join(f'<th class="{"l" if key in _LEFT else ""}">{html.escape(title)}</th>' for key, title in _COLUMNS)
    variants = ", ".join(f"{html.escape(v['model'])} ({html.escape(v['runtime'])})" for v in doc["variants"])
    figures = (
        ("Client latency vs concurrency", latency_svg(doc),
         "p50/p90/p99 measured by the client per variant; solid REST, dashed gRPC; dotted lines are SLA targets."),
        ("Throughput vs concurrency", throughput_svg(doc),
         "Successful requests per second in the measured window; the star marks the winner."),
        ("Server-side breakdown", breakdown_svg(doc),
         "Mean queue, compute and overhead from tensorgate_*_duration_seconds in the window; the black tick is "
         "the client's mean latency, so the gap is network and client time."),
    )  # fmt: skip
    figure_html = "\n".join(
        f"<h2>{html.escape(title)}</h2>\n<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"
        for title, svg, caption in figures
    )
    winner_class = "winner" if best else "winner none"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tensorgate bench report</title>
<style>{_CSS}</style>
</head>
<body>
<h1>tensorgate bench</h1>
<p class="meta">{html.escape(doc["started"])} &middot; gateway {html.escape(settings["url"])}
&middot; protocols {html.escape(", ".join(settings["protocols"]))}
&middot; concurrency {html.escape(", ".join(str(c) for c in settings["concurrency"]))}
&middot; {settings["duration_s"]:g} s windows after {settings["warmup_s"]:g} s warmup &middot; batch {settings["batch"]}
<br>variants: {variants}</p>
<p class="{winner_class}">{html.escape(winner_text(doc))}</p>
<h2>Runs</h2>
<table>
<thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
<p class="meta">Client figures are per request from send to reply; server figures come from the gateway's
histograms in the same window (quantiles interpolated within buckets). SLA: every objective of the model's
config.yaml against the client's percentiles, with no errors.</p>
{figure_html}
</body>
</html>
"""
