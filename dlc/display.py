"""How the CLI shows things: progress on stderr, tables on stdout (rich, imported lazily)."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


def make_console(*, stderr: bool = True):
    """Progress goes to stderr, results to stdout; piped output is not folded at 80 columns."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else 160)


def print_report(report) -> None:
    from rich.table import Table

    table = Table(title=f"dlc vs ONNX Runtime (rtol {report.rtol:g}, atol {report.atol:g})")
    table.add_column("output", overflow="fold")
    table.add_column("shape")
    for column in ("max abs err", "max rel err", "mismatches", "result"):
        table.add_column(column, justify="right")
    for out in report.outputs:
        table.add_row(
            out.name,
            "x".join(map(str, out.shape)),
            f"{out.max_abs_error:.3g}",
            f"{out.max_rel_error:.3g}",
            f"{out.mismatches}/{out.size}",
            "[green]ok[/]" if out.passed else "[red]MISMATCH[/]",
        )
    make_console(stderr=False).print(table)


def print_tuning_applied(console, applied) -> None:
    if applied is None:
        return
    console.print(
        f"  tuned records applied to {applied.tasks_with_records} of {applied.tasks_total} kernels "
        f"({applied.flops_share:.0%} of the model's FLOPs) from {applied.logs / applied.target_key}"
    )
    for source in applied.by_source:
        console.print(f"    {source.kernels} kernel(s), {source.flops_share:.0%} of the FLOPs, from tuning {source.model}")
    if applied.unusable_records:
        console.print(f"  [yellow]{applied.unusable_records} record(s) skipped: they do not load or replay with this "
                      f"TVM ({applied.unusable_reason})[/] [dim](`dlc logs check` lists them)[/]")
    kept = applied.tasks_recorded - applied.tasks_with_records
    if kept:
        console.print(f"  {kept} kernel(s) keep their default schedule, measured faster than their best record")
    if applied.compatible_unused:
        console.print(
            f"  {applied.compatible_unused} more kernel(s) have records for a compatible target (another CPU "
            "of the same vector level) [dim](pass --accept-compatible to apply them)[/]"
        )
    elif applied.tasks_recorded == 0:
        console.print(
            f"  [yellow]no records for target key {applied.target_key} in {applied.logs}[/]"
            f" [dim](tune with `dlc tune ... --target` the same target)[/]"
        )


def print_task_list(tasks, store) -> None:
    from rich.table import Table

    total = sum(t.weight * t.flops for t in tasks) or 1.0
    table = Table(title=f"{len(tasks)} tuning tasks, heaviest first")
    for column in ("#", "task", "shapes", "weight", "MFLOP", "FLOPs share", "trials on disk", "best µs"):
        table.add_column(column, justify="right" if column not in ("task", "shapes") else "left", overflow="fold")
    for t in tasks:
        best = store.best_seconds(t.workload_hash)
        table.add_row(str(t.index), t.name, t.signature, str(t.weight), f"{t.flops / 1e6:.2f}",
                      f"{t.weight * t.flops / total:.1%}", str(store.trial_count(t.workload_hash)),
                      "-" if best is None else f"{best * 1e6:.1f}")
    make_console(stderr=False).print(table)


def print_tuning_result(result) -> None:
    from rich.table import Table

    if result.stopped_by == "transferred":
        print_transfer_result(result)
        return
    console = make_console(stderr=False)
    table = Table(title="tuning result per task (tasks with trials)")
    for column in ("#", "task", "trials (run/total)", "default µs", "best µs", "speed-up", "errors"):
        table.add_column(column, justify="left" if column == "task" else "right", overflow="fold")
    for o in result.tasks:
        if not o.trials_total and not o.build_errors + o.run_errors:
            continue
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        speedup = "-" if o.speedup is None else f"{o.speedup:.2f}x"
        errors = f"{o.build_errors} build, {o.run_errors} run" if o.build_errors + o.run_errors else "0"
        table.add_row(str(o.task.index), o.task.name, f"{o.trials_run}/{o.trials_total}", fmt(o.default_us),
                      fmt(o.best_us), speedup, errors)
    console.print(table)
    for o in result.tasks:
        for reason in o.error_reasons:
            console.print(f"  [red]{o.task.name}[/]: {reason}")
    if result.already_tuned:
        console.print(f"{len(result.already_tuned)} kernel(s) not searched, already tuned for other models "
                      f"(--enough-trials): {', '.join(result.already_tuned)}")
    if result.unusable_records:
        console.print(f"[yellow]{result.unusable_records} record(s) on disk skipped: they do not load or replay "
                      "with this TVM[/] [dim](`dlc logs check` lists them)[/]")
    if result.compatible:
        console.print(f"warm start from compatible target(s) {', '.join(result.compatible)}: "
                      f"{result.compatible_seeds} of their best record(s) measured here first")
    warm = result.warm_start
    if warm is not None and warm.records:
        console.print(f"cost model warm-started on {warm.records} record(s) of {warm.kernels} other kernel(s) "
                      f"in {warm.seconds:.1f} s")
    curve = result.curve
    if len(curve) >= 2:
        from dlc.tuning import gain_point

        point = gain_point(curve)
        where = (f"90% of the gain after {point.trials} trials ({point.seconds / 60:.1f} min)" if point
                 else "no gain")
        console.print(f"tuning curve: estimated model time {curve[0].estimated_us / 1e3:.3f} ms with the defaults "
                      f"-> {curve[-1].estimated_us / 1e3:.3f} ms after {curve[-1].trials} trials; {where}")
    estimate = result.estimated_model_us
    console.print(
        f"{result.trials_run} trials in {result.seconds / 60:.1f} min ({result.trials_on_disk_before} already on disk), "
        f"stopped by {result.stopped_by}; estimated model time "
        f"{'-' if estimate is None else f'{estimate / 1e3:.3f} ms'}; records in {result.logs}"
    )


def print_transfer_result(result) -> None:
    from rich.table import Table

    console = make_console(stderr=False)
    table = Table(title="records transferred to kernels with none of their own")
    for column in ("task", "shapes", "from", "tried", "default µs", "best µs", "speed-up", "applied"):
        table.add_column(column, justify="left" if column in ("task", "shapes", "from") else "right", overflow="fold")
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for o in result.transfers:
        speedup = f"{o.default_us / o.best_us:.2f}x" if o.default_us and o.best_us else "-"
        table.add_row(o.task_name, o.signature, ", ".join(o.sources), str(o.candidates), fmt(o.default_us),
                      fmt(o.best_us), speedup, "yes" if o.kept else "no (default kept)")
    console.print(table)
    kept = [o for o in result.transfers if o.kept]
    saved = sum(o.weight * (o.default_us - o.best_us) for o in kept)
    console.print(f"{len(result.transfers)} kernel(s) had kernels of their class in the store, {len(kept)} got a "
                  f"transferred record (estimated {saved / 1e3:.3f} ms saved per run); {result.trials_run} "
                  f"candidates measured in {result.seconds:.1f} s; records in {result.logs}")


def print_bench(bench) -> None:
    from rich.table import Table

    table = Table(title=f"latency, {bench.threads} threads each, median of {bench.rounds}x{bench.block} calls")
    for column in ("engine", "median ms", "min ms", "vs ONNX Runtime"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for latency in bench.latencies:
        table.add_row(latency.engine, f"{latency.median_ms:.3f}", f"{latency.min_ms:.3f}",
                      f"{bench.ratio(latency.engine):.2f}x")
    make_console(stderr=False).print(table)


def warn_if_tuning_lost(bench, *, tolerance: float = 0.03) -> None:
    """Say so when the tuned build runs slower than the untuned one: records picked by timings
    taken under load (or kernels faster alone than inside the model) can do that."""
    untuned, tuned = bench.median("dlc untuned"), bench.median("dlc tuned")
    if tuned > untuned * (1 + tolerance):
        make_console(stderr=False).print(
            f"[yellow]the tuned build is {tuned / untuned - 1:.0%} slower than the untuned one[/] [dim](tune "
            "again on a quiet machine, or build without --tuning-logs; `dlc logs show` lists the records)[/]")


def run_tuning(console, optimized, spec, **kwargs):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dlc import tuning

    columns = [
        TextColumn("[bold]{task.fields[task]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("trials  est. model {task.fields[estimate]}  left {task.fields[left]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as bar:
        first = "replaying other kernels' records" if kwargs.get("transfer_only") else "measuring default schedules"
        row = bar.add_task("tuning", total=None, task=first, estimate="-", left="-")

        def show(p: tuning.Progress) -> None:
            estimate = f"{p.estimated_model_us / 1e3:.3f} ms" if p.estimated_model_us else "-"
            left = "-" if p.remaining is None else f"{p.remaining / 60:.1f} min"
            bar.update(row, total=p.trial_budget, completed=p.trials_done, estimate=estimate, left=left,
                       task=f"task {p.task_position}/{p.tasks_total} {p.task_name[:28]}")

        return tuning.tune(optimized, spec, on_progress=show, **kwargs)


@contextmanager
def step(console, label: str):
    """Show a spinner while a stage runs and a timed line when it ends."""
    started = time.perf_counter()
    with console.status(f"{label}..."):
        yield
    console.print(f"[green]✓[/] {label} [dim]({time.perf_counter() - started:.1f} s)[/]")
