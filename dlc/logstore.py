"""The tuning-log store: one folder per target key, append-only JSON-lines files.

    tuning_logs/<target key>/target.json          what the folder is for (format, version, target)
    tuning_logs/<target key>/workloads.jsonl      {"hash", "workload"}: a kernel, once
    tuning_logs/<target key>/records.jsonl        {"hash", "candidate", "record", "error", "run", ...}: one trial
    tuning_logs/<target key>/contributions.jsonl  {"id", "kind", "host", "user", "model", "cpu", ...}: a tuning run
    tuning_logs/<target key>/curve.jsonl          the tuning curve of each run

MetaSchedule's own database ignores the target when it looks records up, so records are
kept per target here and only that target's folder is ever loaded. Every line is written
with one O_APPEND write of a complete line, so concurrent tuners never interleave and a
kill loses at most the line being written; a torn or foreign line is skipped and counted
on load. Appends take no lock; the few operations that rewrite a file (merge, prune,
repair: dlc.logshare, dlc.logcheck) hold the folder's lock and lose no concurrent append
(dlc.logfiles). Every line and the header carry the dlc and TVM versions that wrote them;
each tuning run's provenance is a line of contributions.jsonl (dlc.provenance).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlc.errors import LogStoreError
from dlc.fileio import write_json_atomic
from dlc.logfiles import BAD, append_line, read_jsonl
from dlc.provenance import Provenance, now_utc, versions
from dlc.schedule import RULES_VERSION

if TYPE_CHECKING:
    from tvm.s_tir import meta_schedule as ms

    from dlc.target import TargetSpec

log = logging.getLogger(__name__)

FORMAT = "dlc-tuning-log"
# Version 1 still: provenance, versions and contributions.jsonl are fields and a file that
# older readers ignore, and this reader treats as optional, so stores stay shared both ways.
FORMAT_VERSION = 1
READS_VERSIONS = (1,)
LINE_FILES = ("workloads.jsonl", "records.jsonl", "contributions.jsonl")
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
    run: str | None = None  # id of the contribution (tuning run) that measured it
    task: str | None = None


@dataclass
class LogStore:
    """The records of one target, loaded from `path`; appends go straight to disk."""

    path: Path
    target_key: str
    workloads: dict[str, Any] = field(default_factory=dict)  # hash -> Workload.as_json()
    trials: dict[str, list[Trial]] = field(default_factory=lambda: defaultdict(list))
    contributions: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> its line
    header: dict[str, Any] = field(default_factory=dict)
    skipped_lines: int = 0
    contribution: Provenance | None = None  # this process's, written with its first trial
    unusable: dict[int, str] = field(default_factory=dict)  # id(trial) -> why it cannot be used here
    applied: dict[str, Trial] = field(default_factory=dict)  # workload -> its best in the last database

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

    def model_of(self, trial: Trial | None) -> tuple[str, str] | None:
        """(file name, sha256) of the model whose tuning measured `trial`, if recorded."""
        line = self.contributions.get(trial.run or "") if trial is not None else None
        model = line.get("model") if isinstance(line, dict) else None
        if isinstance(model, dict) and isinstance(model.get("sha256"), str):
            return str(model.get("name") or "?"), model["sha256"]
        return None

    def trials_from_other_models(self, workload_hash: str, model_sha256: str) -> int:
        """Search trials of a kernel that tuning runs of other models measured (lines of unknown
        origin do not count: they may be this model's own)."""
        return sum(1 for t in self.searched(workload_hash)
                   if (source := self.model_of(t)) is not None and source[1] != model_sha256)

    @property
    def unusable_records(self) -> int:
        return len(self.unusable)

    def unusable_reason(self) -> str | None:
        """The most frequent reason records were skipped."""
        return Counter(self.unusable.values()).most_common(1)[0][0] if self.unusable else None

    # ------------------------------------------------------------ writes

    def begin_contribution(self, provenance: Provenance) -> None:
        """Attribute the trials this process appends from now on (written with the first one)."""
        self.contribution = provenance

    def add_workload(self, workload_hash: str, workload_json: Any) -> None:
        if workload_hash in self.workloads:
            return
        self.workloads[workload_hash] = workload_json
        self._append("workloads.jsonl", {"hash": workload_hash, "workload": workload_json})

    def add_trial(self, trial: Trial, *, task_name: str) -> None:
        run = trial.run
        if run is None and self.contribution is not None:
            run = self.contribution.id
            if run not in self.contributions:
                self.contributions[run] = self.contribution.to_json()
                self._append("contributions.jsonl", self.contributions[run])
        line = {
            "hash": trial.workload_hash,
            "candidate": trial.candidate_hash,
            "record": trial.record_json,
            "run_secs": list(trial.run_secs) if trial.run_secs else None,
            "error": trial.error,
            **({"rules": trial.rules} if trial.rules else {}),
            "task": task_name,
            "time": now_utc(),
            **({"run": run} if run else {}),
        }
        self._append("records.jsonl", line)
        self.trials[trial.workload_hash].append(replace(trial, run=run, task=task_name))

    def add_curve_point(self, run: str, trials: int, seconds: float, estimated_us: float) -> None:
        """The tuning curve: estimated model time after `trials` of the run that began at `run`."""
        self._append("curve.jsonl", {"run": run, "trials": trials, "seconds": round(seconds, 2),
                                     "estimated_us": round(estimated_us, 3)})

    def _append(self, name: str, data: dict[str, Any]) -> None:
        append_line(self.path / name, {**data, **versions()})

    # ------------------------------------------------------------ MetaSchedule view

    def to_database(self, *, only_improvements: bool = False, per_workload: int | None = None,
                    include_defaults: bool = False, database: ms.database.Database | None = None,
                    exclude: frozenset[str] | set[str] = frozenset()):
        """A MetaSchedule database (a new MemoryDatabase unless one is given) of this target's
        successful trials, fastest first, at most `per_workload` per kernel. Each record is
        loaded, and so replayed on its kernel, on its own, and a kernel's fastest is also
        applied the way a build applies it: a record another TVM wrote, or a damaged line, is
        skipped and counted in `unusable`, not fatal. With `only_improvements`, a kernel whose fastest usable record is
        not measurably faster than its default schedule is left out (MEASURABLE_GAIN), as
        are the kernels in `exclude`. `applied` maps each kernel to its fastest record put in."""
        from tvm.s_tir import meta_schedule as ms

        database = database if database is not None else ms.database.MemoryDatabase()
        self.applied = {}
        for workload_hash, trials in self.trials.items():
            ranked = sorted((t for t in trials if t.run_secs and t.record_json is not None
                             and (include_defaults or t.candidate_hash != DEFAULT)), key=lambda t: _mean(t.run_secs))
            if workload_hash not in self.workloads or workload_hash in exclude or not ranked:
                continue
            workload = self._commit_workload(database, workload_hash, ranked)
            committed = 0
            for trial in ranked:
                if per_workload is not None and committed >= per_workload:
                    break
                record = self.load_record(trial, workload, apply=not committed) if workload is not None else None
                if record is None:
                    continue
                if not committed:
                    default = self.default_seconds(workload_hash)
                    if only_improvements and default is not None and _mean(trial.run_secs) > default * (1 - MEASURABLE_GAIN):
                        break
                    self.applied[workload_hash] = trial
                database.commit_tuning_record(record)
                committed += 1
        return database

    def _commit_workload(self, database, workload_hash: str, trials: list[Trial]):
        from tvm.s_tir import meta_schedule as ms

        try:
            return database.commit_workload(ms.database.Workload.from_json(self.workloads[workload_hash]).mod)
        except Exception as err:  # its kernel does not load here: none of its records can be used
            for trial in trials:
                self.unusable[id(trial)] = f"its kernel does not load: {_reason(err)}"
            return None

    def load_record(self, trial: Trial, workload, *, apply: bool = False):
        """`trial` as a TuningRecord of `workload`, or None (counted) when it does not load.
        Loading replays its trace on the kernel (TVM rebuilds the trace that way); `apply`
        also applies the rebuilt trace as a build does (Database.query_schedule)."""
        from tvm import s_tir
        from tvm.s_tir import meta_schedule as ms

        if id(trial) in self.unusable:
            return None
        try:
            record = ms.database.TuningRecord.from_json(trial.record_json, workload)
            if apply:
                record.trace.apply_to_schedule(s_tir.Schedule(workload.mod), remove_postproc=False)
            return record
        except Exception as err:  # another TVM's record, or a damaged line: skipped, not fatal
            why = replay_error(trial.record_json, workload.mod)
            self.unusable[id(trial)] = f"trace does not replay: {why}" if why else _reason(err)
            return None

    def measure_candidates(self, trials: list[Trial], workload) -> list[tuple[Trial, Any]]:
        """(trial, MeasureCandidate) for the trials whose trace replays on `workload`."""
        pairs = []
        for trial in trials:
            record = self.load_record(trial, workload)
            if record is None:
                continue
            try:
                pairs.append((trial, record.as_measure_candidate()))
            except Exception as err:  # the trace does not replay on this kernel
                self.unusable[id(trial)] = _reason(err)
        return pairs


def _mean(values) -> float:
    return sum(values) / len(values)


def _reason(err: BaseException) -> str:
    from dlc.measure import reason

    return reason(err)


def replay_error(record_json: Any, mod) -> str | None:
    """Why the trace of a record (TuningRecord.as_json()) does not replay on `mod`, in TVM's
    words (loading a record renders none: "(not rendered)"); None when it replays, or when the
    record is malformed rather than its trace."""
    from tvm import s_tir

    try:
        trace = record_json[0]
    except (TypeError, IndexError, KeyError):
        return None
    try:
        s_tir.Trace.apply_json_to_schedule(trace, s_tir.Schedule(mod, error_render_level="detail"))
    except Exception as err:
        return _reason(err)
    return None


# ---------------------------------------------------------------------- opening


def new_header(key: str, target_config: dict) -> dict[str, Any]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "key": key, "target": target_config,
            "created": now_utc(), **versions()}


def create_folder(path: Path, header: dict[str, Any]) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path / "target.json", header)
    except OSError as err:
        raise LogStoreError(
            f"cannot create tuning-log folder '{path}': {err.strerror}",
            hint="pass a writable --logs directory",
        ) from err


def open_store(root: Path | str, target: TargetSpec, *, create: bool = True) -> LogStore:
    """Open (and with `create`, make) the folder of `target` under `root`."""
    path = Path(root) / target.key
    header_path = path / "target.json"
    if not header_path.exists():
        if not create:
            return LogStore(path, target.key)
        create_folder(path, new_header(target.key, target.key_config))
    header = read_header(path)
    if header.get("target") != target.key_config:
        raise LogStoreError(
            f"tuning log '{path}' belongs to target {header.get('target')!r}, "
            f"not {target.key_config!r}",
            hint="the folder name must be the target's key; do not rename tuning-log folders",
        )
    store = LogStore(path, target.key, header=header)
    _load(store)
    return store


def compatible_stores(root: Path | str, target: TargetSpec) -> list[LogStore]:
    """The stores under `root` of targets compatible with `target` (another CPU model or core
    count, the same kind, arch and vector level: TargetSpec.compatible_with), largest first.
    Folders that are not dlc stores, or whose target this TVM does not take, are passed over."""
    from dlc.errors import DlcError
    from dlc.target import TargetSpec

    found = []
    for header_path in sorted(Path(root).glob("*/target.json")):
        try:
            header = read_header(header_path.parent)
            other = TargetSpec(str(header.get("key") or header_path.parent.name), dict(header.get("target") or {}))
            if target.compatible_with(other):
                found.append(open_folder(header_path.parent))
        except DlcError as err:
            log.debug("not a compatible store: %s: %s", header_path.parent, err)
    return sorted(found, key=lambda store: -sum(map(len, store.trials.values())))


def open_folder(path: Path | str) -> LogStore:
    """Open the store in `path` (a folder with a target.json), whatever its target."""
    path = Path(path)
    header = read_header(path)
    store = LogStore(path, str(header.get("key") or path.name), header=header)
    _load(store)
    return store


def read_header(folder: Path) -> dict[str, Any]:
    header_path = Path(folder) / "target.json"
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
    if found.get("format_version") not in READS_VERSIONS:
        raise LogStoreError(
            f"tuning log '{header_path.parent}' has format version {found.get('format_version')!r}; "
            f"this dlc reads version {', '.join(map(str, READS_VERSIONS))}",
            hint="use the dlc version that wrote it, or start a new --logs directory",
        )
    return found


def _load(store: LogStore) -> None:
    for _, _, line in read_jsonl(store.path / "workloads.jsonl"):
        if line is not BAD and isinstance(line.get("hash"), str) and "workload" in line:
            store.workloads.setdefault(line["hash"], line["workload"])
        else:
            store.skipped_lines += 1
    for _, _, line in read_jsonl(store.path / "contributions.jsonl"):
        if line is not BAD and isinstance(line.get("id"), str):
            store.contributions.setdefault(line["id"], line)
        else:
            store.skipped_lines += 1
    seen: set[bytes] = set()
    for _, raw, line in read_jsonl(store.path / "records.jsonl"):
        digest = hashlib.blake2b(raw, digest_size=16).digest()
        if digest in seen:  # the same line twice (a rewrite raced an append): one trial
            continue
        seen.add(digest)
        try:
            run_secs = tuple(float(s) for s in line["run_secs"]) if line.get("run_secs") else None
            trial = Trial(line["hash"], line["candidate"], line["record"], run_secs, line.get("error"),
                          line.get("rules"), line.get("run"), line.get("task"))
            if not isinstance(trial.workload_hash, str) or not isinstance(trial.candidate_hash, str):
                raise TypeError("hash and candidate must be strings")
        except (KeyError, TypeError, ValueError, AttributeError):
            store.skipped_lines += 1
            continue
        store.trials[trial.workload_hash].append(trial)
    if store.skipped_lines:
        log.warning("skipped %d unreadable line(s) in %s", store.skipped_lines, store.path)
