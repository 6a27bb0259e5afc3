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
    ("load", "load"),
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
        "load": _load_text(run),
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


def _load_text(run: dict[str, Any]) -> str:
    """``c=16`` for a closed-loop run; ``open 850/s`` (or ``sweep 850/s``) for an open-loop one."""
    mode = run.get("mode", "closed")
    return f"c={run['concurrency']}" if mode == "closed" else f"{mode} {run['rate_rps']:.0f}/s"


def _is_winner(run: dict[str, Any], best: dict[str, Any] | None) -> bool:
    keys = ("model", "protocol", "concurrency", "mode", "rate_rps")
    return bool(best) and all(run.get(k) == best.get(k) for k in keys)  # type: ignore[union-attr]


def winner_text(doc: dict[str, Any]) -> str:
    best = doc.get("winner")
    if doc.get("aborted"):
        return f"Stopped early ({doc['aborted'].splitlines()[0]}); {_winner_line(best)}"
    return _winner_line(best)


def _winner_line(best: dict[str, Any] | None) -> str:
    if not best:
        return "No variant met its SLA at any concurrency."
    where = (
        f"concurrency {best['concurrency']}"
        if best.get("mode", "closed") == "closed"
        else f"an offered {best['rate_rps']:.0f} req/s ({best['mode']} loop)"
    )
    return (
        f"Winner: {best['model']} ({best['runtime']}) over {best['protocol']} at {where}: "
        f"{best['throughput_rps']:.1f} req/s, p99 {_num(best['p99_ms'])} ms (chosen by {best['basis']})"
    )


def capacity_lines(doc: dict[str, Any]) -> list[str]:
    """One line per swept variant and protocol: the highest rate that met the SLA."""
    out = []
    for c in doc.get("capacity") or []:
        targets = "/".join(f"{k} {v:g} ms" for k, v in c["sla_ms"].items())
        found = (
            f"{c['max_rate_rps']:.0f} req/s (p99 {_num(c['p99_ms'])} ms)"
            if c["max_rate_rps"]
            else "no rate tried met it"
        )
        out.append(f"Capacity of {c['model']} ({c['runtime']}) over {c['protocol']} within {targets}: {found}")
    return out


_TERMINAL = (
    ("variant", "variant"),
    ("protocol", "proto"),
    ("load", "load"),
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
    lines = [Text(winner_text(doc), style="bold"), *(Text(line) for line in capacity_lines(doc))]
    return Group(table, *lines)


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
    capacity_html = _capacity_html(doc)
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
{capacity_html}
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


def _capacity_html(doc: dict[str, Any]) -> str:
    """The sweep's answer as a table: per variant and protocol, the highest open-loop rate within the SLA."""
    rows = doc.get("capacity") or []
    if not rows:
        return ""
    arrivals = html.escape(str(doc["settings"].get("arrivals")))
    body = "".join(
        f'<tr><td class="l">{html.escape(c["model"])} ({html.escape(c["runtime"])})</td>'
        f'<td class="l">{html.escape(c["protocol"])}</td>'
        f"<td>{html.escape('/'.join(f'{k} {v:g}' for k, v in c['sla_ms'].items()))}</td>"
        f"<td>{_num(c['max_rate_rps'], 0)}</td><td>{_num(c['p99_ms'])}</td>"
        f"<td>{html.escape(', '.join(f'{r:.0f}' for r in c['tried_rps']))}</td></tr>"
        for c in rows
    )
    return (
        '<h2>Capacity: the highest rate meeting the SLA</h2>\n<table><thead><tr><th class="l">variant</th>'
        '<th class="l">proto</th><th>SLA ms</th><th>max req/s</th><th>p99 ms there</th><th>rates tried</th>'
        f'</tr></thead><tbody>{body}</tbody></table>\n<p class="meta">Open loop ({arrivals} '
        "arrivals), each request timed from its intended send time; bisection between 0 and 1.25x the closed "
        "loop's best throughput.</p>"
    )
