"""`dlc bench`, `dlc profile`, `dlc report`: dlc against ONNX Runtime, where the time goes, one page to look at."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from dlc.commands import CONTEXT
from dlc.errors import InputError

inputs_option = click.option("--inputs", type=click.Path(path_type=Path), metavar="FILE.npz",
                             help="Input arrays by name (numpy.savez); inputs not in it are seeded random.")
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Seed for random inputs.")
def threads_option(help_text: str = "Threads for every engine [the usable cores]."):
    return click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N", help=help_text)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")


def _use_threads(threads: int | None) -> None:
    """TVM sizes its pool once per process, from TVM_NUM_THREADS: set it before TVM loads."""
    if threads is None:
        return
    os.environ["TVM_NUM_THREADS"] = str(threads)
    from dlc.bench import tvm_threads

    if tvm_threads() != threads:
        raise InputError(f"TVM's thread pool already has {tvm_threads()} threads in this process, not {threads}",
                         hint="run dlc in a fresh process, or set TVM_NUM_THREADS before it starts")


def _check_pair(model: Path, library: Path, doing: str) -> None:
    from dlc.runtime import read_manifest
    from dlc.verify import check_built_from

    if not Path(model).is_file():
        raise InputError(f"model '{model}' not found", hint="pass the .onnx the library was compiled from")
    check_built_from(read_manifest(library), Path(model), doing=doing)


def _given(npz: Path | None) -> dict:
    from dlc.runtime import read_npz

    return read_npz(npz) if npz else {}


def _progress(console, label: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("calls"),
                    TimeElapsedColumn(), console=console, transient=True)


def _measure_bench(console, model: Path, library: Path, *, threads, rounds, block, seed, inputs):
    from dlc.bench import compare_latency

    with _progress(console, "timing dlc and ONNX Runtime in alternating blocks") as bar:
        row = bar.add_task("bench", total=None)
        return compare_latency(model, {"dlc": library}, threads=threads, rounds=rounds, block=block, seed=seed,
                               inputs=inputs, on_progress=lambda done, total: bar.update(row, completed=done, total=total))


def _measure_profile(console, library: Path, *, runs, seed, inputs):
    from dlc.profile import profile

    with _progress(console, "profiling kernels") as bar:
        row = bar.add_task("profile", total=None)
        return profile(library, inputs=inputs, seed=seed, runs=runs,
                       on_progress=lambda done, total: bar.update(row, completed=done, total=total))


@click.command("bench", context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("library", type=click.Path(path_type=Path))
@threads_option()
@click.option("--rounds", type=click.IntRange(min=1), default=4, show_default=True,
              help="Alternations of the engines' blocks.")
@click.option("--block", type=click.IntRange(min=1), default=None, metavar="N",
              help="Timed calls per engine per round [as many as fill 0.25 s, at least 10].")
@inputs_option
@seed_option
@json_option
def bench_command(model, library, threads, rounds, block, inputs, seed, as_json):
    """Time LIBRARY against ONNX Runtime running MODEL: same inputs, same threads, one process.

    The engines run in alternating blocks (the first call of each block dropped), never call
    by call: ONNX Runtime's threads keep spinning after a run and would slow the other engine.
    """
    from dlc import display
    from dlc.bench import bench_json

    _use_threads(threads)
    _check_pair(model, library, "bench")
    console = display.make_console()
    result = _measure_bench(console, model, library, threads=threads, rounds=rounds, block=block, seed=seed,
                            inputs=_given(inputs))
    size = Path(library).stat().st_size
    if as_json:
        click.echo(json.dumps(bench_json(result, library_bytes=size), indent=2))
        return
    print_bench_table(result, library_bytes=size)


def print_bench_table(result, *, library_bytes: int) -> None:
    from rich.table import Table

    from dlc import display

    table = Table(title=f"latency, {result.threads} threads each, {result.rounds} rounds x {result.block} calls "
                        "per engine, alternating blocks")
    for column in ("engine", "median ms", "p90 ms", "min ms", "runs/s", "vs ONNX Runtime", "memory MB"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for latency in result.latencies:
        rss = "-" if latency.rss_mb is None else f"{latency.rss_mb:.0f}"
        table.add_row(latency.engine, f"{latency.median_ms:.3f}", f"{latency.p90_ms:.3f}", f"{latency.min_ms:.3f}",
                      f"{latency.per_second:.0f}", f"{result.ratio(latency.engine):.2f}x", rss)
    console = display.make_console(stderr=False)
    console.print(table)
    peak = "-" if result.peak_rss_mb is None else f"{result.peak_rss_mb:.0f} MB"
    console.print(f"dlc / ONNX Runtime: {result.ratio('dlc'):.2f}x (median); library {library_bytes / 2**20:.2f} MB; "
                  f"peak resident memory of this process {peak} "
                  "[dim](memory MB: what each engine added when loaded and run once)[/]")


@click.command("profile", context_settings=CONTEXT)
@click.argument("library", type=click.Path(path_type=Path))
@inputs_option
@seed_option
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True, help="Timed runs.")
@threads_option("Threads of TVM's pool [the usable cores].")
@click.option("--top", type=click.IntRange(min=1), default=None, metavar="N", help="Show only the N heaviest kernels.")
@json_option
def profile_command(library, inputs, seed, runs, threads, top, as_json):
    """Per-kernel time of LIBRARY, with FLOPs and the ONNX nodes each kernel computes."""
    from dlc import display

    _use_threads(threads)
    result = _measure_profile(display.make_console(), library, runs=runs, seed=seed, inputs=_given(inputs))
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    print_profile_table(result, top=top)


def print_profile_table(result, *, top: int | None = None) -> None:
    from rich.table import Table

    from dlc import display
    from dlc.profile import OVERHEAD

    table = Table(title=f"{result.library.name}: {len(result.kernels)} kernels, heaviest first "
                        f"(mean of {result.runs} runs, {result.threads} threads)")
    for column in ("kernel", "share", "µs", "calls", "MFLOP", "GFLOP/s", "ONNX nodes"):
        table.add_column(column, justify="left" if column in ("kernel", "ONNX nodes") else "right", overflow="fold")
    shown = result.kernels[:top] if top else result.kernels
    for k in shown:
        nodes = ", ".join(k.nodes[:4]) + (f" +{len(k.nodes) - 4} more" if len(k.nodes) > 4 else "")
        table.add_row(k.name, f"{k.share:.1%}", f"{k.us:.1f}", str(k.calls),
                      "-" if k.flops is None else f"{k.flops / 1e6:.2f}",
                      "-" if k.gflops_per_s is None else f"{k.gflops_per_s:.1f}", nodes or "-")
    rest = result.kernels[len(shown):]
    if rest:
        table.add_row(f"({len(rest)} more kernels)", f"{sum(k.share for k in rest):.1%}",
                      f"{sum(k.us for k in rest):.1f}", str(sum(k.calls for k in rest)), "", "", "")
    builtins = ", ".join(f"{b.name.removeprefix('vm.builtin.')} x{b.calls}" for b in result.builtins[:3])
    table.add_row(f"[bold]{OVERHEAD}[/]", f"{result.overhead_share:.1%}", f"{result.overhead_us:.1f}", "", "", "",
                  f"allocations and builtins ({builtins})" if builtins else "")
    console = display.make_console(stderr=False)
    console.print(table)
    flops = sum(k.flops or 0 for k in result.kernels)
    untimed = "" if abs(result.total_us - result.run_us) < 0.05 else f" ({result.run_us / 1e3:.3f} ms without the timer)"
    console.print(f"total {result.total_us / 1e3:.3f} ms per run{untimed}, "
                  f"{flops / 1e9:.3f} GFLOP, {flops / result.total_us / 1e3:.1f} GFLOP/s overall"
                  + ("" if result.mapped_from == "manifest" else f"; ONNX nodes {result.mapped_from}"))


@click.command("report", context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("library", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("report.html"), show_default=True,
              help="The HTML page to write.")
@click.option("--tuning-logs", type=click.Path(path_type=Path), default=None,
              help="Tuning-log directory: adds the tuning curves of the library's target.")
@inputs_option
@seed_option
@threads_option()
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True, help="Timed runs for the profile.")
def report_command(model, library, output, tuning_logs, inputs, seed, threads, runs):
    """Write one self-contained HTML page: kernel times with their ONNX nodes, dlc vs ONNX
    Runtime, the accuracy check and, with --tuning-logs, the tuning curves."""
    from dlc import display
    from dlc.report import collect_tuning, render_report, require_plotting
    from dlc.verify import verify

    require_plotting()  # before minutes of measuring, not after
    _use_threads(threads)
    _check_pair(model, library, "report on")
    if output.parent and not output.parent.is_dir():
        raise InputError(f"output directory '{output.parent}' does not exist", hint="create it or pick another -o")
    given = _given(inputs)
    tuning = collect_tuning(library, tuning_logs) if tuning_logs else None
    console = display.make_console()
    with display.step(console, "verified against ONNX Runtime"):
        accuracy = verify(model, library, inputs=given, seed=seed)
    profiled = _measure_profile(console, library, runs=runs, seed=seed, inputs=given)
    console.print(f"[green]✓[/] profiled {len(profiled.kernels)} kernels")
    bench = _measure_bench(console, model, library, threads=threads, rounds=4, block=None, seed=seed, inputs=given)
    console.print("[green]✓[/] timed dlc and ONNX Runtime")
    html = render_report(model=Path(model), library=Path(library), profile=profiled, bench=bench,
                         accuracy=accuracy, tuning=tuning)
    try:
        output.write_text(html, encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot write '{output}': {err.strerror}", hint="pick a writable -o PATH") from err
    click.echo(f"wrote {output} ({len(html) / 1024:.0f} KB)")
