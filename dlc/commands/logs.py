"""`dlc logs ...`: look after tuning-log stores as a team (dlc.logshare, dlc.logarchive)."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import click

from dlc.commands import CONTEXT
from dlc.errors import InputError, LogStoreError

LOGS_DIR = Path("tuning_logs")
logs_option = click.option("--logs", "logs_dir", type=click.Path(path_type=Path), default=LOGS_DIR, show_default=True,
                           help="Tuning-log directory.")
keep_option = click.option("--keep", type=click.IntRange(min=1), default=None, metavar="N",
                           help="Keep only each kernel's N fastest candidates (and its fastest default timing).")
key_option = click.option("--key", default=None, metavar="KEY",
                          help="Only this target key (a folder name, or a target: preset, TVM string or JSON).")
directory_argument = click.argument("directory", required=False, type=click.Path(path_type=Path), default=LOGS_DIR)


@click.group("logs", context_settings=CONTEXT)
def logs_group() -> None:
    """List, show, merge, prune, export, import and check tuning logs.

    A log directory holds one folder per target key (`dlc logs list` shows them); KEY is
    such a folder name, or a target (preset, TVM string or JSON) whose key it is.
    """


def _console():
    from dlc import display

    return display.make_console(stderr=False)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def parse_size(text: str) -> int:
    """'256M', '1G', '500K' or a number of bytes -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)i?b?\s*", text.lower())
    if not match:
        raise InputError(f"bad size {text!r}", hint="write e.g. 256M, 1G or a number of bytes")
    return int(float(match.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2)])


def _folders(directory: Path, key: str | None) -> list[Path]:
    from dlc.logshare import find_stores, resolve_store

    folders = [resolve_store(directory, key)] if key else find_stores(directory)
    if not folders:
        raise InputError(f"no tuning logs in '{directory}'", hint="tune first with `dlc tune`, or fix the path")
    return folders


@logs_group.command("list", context_settings=CONTEXT)
@directory_argument
def list_command(directory: Path) -> None:
    """One line per target key in DIRECTORY [tuning_logs]: target, records, kernels, models, size, last write."""
    from rich.table import Table

    from dlc.logshare import list_stores

    listing = list_stores(directory)
    if not listing.stores:
        click.echo(f"no tuning logs in {directory}")
        return
    table = Table(title=f"tuning logs in {directory}")
    for column in ("target key", "target", "records", "kernels", "models", "size", "last write"):
        table.add_column(column, justify="right" if column in ("records", "kernels", "models", "size") else "left",
                         overflow="fold")
    for s in listing.stores:
        when = datetime.fromtimestamp(s.last_write).strftime("%Y-%m-%d %H:%M") if s.last_write else "-"
        target = f"[red]unreadable: {s.problem}[/]" if s.problem else s.target
        table.add_row(s.key, target, str(s.records), str(s.workloads), str(s.models), _size(s.size), when)
    _console().print(table)


@logs_group.command("show", context_settings=CONTEXT)
@click.argument("key")
@logs_option
def show_command(key: str, logs_dir: Path) -> None:
    """Who contributed to KEY's logs (host, user, model, CPU, versions) and, per kernel, its
    trials, best and default time, and the models it was tuned for."""
    from rich.table import Table

    from dlc.logshare import describe, resolve_store

    report = describe(resolve_store(logs_dir, key))
    console = _console()
    header = report.header
    console.print(f"[bold]{report.key}[/]  {report.folder}")
    console.print(f"target  {report.target}")
    console.print(f"format  {header.get('format')} {header.get('format_version')}, folder made "
                  f"{header.get('created', '?')} by dlc {header.get('dlc', '?')} / TVM {header.get('tvm', '?')}")
    if report.skipped_lines:
        console.print(f"[yellow]{report.skipped_lines} unreadable line(s) skipped: `dlc logs check` says where[/]")
    table = Table(title=f"{len(report.contributions)} contribution(s)")
    for column in ("id", "kind", "time (UTC)", "user@host", "model (sha256)", "CPU", "cores", "dlc", "TVM", "trials"):
        table.add_column(column, overflow="fold", justify="right" if column in ("cores", "trials") else "left")
    for c in report.contributions:
        model = c.get("model") or {}
        what = f"{model.get('name')} ({str(model.get('sha256'))[:12]})" if model else (c.get("source") or "-")
        cpu = c.get("cpu") or {}
        table.add_row(str(c.get("id")), str(c.get("kind")), str(c.get("time")), f"{c.get('user')}@{c.get('host')}",
                      what, str(cpu.get("model", "?")), str(cpu.get("cores", "?")), str(c.get("dlc")), str(c.get("tvm")),
                      str(report.trials_by_contribution.get(str(c.get("id")), 0)))
    if unattributed := report.trials_by_contribution.get("?"):
        table.add_row("?", "-", "-", "-", "(lines without provenance)", "-", "-", "-", "-", str(unattributed))
    console.print(table)
    table = Table(title=f"{len(report.kernels)} kernel(s)")
    for column in ("task", "trials", "failed", "best µs", "default µs", "from models"):
        table.add_column(column, overflow="fold", justify="left" if column in ("task", "from models") else "right")
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for k in report.kernels:
        table.add_row(k.task, str(k.trials), str(k.failed), fmt(k.best_us), fmt(k.default_us), ", ".join(k.models))
    console.print(table)


@logs_group.command("merge", context_settings=CONTEXT)
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Log directory to merge into (its key folder is made if missing), or a store folder.")
@key_option
@keep_option
@click.option("--gains-only", is_flag=True,
              help="Only kernels whose records beat their default schedule (what a build applies).")
def merge_command(sources, output: Path, key: str | None, keep: int | None, gains_only: bool) -> None:
    """Merge the logs in SOURCES (log directories or key folders) into OUTPUT: their union, each
    line and each measured candidate once (at its fastest). Sources of several target keys
    need --key: records are never moved from one target to another."""
    from dlc.logshare import merge

    result = merge(sources, output, key=key, keep=keep, gains_only=gains_only)
    click.echo(f"merged {result.lines_read} record line(s) from {len(result.sources)} folder(s) into {result.folder}: "
               f"{result.records_before} -> {result.records_after} record lines")
    if result.left_out:
        click.echo(f"left out (other target keys): {', '.join(result.left_out)}")


@logs_group.command("prune", context_settings=CONTEXT)
@directory_argument
@click.option("--keep", type=click.IntRange(min=1), required=True, metavar="N",
              help="Keep each kernel's N fastest candidates (and its fastest default timing).")
@key_option
def prune_command(directory: Path, keep: int, key: str | None) -> None:
    """Shrink the logs in DIRECTORY [tuning_logs] to each kernel's N fastest candidates; failed
    trials and repeated lines go. Safe while tuners append (locked, atomic replace)."""
    from dlc.logshare import prune

    for folder in _folders(directory, key):
        result = prune(folder, keep=keep)
        click.echo(f"{result.key}: {result.records_before} -> {result.records_after} record lines"
                   + (f" ({result.unreadable_dropped} unreadable dropped)" if result.unreadable_dropped else ""))


@logs_group.command("export", context_settings=CONTEXT)
@click.argument("key")
@logs_option
@click.option("-o", "--output", type=click.Path(path_type=Path), metavar="FILE.tar.gz", help="The archive to write.")
@click.option("--json-database", type=click.Path(path_type=Path), metavar="DIR",
              help="Also write MetaSchedule's JSONDatabase pair (database_workload.json, "
                   "database_tuning_record.json) into DIR, for plain TVM.")
@keep_option
def export_command(key: str, logs_dir: Path, output: Path | None, json_database: Path | None, keep: int | None) -> None:
    """Write KEY's logs as an archive for `dlc logs import` (and/or a JSONDatabase for TVM)."""
    from dlc.logarchive import export_store
    from dlc.logshare import resolve_store

    result = export_store(resolve_store(logs_dir, key), output=output, json_database=json_database, keep=keep)
    if result.archive:
        click.echo(f"wrote {result.archive}: {result.records} record lines, {result.workloads} kernels ({result.key})")
    if result.json_database:
        skipped = (f"; {result.unusable_records} record(s) left out: they do not load or replay here"
                   if result.unusable_records else "")
        click.echo(f"wrote {result.json_database}/database_workload.json and database_tuning_record.json: "
                   f"{result.json_records} records{skipped}")


@logs_group.command("import", context_settings=CONTEXT)
@click.argument("archive", type=click.Path(path_type=Path))
@logs_option
@click.option("-t", "--target", default=None, help="Refuse an archive for another target (preset, TVM string or key).")
@click.option("--max-size", default="256M", show_default=True, help="Refuse an archive whose files hold more.")
def import_command(archive: Path, logs_dir: Path, target: str | None, max_size: str) -> None:
    """Add the records of ARCHIVE (from `dlc logs export`) that the logs lack. Nothing in it is
    executed or extracted; unsafe or foreign archives are refused (exit 8)."""
    from dlc.logarchive import import_archive
    from dlc.logshare import target_key_of

    result = import_archive(archive, logs_dir, target_key=target_key_of(target) if target else None,
                            max_bytes=parse_size(max_size))
    click.echo(f"imported {result.records_added} record line(s) and {result.workloads_added} kernel(s) into "
               f"{result.folder} ({result.records_known} already there"
               + (f", {result.skipped_lines} unreadable or without their kernel skipped" if result.skipped_lines else "")
               + ")")


@logs_group.command("check", context_settings=CONTEXT)
@directory_argument
@key_option
@click.option("--repair", is_flag=True, help="Drop the bad lines (atomic replace, locked).")
def check_command(directory: Path, key: str | None, repair: bool) -> None:
    """Check that every line in DIRECTORY [tuning_logs] parses and every record's trace replays
    on its kernel with this TVM; bad lines are listed as FILE:LINE."""
    from dlc import display
    from dlc.logcheck import check

    bad = 0
    console = display.make_console()
    for folder in _folders(directory, key):
        with display.step(console, f"checked {folder}"):
            report = check(folder, repair=repair)
        for problem in report.problems:
            click.echo(f"{problem.path}:{problem.line}: {problem.reason}")
        verdict = (f"dropped {len(report.problems)} bad line(s)" if report.repaired
                   else f"{len(report.problems)} bad line(s)" if report.problems else "ok")
        click.echo(f"{report.key}: {report.lines} lines, {report.records_replayed} traces replayed: {verdict}")
        bad += 0 if report.repaired else len(report.problems)
    if bad:
        raise LogStoreError(f"{bad} bad line(s) in the tuning logs in '{directory}'",
                            hint="`dlc logs check --repair` drops them; builds and tuning already skip them")
