"""The `dlc` command: flags in, one stage call per step, results out.

Heavy modules (tvm, onnx, onnxruntime, rich) are imported inside the commands so that
`dlc --help` stays instant.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import click

from dlc import __version__, display
from dlc.commands import CONTEXT, parse_input_shapes, input_shape_option
from dlc.commands.board import board_group, board_options, cross_option, flags_board, flags_target
from dlc.commands.logs import logs_group
from dlc.commands.perf import bench_command, profile_command, report_command
from dlc.commands.quantize import quantize_command
from dlc.errors import DlcError, InputError


class DlcGroup(click.Group):
    """Turns every DlcError into `error: ...` + `hint: ...` and its exit code, in one place."""

    def invoke(self, ctx: click.Context):
        from dlc.fileio import interrupt_survives_tvm

        try:
            with interrupt_survives_tvm():
                return super().invoke(ctx)
        except DlcError as err:
            if ctx.params.get("debug") or os.environ.get("DLC_DEBUG") == "1":
                traceback.print_exc()
            click.echo(err.render(), err=True)
            sys.exit(err.exit_code)
        except click.UsageError as err:  # a bad flag or command: same two lines, exit 2
            command = err.ctx.command_path if err.ctx else "dlc"
            click.echo(f"error: {err.format_message()}\n  hint: see '{command} --help'", err=True)
            sys.exit(InputError.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)


@click.group(cls=DlcGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="dlc")
@click.option("--debug", is_flag=True, help="Show tracebacks (also DLC_DEBUG=1).")
def cli(debug: bool) -> None:
    """Compile ONNX models into fast, verified CPU libraries with Apache TVM."""
    import logging

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


input_options = [
    click.option("--inputs", type=click.Path(path_type=Path), metavar="FILE.npz",
                 help="Input arrays by name (numpy.savez); inputs not in it are seeded random."),
    click.option("--input-value", "input_values", multiple=True, metavar="NAME=NUMBER",
                 help="Fill an input with one number, e.g. sr=16000 (repeatable)."),
]
tolerance_options = [
    click.option("--rtol", type=float, default=None, help="Relative tolerance [1e-3]."),
    click.option("--atol", type=float, default=None, help="Absolute tolerance [1e-3]."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed for random inputs."),
]


def _with(options):
    def apply(func):
        for option in reversed(options):
            func = option(func)
        return func

    return apply


def _given_inputs(npz: Path | None, values: tuple[str, ...]) -> dict:
    """Inputs the user chose (an .npz, then --input-value on top); the rest stay random."""
    from dlc.runtime import read_npz
    from dlc.verify import parse_input_value

    given = read_npz(npz) if npz else {}
    given.update(parse_input_value(text) for text in values)
    return given


def _tolerances(rtol: float | None, atol: float | None) -> dict[str, float]:
    from dlc.verify import DEFAULT_ATOL, DEFAULT_RTOL

    return {"rtol": DEFAULT_RTOL if rtol is None else rtol, "atol": DEFAULT_ATOL if atol is None else atol}


def _raise_on_mismatch(report, library: Path) -> None:
    from dlc.errors import AccuracyError

    if report.passed:
        return
    worst = max(report.outputs, key=lambda o: o.mismatches)
    raise AccuracyError(
        f"'{library.name}' disagrees with ONNX Runtime on output '{worst.name}': "
        f"{worst.mismatches} of {worst.size} elements beyond rtol {report.rtol:g} / atol "
        f"{report.atol:g} (max abs error {worst.max_abs_error:.3g})",
        hint="loosen --rtol/--atol if this is expected rounding; otherwise `dlc verify MODEL "
        f"{library} --bisect` names the first ONNX node that diverges",
    )


def _verify_build(console, spec, model: Path, library: Path, *, no_verify: bool, seed: int, rtol: float, atol: float,
                  inputs: dict | None = None, board=None):
    """Every build is checked against ONNX Runtime when this machine (or the board) can run it."""
    if no_verify:
        console.print("[yellow]verification skipped (--no-verify)[/]")
    elif board is None and (unrunnable := spec.unrunnable_reason()) is not None:
        console.print(f"[yellow]verification skipped: target '{spec.name}' cannot run on this machine "
                      f"({unrunnable})[/]")
    else:
        from dlc.verify import verify

        where = f" (library on {board})" if board else ""
        with display.step(console, f"verified against ONNX Runtime{where}"):
            report = verify(model, library, inputs=inputs, seed=seed, rtol=rtol, atol=atol, board=board)
        display.print_report(report)
        _raise_on_mismatch(report, library)


def _load_and_optimize(console, model: Path, spec, input_shapes: tuple[str, ...], *, fold: bool = True, dump_ir=None):
    from dlc import frontend, pipeline

    shapes = parse_input_shapes(input_shapes)
    with display.step(console, "loaded, checked and folded"):
        loaded = frontend.load_model(model, input_shapes=shapes, fold=fold)
    console.print(f"  nodes {loaded.nodes_before_folding} -> {loaded.nodes_after_folding} after folding")
    with display.step(console, "imported to Relax"):
        imported = frontend.import_model(loaded)
    with display.step(console, "fused"):
        optimized = pipeline.optimize(imported, spec, dump_ir=dump_ir)
    console.print(f"  {optimized.kernels} fused kernels, layout {optimized.layout}")
    return optimized


@cli.command("compile", context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-t", "--target", default="host", show_default=True, help="Preset, TVM string or JSON.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Library path [MODEL.so].")
@input_shape_option
@click.option("--dump-ir", type=click.Path(path_type=Path), help="Write the IR after each stage here.")
@click.option("--dump-asm", type=click.Path(path_type=Path), metavar="FILE",
              help="Write the generated assembly here (see which vector instructions the target got).")
@click.option("--tuning-logs", type=click.Path(path_type=Path), help="Apply the best tuned record per kernel from here.")
@click.option("--accept-compatible", is_flag=True,
              help="Also apply records tuned for another CPU of the same vector level (see `dlc logs list`).")
@click.option("--no-verify", is_flag=True, help="Skip the check against ONNX Runtime.")
@click.option("--no-fold", is_flag=True, help="Import without folding shape arithmetic first.")
@cross_option
@_with(board_options)
@_with(input_options)
@_with(tolerance_options)
def compile_command(model, target, output, input_shapes, dump_ir, dump_asm, tuning_logs, accept_compatible, no_verify,
                    no_fold, cross_compiler, rpc, rpc_tracker, rpc_key, inputs, input_values, rtol, atol, seed):
    """Compile MODEL (.onnx) to a shared library for TARGET, then verify it (on a board with --rpc*)."""
    from dlc import build

    spec = flags_target(target, cross_compiler)
    board = flags_board(rpc, rpc_tracker, rpc_key)
    if accept_compatible and tuning_logs is None:
        raise InputError("--accept-compatible needs --tuning-logs DIR", hint="name the tuning-log directory")
    given = _given_inputs(inputs, input_values)
    output = output or Path(model.stem + ".so")
    build.check_output(output)  # before minutes of work, not after
    console = display.make_console()
    console.print(f"[bold]dlc[/] {model} -> {output}  target [cyan]{spec.name}[/] ({spec})")
    optimized = _load_and_optimize(console, model, spec, input_shapes, fold=not no_fold, dump_ir=dump_ir)
    with display.step(console, f"built {output}"):
        built = build.build(optimized, spec, output=output, tuning_logs=tuning_logs, dump_asm=dump_asm,
                            accept_compatible=accept_compatible)
    display.print_tuning_applied(console, built.tuning)
    if dump_asm:
        console.print(f"  assembly written to {dump_asm}")

    _verify_build(console, spec, model, built.library, no_verify=no_verify, seed=seed, inputs=given,
                  board=board, **_tolerances(rtol, atol))
    click.echo(f"{built.library} ({built.kernels} kernels, built in {built.seconds:.1f} s; manifest {built.manifest_path})")


@cli.command("verify", context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("library", type=click.Path(path_type=Path))
@_with(board_options)
@_with(input_options)
@_with(tolerance_options)
@click.option("--bisect", "bisect_", is_flag=True,
              help="On a mismatch, name the first ONNX node that diverges (compiles MODEL again, "
              "every intermediate exposed, for LIBRARY's target and input shapes; runs here).")
def verify_command(model, library, rpc, rpc_tracker, rpc_key, inputs, input_values, rtol, atol, seed, bisect_):
    """Compare LIBRARY's outputs with ONNX Runtime running MODEL; exit 6 on mismatch.

    With --rpc or --rpc-tracker/--rpc-key the library runs on that board, ORT here."""
    from dlc.verify import verify

    given = _given_inputs(inputs, input_values)
    board = flags_board(rpc, rpc_tracker, rpc_key)
    if bisect_ and board is not None:
        raise InputError("--bisect runs the model's prefixes on this machine, not on a board",
                         hint="drop --rpc/--rpc-tracker, or verify on the board without --bisect")
    report = verify(model, library, inputs=given, seed=seed, board=board, **_tolerances(rtol, atol))
    display.print_report(report)
    if bisect_ and not report.passed:
        from dlc.bisect import bisect, describe
        from dlc.runtime import read_manifest
        from dlc.target import TargetSpec

        manifest = read_manifest(library)
        spec = TargetSpec(manifest.target_name, manifest.data["target"]["config"])
        shapes = {s.name: tuple(s.shape) for s in manifest.inputs}
        found = bisect(model, spec, input_shapes=shapes, inputs=given, seed=seed, **_tolerances(rtol, atol))
        click.echo("\n".join(describe(found)))
    _raise_on_mismatch(report, library)


@cli.command("run", context_settings=CONTEXT)
@click.argument("library", type=click.Path(path_type=Path))
@_with(input_options)
@click.option("--outputs", type=click.Path(path_type=Path), help="Write outputs to this .npz.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random inputs.")
@_with(board_options)
def run_command(library, inputs, input_values, outputs, seed, rpc, rpc_tracker, rpc_key):
    """Run LIBRARY (built by dlc compile) on inputs from an .npz file and/or random ones,
    here or on a board (--rpc, --rpc-tracker/--rpc-key)."""
    import numpy as np

    from dlc.runtime import load_library
    from dlc.verify import make_inputs

    given = _given_inputs(inputs, input_values)
    board = flags_board(rpc, rpc_tracker, rpc_key)
    if board is not None:
        from dlc.boards import load_remote

        loaded = load_remote(library, board)
    else:
        loaded = load_library(library)
    lacking = [spec.name for spec in loaded.manifest.inputs if spec.name not in given]
    if inputs and lacking:  # a forgotten input must not silently run on random data
        raise InputError(
            f"'{inputs}' has no array for input(s) {', '.join(map(repr, lacking))}",
            hint="add them to the .npz, or fill them with --input-value NAME=NUMBER",
        )
    results = loaded.run(make_inputs(loaded.manifest.inputs, seed=seed, given=given))
    for name, value in results.items():
        shape = "x".join(map(str, value.shape)) or "scalar"
        stats = (f"min {value.min():.4g} max {value.max():.4g} mean {value.mean():.4g}" if value.size
                 else "empty")
        click.echo(f"{name}: {shape} {value.dtype}  {stats}")
    if outputs:
        try:
            np.savez(outputs, **results)
        except OSError as err:
            raise InputError(f"cannot write '{outputs}': {err.strerror}", hint="pick a writable path") from err
        click.echo(f"wrote {outputs}")


@cli.command("inspect", context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
def inspect_command(model):
    """Show MODEL's inputs, outputs, operators and what TVM cannot import."""
    from rich.table import Table

    from dlc.frontend import inspect_model

    info = inspect_model(model)
    console = display.make_console(stderr=False)
    console.print(f"[bold]{info.path}[/]  sha256 {info.sha256[:16]}…")
    console.print(f"ONNX IR {info.ir_version}, opset {info.opset}, producer {info.producer or '?'}, "
                  f"{info.num_parameters:,} parameters")
    table = Table(title="inputs and outputs")
    for column in ("kind", "name", "shape", "dtype"):
        table.add_column(column)
    for kind, specs in (("input", info.inputs), ("output", info.outputs)):
        for spec in specs:
            table.add_row(kind, spec.name, "x".join(map(str, spec.shape)) or "scalar", spec.dtype)
    console.print(table)
    ops = ", ".join(f"{op} {n}" for op, n in info.op_counts.items())
    console.print(f"{sum(info.op_counts.values())} nodes: {ops}")
    if info.unsupported_ops:
        listing = ", ".join(f"{op} x{n}" for op, n in info.unsupported_ops.items())
        console.print(f"[red]not supported by TVM's importer:[/] {listing}")
    else:
        console.print("[green]every operator has a TVM converter[/]")


@cli.command("targets", context_settings=CONTEXT)
def targets_command():
    """List the named target presets."""
    from rich.table import Table

    from dlc.target import list_presets

    table = Table(title="targets (use the name, a TVM string like \"llvm -mcpu=skylake\", or JSON)")
    table.add_column("name", no_wrap=True)
    table.add_column("runs here", no_wrap=True)
    table.add_column("description and TVM target", overflow="fold")
    for spec in list_presets():
        runs = "yes" if spec.runs_on_host() else "no"
        table.add_row(spec.name, runs, f"{spec.description}\n[dim]{spec}[/]")
    display.make_console(stderr=False).print(table)


def parse_duration(text: str) -> float:
    """'20m', '90s', '1h30m' or plain seconds -> seconds."""
    import re

    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise InputError(f"bad duration {text!r}", hint="write e.g. 20m, 90s, 1h30m or a number of seconds")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


@cli.command("tune", context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-t", "--target", default="host", show_default=True, help="Preset, TVM string or JSON.")
@input_shape_option
@click.option("--trials", type=int, default=1000, show_default=True, help="Trial budget, trials already on disk included.")
@click.option("--time-budget", default=None, metavar="DURATION", help="Wall-clock budget, e.g. 20m (whichever ends first).")
@click.option("--tasks", default=None, metavar="A,B", help="Tune only these tasks (names or indexes from --list-tasks).")
@click.option("--logs", type=click.Path(path_type=Path), default=Path("tuning_logs"), show_default=True, help="Tuning-log directory.")
@click.option("--list-tasks", is_flag=True, help="Show the tasks and stop.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Tuned library path [MODEL.so].")
@click.option("--no-verify", is_flag=True, help="Skip the check against ONNX Runtime.")
@click.option("--no-bench", is_flag=True, help="Skip the untuned / tuned / ONNX Runtime latency comparison.")
@click.option("--seed", type=int, default=0, show_default=True, help="Search seed.")
@click.option("--enough-trials", type=click.IntRange(min=0), default=64, show_default=True, metavar="N",
              help="Do not search kernels that tuning other models gave N trials already (0: search all).")
@click.option("--cold", is_flag=True, help="Do not train the cost model on other kernels' records first.")
@click.option("--transfer-only", is_flag=True,
              help="Search nothing: replay the nearest kernels' best records on kernels with none of their own.")
@cross_option
@_with(board_options)
@_with(input_options)
def tune_command(model, target, input_shapes, trials, time_budget, tasks, logs, list_tasks, output, no_verify, no_bench, seed,
                 enough_trials, cold, transfer_only, cross_compiler, rpc, rpc_tracker, rpc_key, inputs, input_values):
    """Autotune MODEL's kernels for TARGET, then build, verify and benchmark the result.

    Every measured trial is appended to LOGS at once; rerunning the same command resumes,
    counting the trials already on disk toward --trials. With --rpc-tracker/--rpc-key the
    kernels are built here and measured on every board under the key.
    """
    from dlc import build, tuning
    from dlc.logstore import open_store

    spec = flags_target(target, cross_compiler)
    board = flags_board(rpc, rpc_tracker, rpc_key)
    given = _given_inputs(inputs, input_values)
    budget_seconds = parse_duration(time_budget) if time_budget else None
    task_names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    output = output or Path(model.stem + ".so")
    workers = {}
    if not list_tasks:
        build.check_output(output)
        if board is None:
            tuning.check_can_measure(spec)
        else:
            from dlc.boards import measuring_on

            workers = measuring_on(spec, board)  # fails fast: linker, boards, architecture
    console = display.make_console()
    console.print(f"[bold]dlc tune[/] {model}  target [cyan]{spec.name}[/] ({spec})  logs {logs / spec.key}")
    optimized = _load_and_optimize(console, model, spec, input_shapes)

    if list_tasks:
        display.print_task_list(tuning.extract_tasks(optimized, spec), open_store(logs, spec, create=False))
        return
    try:
        result = display.run_tuning(console, optimized, spec, logs=logs, trials=trials, time_budget=budget_seconds,
                                    task_names=task_names, seed=seed, enough_trials=enough_trials, warm=not cold,
                                    transfer_only=transfer_only, **workers)
    finally:
        for worker in workers.values():  # tune() shuts down only the workers it made
            if getattr(worker, "pool", None) is not None:
                worker.pool.shutdown()
    display.print_tuning_result(result)
    if result.stopped_by == "interrupted":
        console.print(f"[yellow]interrupted: {result.trials_run} trials of this run are saved in {result.logs}; "
                      "rerun the same command to resume[/]")
        sys.exit(130)
    _build_tuned(console, optimized, spec, model, logs, output,
                 no_verify=no_verify, no_bench=no_bench, inputs=given, board=board)


def _build_tuned(console, optimized, spec, model, logs, output, *, no_verify, no_bench, inputs, board=None):
    import tempfile

    from dlc import build
    from dlc.bench import compare_latency
    from dlc.verify import DEFAULT_ATOL, DEFAULT_RTOL

    with display.step(console, f"built {output} with the tuned records"):
        built = build.build(optimized, spec, output=output, tuning_logs=logs)
    display.print_tuning_applied(console, built.tuning)
    _verify_build(console, spec, model, built.library, no_verify=no_verify, seed=0, rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL,
                  inputs=inputs, board=board)
    if no_bench or board is not None:  # the comparison runs ORT beside the library: here only
        return
    with tempfile.TemporaryDirectory(prefix="dlc-untuned-") as tmp:
        with display.step(console, "built the untuned library for comparison"):
            untuned = build.build(optimized, spec, output=Path(tmp) / "untuned.so")
        with display.step(console, "measured untuned, tuned and ONNX Runtime in alternating blocks"):
            bench = compare_latency(model, {"dlc untuned": untuned.library, "dlc tuned": built.library}, inputs=inputs)
    display.print_bench(bench)
    display.warn_if_tuning_lost(bench)


cli.add_command(logs_group)
cli.add_command(bench_command)
cli.add_command(profile_command)
cli.add_command(report_command)
cli.add_command(quantize_command)
cli.add_command(board_group)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="dlc")
