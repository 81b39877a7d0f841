"""The HTML report: measurements in, one self-contained page out.

Charts are drawn by matplotlib as inline SVG (text kept as text, so the page is searchable
and stays small); no script, stylesheet or font is fetched, so the page opens offline and
can be mailed or attached to an issue as one file. matplotlib is the `report` extra.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from dlc.errors import InputError

if TYPE_CHECKING:
    from dlc.bench import BenchResult
    from dlc.profile import Profile
    from dlc.verify import VerifyReport

BARS = 30  # kernels drawn in the time chart; the table lists all
KERNEL_CURVES = 6  # heaviest kernels that get their own tuning curve


@dataclass(frozen=True)
class KernelCurve:
    kernel: str
    default_us: float | None
    points: tuple[tuple[int, float], ...]  # (trials of this kernel, best µs so far)


@dataclass(frozen=True)
class TuningCurves:
    logs: Path
    model_runs: tuple[tuple[str, tuple[tuple[int, float], ...]], ...]  # (run id, ((trials, estimated ms), ...))
    kernels: tuple[KernelCurve, ...]


def require_plotting() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise InputError("dlc report draws its charts with matplotlib, which is not installed",
                         hint="pip install 'dlc[report]' (or matplotlib)") from err


def collect_tuning(library: Path | str, logs: Path | str) -> TuningCurves:
    """The tuning curves in `logs` for the library's target and model: the estimated model
    time of each tuning run of this model, and the best time per kernel against its trials."""
    from dlc.logfiles import BAD, read_jsonl
    from dlc.logstore import open_folder
    from dlc.runtime import read_manifest

    manifest = read_manifest(library)
    folder = Path(logs) / manifest.data["target"]["key"]
    if not (folder / "target.json").is_file():
        raise InputError(f"no tuning logs for target key {manifest.data['target']['key']} in '{logs}'",
                         hint="pass the --logs directory `dlc tune` wrote for this library's target")
    store = open_folder(folder)
    sha = manifest.data.get("model", {}).get("sha256")
    mine = {run for run, line in store.contributions.items()
            if isinstance(line.get("model"), dict) and line["model"].get("sha256") == sha}
    # A curve's run is named by the time its search started, a moment after its tuning run's
    # contribution was stamped: the run is the latest tuning contribution stamped before it.
    tunes = sorted((line["time"], run) for run, line in store.contributions.items()
                   if line.get("kind") == "tune" and isinstance(line.get("time"), str))
    runs: dict[str, list[tuple[int, float]]] = {}
    for _, _, line in read_jsonl(folder / "curve.jsonl"):
        if line is BAD or not isinstance(line.get("run"), str):
            continue
        owner = next((run for stamped, run in reversed(tunes) if stamped <= line["run"]), None)
        if mine and owner not in mine:
            continue
        try:
            runs.setdefault(line["run"], []).append((int(line["trials"]), float(line["estimated_us"]) / 1e3))
        except (KeyError, TypeError, ValueError):
            continue
    kernels = []
    names = set(manifest.data.get("kernels") or ())
    by_task: dict[str, list] = {}
    for workload, trials in store.trials.items():
        for trial in trials:
            if trial.task in names and (not mine or trial.run in mine):
                by_task.setdefault(trial.task, []).append((workload, trial))
    for task, found in by_task.items():
        workload = found[0][0]
        best, points = None, []
        for _, trial in found:
            if trial.candidate_hash == "default" or not trial.run_secs:
                continue
            us = sum(trial.run_secs) / len(trial.run_secs) * 1e6
            best = us if best is None else min(best, us)
            points.append((len(points) + 1, best))
        if points:
            default = store.default_seconds(workload)
            kernels.append(KernelCurve(task, None if default is None else default * 1e6, tuple(points)))
    return TuningCurves(Path(logs), tuple((run, tuple(sorted(p))) for run, p in runs.items()), tuple(kernels))


def render_report(
    *,
    model: Path,
    library: Path,
    profile: Profile,
    bench: BenchResult,
    accuracy: VerifyReport,
    tuning: TuningCurves | None = None,
) -> str:
    """The whole page as one string."""
    from dlc.hostcpu import host_cpu_name
    from dlc.runtime import read_manifest

    manifest = read_manifest(library).data
    versions = ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items())
    dlc_ms, ort_ms = bench.median("dlc"), bench.median("onnxruntime")
    summary = (f"dlc {dlc_ms:.3f} ms vs ONNX Runtime {ort_ms:.3f} ms (median, {bench.threads} threads): "
               f"{bench.ratio('dlc'):.2f}x; accuracy {'ok' if accuracy.passed else 'MISMATCH'}")
    sections = [
        _section("Where the time goes", _kernel_chart(profile) + _kernel_table(profile)),
        _section("dlc vs ONNX Runtime", _latency_chart(bench) + _latency_table(bench)),
        _section("Accuracy against ONNX Runtime", _accuracy_table(accuracy)),
    ]
    if tuning is not None:
        sections.append(_section("Tuning", _tuning_part(tuning, profile)))
    e = html.escape
    meta = [
        ("model", f"{model.name} ({manifest.get('model', {}).get('nodes', '?')} nodes, "
                  f"{manifest.get('model', {}).get('nodes_after_folding', '?')} after folding)"),
        ("library", f"{library.name}, {library.stat().st_size / 2**20:.2f} MB, {manifest.get('build', {}).get('kernels', '?')} "
                    f"kernels, layout {manifest.get('build', {}).get('layout', '?')}"),
        ("target", f"{manifest['target']['name']} ({manifest['target'].get('string', '')})"),
        ("tuned kernels", str(manifest.get("tuning", {}).get("records_applied", 0))),
        ("machine", f"{host_cpu_name()}, {bench.threads} threads"),
        ("versions", versions),
        ("written", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
    ]
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in meta)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dlc report: {e(model.name)}</title>
<style>{_CSS}</style></head>
<body><h1>dlc report: {e(model.name)}</h1>
<p class="summary" id="summary">{e(summary)}</p>
<table class="meta">{rows}</table>
{''.join(sections)}
</body></html>
"""


_CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; background: #fff; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #4c72b0; padding-bottom: .2em; margin-top: 2em; }
.summary { font-size: 1.2em; background: #eef3fb; padding: .6em 1em; border-left: 4px solid #4c72b0; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
table.meta th { background: #f4f4f4; }
.ok { color: #1a7f37; font-weight: bold; } .bad { color: #c62828; font-weight: bold; }
.chart svg { max-width: 100%; height: auto; }
details { margin: 1em 0; }
"""


def _section(title: str, body: str) -> str:
    anchor = title.lower().replace(" ", "-")
    return f'<section id="{html.escape(anchor)}"><h2>{html.escape(title)}</h2>{body}</section>'


def _svg(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return '<div class="chart">' + text[text.index("<svg"):] + "</div>"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot's import
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False})
    return plt


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _kernel_chart(profile: Profile) -> str:
    from dlc.profile import OVERHEAD

    plt = _pyplot()
    shown = list(profile.kernels[:BARS])
    labels = [f"{_short(k.name, 38)}  ←  {_short(', '.join(k.nodes) or '?', 48)}" for k in shown] + [OVERHEAD]
    values = [k.us for k in shown] + [profile.overhead_us]
    colors = ["#4c72b0"] * len(shown) + ["#dd8452"]
    figure, axes = plt.subplots(figsize=(11, 0.28 * len(values) + 1.2))
    axes.barh(range(len(values)), values, color=colors)
    axes.set_yticks(range(len(values)), labels, fontsize=8)
    axes.invert_yaxis()
    for i, (value, k) in enumerate(zip(values, shown + [None])):
        share = k.share if k is not None else profile.overhead_share
        axes.text(value, i, f" {value:.1f} µs ({share:.1%})", va="center", fontsize=7)
    axes.set_xlabel("µs per run")
    more = len(profile.kernels) - len(shown)
    axes.set_title(f"time per kernel, heaviest first ({profile.total_us / 1e3:.3f} ms per run"
                   + (f"; {more} lighter kernels in the table below" if more > 0 else "") + ")")
    return _svg(figure)


def _kernel_table(profile: Profile) -> str:
    from dlc.profile import OVERHEAD

    e = html.escape
    rows = []
    for k in profile.kernels:
        rows.append(
            f'<tr class="kernel"><td>{e(k.name)}</td><td class="n">{k.share:.1%}</td><td class="n">{k.us:.1f}</td>'
            f'<td class="n">{k.calls}</td><td class="n">{"-" if k.flops is None else f"{k.flops / 1e6:.2f}"}</td>'
            f'<td class="n">{"-" if k.gflops_per_s is None else f"{k.gflops_per_s:.1f}"}</td>'
            f'<td>{e(", ".join(k.nodes) or "-")}</td></tr>')
    builtins = ", ".join(f"{b.name} x{b.calls} ({b.us:.1f} µs timed)" for b in profile.builtins)
    rows.append(f'<tr class="overhead"><td><b>{OVERHEAD}</b></td><td class="n">{profile.overhead_share:.1%}</td>'
                f'<td class="n">{profile.overhead_us:.1f}</td><td></td><td></td><td></td><td>{e(builtins)}</td></tr>')
    return (f"<details><summary>all {len(profile.kernels)} kernels (mean of {profile.runs} runs; "
            f"{profile.run_us / 1e3:.3f} ms per run without the timer)</summary>"
            '<table id="kernels"><tr><th>kernel</th><th>share</th><th>µs</th><th>calls</th><th>MFLOP</th>'
            f'<th>GFLOP/s</th><th>ONNX nodes</th></tr>{"".join(rows)}</table></details>')


def _latency_chart(bench: BenchResult) -> str:
    plt = _pyplot()
    names = [l.engine for l in bench.latencies]
    figure, axes = plt.subplots(figsize=(7, 0.5 * len(names) + 1.2))
    medians = [l.median_ms for l in bench.latencies]
    low = [l.median_ms - l.min_ms for l in bench.latencies]
    high = [max(0.0, l.p90_ms - l.median_ms) for l in bench.latencies]
    colors = ["#4c72b0" if n.startswith("dlc") else "#8c8c8c" for n in names]
    axes.barh(range(len(names)), medians, xerr=[low, high], color=colors, capsize=4)
    axes.set_yticks(range(len(names)), names)
    axes.invert_yaxis()
    limit = 2.5 * max(medians)
    axes.set_xlim(0, limit)
    for i, latency in enumerate(bench.latencies):
        cut = f", p90 {latency.p90_ms:.3f} off the scale" if latency.p90_ms > limit else ""
        axes.text(latency.median_ms, i, f"  {latency.median_ms:.3f} ms{cut}", va="bottom", fontsize=8)
    axes.set_xlabel("ms per run (bar: median; whiskers: min to p90)")
    axes.set_title(f"{bench.threads} threads each, {bench.rounds} rounds x {bench.block} calls, alternating blocks")
    return _svg(figure)


def _latency_table(bench: BenchResult) -> str:
    rows = "".join(
        f'<tr><td>{html.escape(l.engine)}</td><td class="n">{l.median_ms:.3f}</td><td class="n">{l.p90_ms:.3f}</td>'
        f'<td class="n">{l.min_ms:.3f}</td><td class="n">{l.per_second:.0f}</td>'
        f'<td class="n">{bench.ratio(l.engine):.2f}x</td></tr>'
        for l in bench.latencies)
    return ('<table id="latency"><tr><th>engine</th><th>median ms</th><th>p90 ms</th><th>min ms</th>'
            f"<th>runs/s</th><th>vs ONNX Runtime</th></tr>{rows}</table>")


def _accuracy_table(report: VerifyReport) -> str:
    e = html.escape
    rows = "".join(
        f'<tr><td>{e(o.name)}</td><td>{"x".join(map(str, o.shape))}</td><td class="n">{o.max_abs_error:.3g}</td>'
        f'<td class="n">{o.max_rel_error:.3g}</td><td class="n">{o.mismatches}/{o.size}</td>'
        f'<td class="{"ok" if o.passed else "bad"}">{"ok" if o.passed else "MISMATCH"}</td></tr>'
        for o in report.outputs)
    inputs = "seeded random inputs (seed %d)" % report.seed if report.seed is not None else "the given inputs"
    return (f"<p>Same {e(inputs)} through both; rtol {report.rtol:g}, atol {report.atol:g}.</p>"
            '<table id="accuracy"><tr><th>output</th><th>shape</th><th>max abs err</th><th>max rel err</th>'
            f"<th>mismatches</th><th>result</th></tr>{rows}</table>")


def _tuning_part(tuning: TuningCurves, profile: Profile) -> str:
    if not tuning.model_runs and not tuning.kernels:
        return f"<p>No tuning records for this model in {html.escape(str(tuning.logs))}.</p>"
    plt = _pyplot()
    parts = []
    if tuning.model_runs:
        figure, axes = plt.subplots(figsize=(8, 3.2))
        for run, points in tuning.model_runs:
            axes.step([p[0] for p in points], [p[1] for p in points], where="post", marker=".",
                      label=f"run started {run[:16].replace('T', ' ')}")
        axes.set_xlabel("trials")
        axes.set_ylabel("estimated model ms")
        axes.set_title("best estimated model latency against trials (sum of calls x best kernel time)")
        axes.legend(fontsize=7)
        parts.append(_svg(figure))
    order = {k.name: i for i, k in enumerate(profile.kernels)}
    curves = sorted(tuning.kernels, key=lambda c: order.get(c.kernel, len(order)))[:KERNEL_CURVES]
    if curves:
        columns = 3
        rows = (len(curves) + columns - 1) // columns
        figure, grid = plt.subplots(rows, columns, figsize=(11, 2.6 * rows), squeeze=False)
        for axes, curve in zip(grid.flat, curves):
            # Markers: a pruned store (`dlc logs merge --keep 1`) leaves one point, no line.
            axes.step([p[0] for p in curve.points], [p[1] for p in curve.points], where="post", color="#4c72b0",
                      marker=".", label="best record")
            if curve.default_us is not None:
                axes.axhline(curve.default_us, color="#dd8452", linestyle="--", linewidth=1, label="default schedule")
                axes.legend(fontsize=6)
            axes.set_title(_short(curve.kernel, 42), fontsize=8)
            axes.set_xlabel("trials", fontsize=7)
            axes.set_ylabel("best µs", fontsize=7)
        for axes in list(grid.flat)[len(curves):]:
            axes.axis("off")
        figure.suptitle("best time per kernel against its trials (heaviest kernels)")
        figure.tight_layout()
        parts.append(_svg(figure))
    return "".join(parts)

