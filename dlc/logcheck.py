"""`dlc logs check`: every line of a store parses, every kernel loads, and every record's trace
replays on its kernel with this TVM; `--repair` drops the bad lines (locked, atomic replace).

A record from another TVM version is kept when its trace replays here and reported when it
does not; builds and tuning skip such records on their own (dlc.logstore), so a check is
for knowing, and a repair for shrinking, not a precondition.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlc.logfiles import BAD, locked, read_jsonl, rewrite_lines
from dlc.logshare import is_record, parse_line, seconds
from dlc.logstore import read_header, replay_error


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int
    reason: str


@dataclass(frozen=True)
class CheckReport:
    folder: Path
    key: str
    lines: int  # lines checked
    records_replayed: int
    problems: tuple[Problem, ...]
    repaired: bool  # the bad lines were dropped


TORN = "(torn or edited)"


def check(folder: Path | str, *, repair: bool = False) -> CheckReport:
    """Every line parses; every kernel loads; every record loads and its trace replays on its
    kernel with this TVM. With `repair`, the bad lines are dropped (atomic replace, locked)."""
    folder = Path(folder)
    header = read_header(folder)
    if not repair:
        return _check(folder, header, repair=False)
    with locked(folder):
        return _check(folder, header, repair=True)


def _check(folder: Path, header: dict[str, Any], *, repair: bool) -> CheckReport:
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from dlc.measure import load_cpu_tensor_intrinsics, reason

    load_cpu_tensor_intrinsics()  # traces may tensorize with the CPU intrinsics
    unterminated: dict[str, int] = {}

    def read(name: str):
        for number, raw, line in read_jsonl(folder / name):
            if not raw.endswith(b"\n"):
                unterminated[name] = number
            yield number, raw, line

    bad: dict[str, dict[int, str]] = defaultdict(dict)
    lines = replayed = 0
    kernels: dict[str, Any] = {}
    for number, _, line in read("workloads.jsonl"):
        lines += 1
        if line is BAD or not isinstance(line.get("hash"), str) or "workload" not in line:
            bad["workloads.jsonl"][number] = f"not a workload line {TORN}"
            continue
        if line["hash"] in kernels:
            continue
        try:
            kernels[line["hash"]] = ms.database.Workload.from_json(line["workload"])
        except Exception as err:
            bad["workloads.jsonl"][number] = f"kernel does not load: {reason(err)}"
    for number, _, line in read("records.jsonl"):
        lines += 1
        if not is_record(line) or "record" not in line:
            bad["records.jsonl"][number] = f"not a record line {TORN}"
            continue
        if seconds(line) is None and line.get("run_secs"):
            bad["records.jsonl"][number] = "run_secs is not a list of numbers"
            continue
        workload = kernels.get(line["hash"])
        if workload is None:
            bad["records.jsonl"][number] = f"no loadable kernel {line['hash']} in workloads.jsonl"
            continue
        if line["record"] is None:
            if line.get("run_secs"):
                bad["records.jsonl"][number] = "a timing without its trace"
            continue
        replayed += 1
        try:  # loading replays the trace on the kernel
            record = ms.database.TuningRecord.from_json(line["record"], workload)
        except Exception as err:
            why = replay_error(line["record"], workload.mod)
            bad["records.jsonl"][number] = (f"trace does not replay on its kernel: {why}" if why
                                            else f"record does not load: {reason(err)}")
            continue
        try:  # and a build applies the trace it rebuilt
            record.trace.apply_to_schedule(s_tir.Schedule(workload.mod), remove_postproc=False)
        except Exception as err:
            bad["records.jsonl"][number] = f"trace does not apply to its kernel: {reason(err)}"
    for name in ("contributions.jsonl", "curve.jsonl"):
        for number, _, line in read(name):
            lines += 1
            if line is BAD:
                bad[name][number] = f"not a JSON object {TORN}"
    if repair:
        for name in ("records.jsonl", "workloads.jsonl", "contributions.jsonl", "curve.jsonl"):
            if bad[name]:
                # A last line read without its newline may have been an append still being written.
                rewrite_lines(folder / name, lambda current, drop=bad[name], pending=unterminated.get(name): [
                    raw for n, raw in enumerate(current, 1)
                    if n not in drop or (n == pending and parse_line(raw) is not BAD)])
    problems = tuple(Problem(folder / name, number, why) for name, found in bad.items()
                     for number, why in sorted(found.items()))
    return CheckReport(folder, str(header.get("key")), lines, replayed, problems, repair and bool(problems))

