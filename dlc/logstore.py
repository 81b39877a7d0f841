"""The tuning-log store: one folder per target key, append-only JSON-lines files.

    tuning_logs/<target key>/target.json      what the folder is for (format, version, target)
    tuning_logs/<target key>/workloads.jsonl  {"hash", "workload"}: a kernel, once
    tuning_logs/<target key>/records.jsonl    {"hash", "candidate", "record", "error", ...}: one trial

MetaSchedule's own database ignores the target when it looks records up, so records are
kept per target here and only that target's folder is ever loaded. Every line is written
with one O_APPEND write of a complete line, so concurrent tuners never interleave and a
kill loses at most the line being written; a torn or foreign line is skipped and counted
on load, never rewritten.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlc.errors import LogStoreError
from dlc.fileio import write_json_atomic
from dlc.schedule import RULES_VERSION

if TYPE_CHECKING:
    from tvm.s_tir import meta_schedule as ms

    from dlc.target import TargetSpec

log = logging.getLogger(__name__)

FORMAT = "dlc-tuning-log"
FORMAT_VERSION = 1
DEFAULT = "default"  # candidate hash of a kernel's default-schedule baseline line
# Repeated timings of one kernel differ by up to ~2%: a record must beat its default (and a
# new best the previous best) by more than this to count as a gain.
MEASURABLE_GAIN = 0.03


@dataclass(frozen=True)
class Trial:
    """One measured (or failed) candidate as stored on disk."""

    workload_hash: str
    candidate_hash: str
    record_json: Any  # MetaSchedule's TuningRecord.as_json()
    run_secs: tuple[float, ...] | None
    error: str | None  # "build: ..." or "run: ..." when the candidate failed
    rules: str | None = None  # default-schedule lines: dlc.schedule.RULES_VERSION that built it


@dataclass
class LogStore:
    """The records of one target, loaded from `path`; appends go straight to disk."""

    path: Path
    target_key: str
    workloads: dict[str, Any] = field(default_factory=dict)  # hash -> Workload.as_json()
    trials: dict[str, list[Trial]] = field(default_factory=lambda: defaultdict(list))
    skipped_lines: int = 0

    # ------------------------------------------------------------ queries

    def searched(self, workload_hash: str) -> list[Trial]:
        """The search trials of a kernel (its default-schedule baseline excluded)."""
        return [t for t in self.trials.get(workload_hash, ()) if t.candidate_hash != DEFAULT]

    def trial_count(self, workload_hash: str) -> int:
        return len(self.searched(workload_hash))

    def best_seconds(self, workload_hash: str) -> float | None:
        times = [_mean(t.run_secs) for t in self.searched(workload_hash) if t.run_secs]
        return min(times) if times else None

    def default_trial(self, workload_hash: str) -> Trial | None:
        """The latest measurement of the kernel under the current default rules (failed or not)."""
        for trial in reversed(self.trials.get(workload_hash, ())):
            if trial.candidate_hash == DEFAULT and trial.rules == RULES_VERSION:
                return trial
        return None

    def default_seconds(self, workload_hash: str) -> float | None:
        """The kernel's time under dlc's current default schedule, if it was measured and ran:
        the best of its measurements, as the best record is the best of the candidates' (the
        tuner re-times the default beside every batch, so both see the same machine states)."""
        times = [_mean(t.run_secs) for t in self.trials.get(workload_hash, ())
                 if t.candidate_hash == DEFAULT and t.rules == RULES_VERSION and t.run_secs]
        return min(times) if times else None

    def measured_candidates(self, workload_hash: str) -> dict[str, Trial]:
        return {t.candidate_hash: t for t in self.searched(workload_hash)}

    # ------------------------------------------------------------ writes

    def add_workload(self, workload_hash: str, workload_json: Any) -> None:
        if workload_hash in self.workloads:
            return
        self.workloads[workload_hash] = workload_json
        _append_line(self.path / "workloads.jsonl", {"hash": workload_hash, "workload": workload_json})

    def add_trial(self, trial: Trial, *, task_name: str) -> None:
        line = {
            "hash": trial.workload_hash,
            "candidate": trial.candidate_hash,
            "record": trial.record_json,
            "run_secs": list(trial.run_secs) if trial.run_secs else None,
            "error": trial.error,
            **({"rules": trial.rules} if trial.rules else {}),
            "task": task_name,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        _append_line(self.path / "records.jsonl", line)
        self.trials[trial.workload_hash].append(trial)

    def add_curve_point(self, run: str, trials: int, seconds: float, estimated_us: float) -> None:
        """The tuning curve: estimated model time after `trials` of the run that began at `run`."""
        _append_line(self.path / "curve.jsonl", {"run": run, "trials": trials, "seconds": round(seconds, 2),
                                                 "estimated_us": round(estimated_us, 3)})

    # ------------------------------------------------------------ MetaSchedule view

    def to_database(self, *, only_improvements: bool = False) -> ms.database.MemoryDatabase:
        """A MetaSchedule database of this target's successful trials. With
        `only_improvements`, kernels whose best record is not measurably faster than their
        default schedule are left out: a build keeps the default (MEASURABLE_GAIN)."""
        from tvm.s_tir import meta_schedule as ms

        database = ms.database.MemoryDatabase()
        for workload_hash in self.trials:
            best, default = self.best_seconds(workload_hash), self.default_seconds(workload_hash)
            if workload_hash not in self.workloads or best is None:
                continue
            if only_improvements and default is not None and best > default * (1 - MEASURABLE_GAIN):
                continue
            workload = database.commit_workload(
                ms.database.Workload.from_json(self.workloads[workload_hash]).mod
            )
            for trial in self.searched(workload_hash):
                if trial.run_secs:
                    database.commit_tuning_record(ms.database.TuningRecord.from_json(trial.record_json, workload))
        return database


def _mean(values) -> float:
    return sum(values) / len(values)


def _append_line(path: Path, data: dict[str, Any]) -> None:
    """Append one complete line with a single write: atomic against other appenders."""
    payload = (json.dumps(data, separators=(",", ":")) + "\n").encode()
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                payload = b"\n" + payload  # never glue a record onto a torn line
            written = os.write(fd, payload)
        finally:
            os.close(fd)
    except OSError as err:
        raise LogStoreError(
            f"cannot append to tuning log '{path}': {err.strerror}",
            hint="check the --logs directory is writable and the disk is not full",
        ) from err
    if written != len(payload):
        raise LogStoreError(f"short write to tuning log '{path}'", hint="check free disk space")


def open_store(root: Path | str, target: TargetSpec, *, create: bool = True) -> LogStore:
    """Open (and with `create`, make) the folder of `target` under `root`."""
    root = Path(root)
    path = root / target.key
    header_path = path / "target.json"
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "key": target.key, "target": target.key_config}
    if not header_path.exists():
        if not create:
            return LogStore(path, target.key)
        try:
            path.mkdir(parents=True, exist_ok=True)
            write_json_atomic(header_path, header)
        except OSError as err:
            raise LogStoreError(
                f"cannot create tuning-log folder '{path}': {err.strerror}",
                hint="pass a writable --logs directory",
            ) from err
    else:
        _check_header(header_path, header)
    store = LogStore(path, target.key)
    _load(store)
    return store


def _check_header(header_path: Path, expected: dict[str, Any]) -> None:
    try:
        found = json.loads(header_path.read_text())
    except (OSError, ValueError) as err:
        raise LogStoreError(
            f"'{header_path}' is not a dlc tuning-log header ({err})",
            hint="move the folder away; dlc writes a new one on the next tuning run",
        ) from err
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        raise LogStoreError(
            f"'{header_path.parent}' is not a dlc tuning-log folder",
            hint="point --logs at a directory that dlc manages",
        )
    if found.get("format_version") != FORMAT_VERSION:
        raise LogStoreError(
            f"tuning log '{header_path.parent}' has format version {found.get('format_version')!r}; "
            f"this dlc reads version {FORMAT_VERSION}",
            hint="use the dlc version that wrote it, or start a new --logs directory",
        )
    if found.get("target") != expected["target"]:
        raise LogStoreError(
            f"tuning log '{header_path.parent}' belongs to target {found.get('target')!r}, "
            f"not {expected['target']!r}",
            hint="the folder name must be the target's key; do not rename tuning-log folders",
        )


def _load(store: LogStore) -> None:
    for line in _read_lines(store, store.path / "workloads.jsonl"):
        if isinstance(line.get("hash"), str) and "workload" in line:
            store.workloads.setdefault(line["hash"], line["workload"])
        else:
            store.skipped_lines += 1
    for line in _read_lines(store, store.path / "records.jsonl"):
        try:
            run_secs = tuple(float(s) for s in line["run_secs"]) if line.get("run_secs") else None
            trial = Trial(line["hash"], line["candidate"], line["record"], run_secs, line.get("error"), line.get("rules"))
        except (KeyError, TypeError, ValueError):
            store.skipped_lines += 1
            continue
        store.trials[trial.workload_hash].append(trial)
    if store.skipped_lines:
        log.warning("skipped %d unreadable line(s) in %s", store.skipped_lines, store.path)


def _read_lines(store: LogStore, path: Path):
    if not path.exists():
        return
    with path.open("rb") as f:
        for raw in f:
            try:
                data = json.loads(raw)
            except ValueError:
                store.skipped_lines += 1  # a torn last line after a crash, or a hand edit
                continue
            if isinstance(data, dict):
                yield data
            else:
                store.skipped_lines += 1
