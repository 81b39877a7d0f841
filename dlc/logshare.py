"""Looking after tuning-log stores as a team: list, show, merge and prune.

Everything here reads a store's lines as they are on disk (dlc.logstore's format) and, where
it changes a store, holds the folder's lock and replaces files atomically, so tuners may keep
appending meanwhile (dlc.logfiles). Checking and repairing is dlc.logcheck; export and
import, the way stores travel, dlc.logarchive.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from dlc.errors import InputError, LogStoreError
from dlc.logfiles import BAD, append_line, identity, locked, read_jsonl, rewrite_lines
from dlc.logstore import DEFAULT, LINE_FILES, MEASURABLE_GAIN, create_folder, new_header, open_folder, read_header
from dlc.provenance import Provenance

KEY_PATTERN = re.compile(r"[a-z0-9]+-[a-z0-9.-]+-[0-9a-f]{8}")  # TargetSpec.key


# ---------------------------------------------------------------------- finding stores


def find_stores(root: Path | str) -> list[Path]:
    """The store folders in `root` (or `root` itself when it is one), by key."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"tuning-log directory '{root}' not found", hint="tune first with `dlc tune`, or fix the path")
    if (root / "target.json").is_file():
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "target.json").is_file())


def resolve_store(root: Path | str, key: str) -> Path:
    """The folder for `key` under `root`: a target key (folder name), or a target whose key it is."""
    stores = find_stores(root)
    by_key = {p.name: p for p in stores}
    if key in by_key:
        return by_key[key]
    if not KEY_PATTERN.fullmatch(key):
        from dlc.errors import TargetError
        from dlc.target import parse_target

        try:
            spec_key = parse_target(key).key
        except TargetError:
            spec_key = None
        if spec_key in by_key:
            return by_key[spec_key]
    raise InputError(
        f"no tuning logs for {key!r} in '{root}'",
        hint=f"keys there: {', '.join(by_key)}" if by_key else "tune first with `dlc tune`",
    )


def target_key_of(text: str) -> str:
    """A target key as given, or the key of a target (preset, TVM string or JSON)."""
    if KEY_PATTERN.fullmatch(text):
        return text
    from dlc.target import parse_target

    return parse_target(text).key


def target_text(config: Any) -> str:
    """A store's target as a classic TVM string, or as JSON when it does not parse."""
    from dlc.errors import TargetError
    from dlc.target import TargetSpec

    try:
        return str(TargetSpec("store", dict(config)))
    except (TargetError, TypeError, ValueError):
        return repr(config)


# ---------------------------------------------------------------------- list and show


@dataclass(frozen=True)
class StoreSummary:
    folder: Path
    key: str
    target: str
    records: int  # trial lines, defaults included
    workloads: int
    models: int  # distinct models that contributed (from provenance)
    size: int  # bytes of its line files and header
    last_write: float | None  # newest file's mtime
    problem: str | None = None  # why it could not be read


@dataclass(frozen=True)
class LogListing:
    root: Path
    stores: tuple[StoreSummary, ...]


def list_stores(root: Path | str) -> LogListing:
    summaries = []
    for folder in find_stores(root):
        files = [folder / name for name in ("target.json", *LINE_FILES, "curve.jsonl") if (folder / name).exists()]
        size = sum(f.stat().st_size for f in files)
        last = max((f.stat().st_mtime for f in files), default=None)
        try:
            store = open_folder(folder)
        except LogStoreError as err:
            summaries.append(StoreSummary(folder, folder.name, "?", 0, 0, 0, size, last, err.message))
            continue
        models = {m[1] for trials in store.trials.values() for t in trials if (m := store.model_of(t))}
        summaries.append(StoreSummary(folder, store.target_key, target_text(store.header.get("target")),
                                      sum(map(len, store.trials.values())), len(store.workloads), len(models),
                                      size, last))
    return LogListing(Path(root), tuple(summaries))


@dataclass(frozen=True)
class KernelSummary:
    workload_hash: str
    task: str
    trials: int  # searched, failed ones included
    failed: int
    best_us: float | None
    default_us: float | None
    models: tuple[str, ...]  # "name (sha256 prefix)"; "?" for lines without provenance


@dataclass(frozen=True)
class StoreReport:
    folder: Path
    key: str
    target: str
    header: dict[str, Any]
    contributions: tuple[dict[str, Any], ...]
    trials_by_contribution: dict[str, int]
    kernels: tuple[KernelSummary, ...]
    skipped_lines: int


def describe(folder: Path | str) -> StoreReport:
    """What `dlc logs show` prints: the store, who contributed, and per kernel its trials."""
    store = open_folder(folder)
    kernels = []
    per_run: dict[str, int] = defaultdict(int)
    for workload_hash, trials in store.trials.items():
        searched = store.searched(workload_hash)
        models = set()
        for trial in trials:
            per_run[trial.run or "?"] += trial.candidate_hash != DEFAULT
            source = store.model_of(trial)
            models.add(f"{source[0]} ({source[1][:12]})" if source else "?")
        best, default = store.best_seconds(workload_hash), store.default_seconds(workload_hash)
        task = next((t.task for t in trials if t.task), "?")
        kernels.append(KernelSummary(workload_hash, task, len(searched), sum(1 for t in searched if not t.run_secs),
                                     None if best is None else best * 1e6, None if default is None else default * 1e6,
                                     tuple(sorted(models))))
    kernels.sort(key=lambda k: (-k.trials, k.task))
    return StoreReport(store.path, store.target_key, target_text(store.header.get("target")), store.header,
                       tuple(store.contributions.values()), dict(per_run), tuple(kernels), store.skipped_lines)


# ---------------------------------------------------------------------- choosing records


def seconds(line: dict[str, Any]) -> float | None:
    try:
        secs = [float(s) for s in line.get("run_secs") or ()]
    except (TypeError, ValueError):
        return None
    return sum(secs) / len(secs) if secs else None


def _faster(a: dict[str, Any], b: dict[str, Any]) -> bool:
    ta, tb = seconds(a), seconds(b)
    return ta is not None and (tb is None or ta < tb)


def select_records(records: Sequence[dict[str, Any]], keep: int | None = None) -> list[int]:
    """Indexes (in order) of the records to keep: a line found twice once; a candidate measured
    more than once at its fastest (a failure only when it never ran); with `keep`, the `keep`
    fastest candidates of each kernel, failed ones dropped, and its fastest default timing
    per rules version (the build compares records with it)."""
    winners: dict[tuple, int] = {}
    for i, line in enumerate(records):
        if line["candidate"] != DEFAULT:
            ident: tuple = (line["hash"], line["candidate"])
        elif keep is None:
            ident = (line["hash"], DEFAULT, identity(line))
        else:
            ident = (line["hash"], DEFAULT, line.get("rules"))
        if ident not in winners or _faster(line, records[winners[ident]]):
            winners[ident] = i
    chosen = set(winners.values())
    if keep is not None:
        by_kernel: dict[str, list[int]] = defaultdict(list)
        for i in chosen:
            if records[i]["candidate"] != DEFAULT:
                by_kernel[records[i]["hash"]].append(i)
        for indexes in by_kernel.values():
            ran = sorted((i for i in indexes if seconds(records[i]) is not None), key=lambda i: seconds(records[i]))
            chosen -= set(indexes) - set(ran[:keep])
    return sorted(chosen)


def gaining_kernels(records: Sequence[dict[str, Any]]) -> set[str]:
    """Kernels whose fastest record beats their fastest default timing by more than the
    store's measurable gain: the only ones a build gives a tuned schedule."""
    fastest: dict[tuple[str, bool], float] = {}
    for line in records:
        secs = seconds(line)
        if secs is not None:
            slot = (line["hash"], line["candidate"] == DEFAULT)
            fastest[slot] = min(secs, fastest.get(slot, secs))
    return {h for (h, is_default), secs in fastest.items()
            if not is_default and (h, True) in fastest and secs < fastest[(h, True)] * (1 - MEASURABLE_GAIN)}


def record_lines(folder: Path) -> list[tuple[bytes, dict[str, Any]]]:
    return [(raw, line) for _, raw, line in read_jsonl(folder / "records.jsonl") if is_record(line)]


def is_record(line: Any) -> bool:
    return line is not BAD and isinstance(line.get("hash"), str) and isinstance(line.get("candidate"), str)


# ---------------------------------------------------------------------- merge and prune


@dataclass(frozen=True)
class MergeResult:
    folder: Path
    key: str
    sources: tuple[Path, ...]
    records_before: int  # in the destination
    records_after: int
    lines_read: int  # record lines in the sources
    left_out: tuple[str, ...]  # other target keys found in the sources, not merged


def merge(sources: Sequence[Path | str], output: Path | str, *, key: str | None = None,
          keep: int | None = None, gains_only: bool = False) -> MergeResult:
    """Merge the stores in `sources` (log directories or store folders) into `output` (a log
    directory, or a store folder of the same key): the union of their records, de-duplicated,
    with `keep` the fastest `keep` per kernel. Stores of one target key only: with several,
    `key` says which (records are never moved between targets). With `gains_only`, only the
    kernels whose records beat their default (gaining_kernels) come over, with their
    workloads: logs small enough to ship."""
    folders = [f for source in sources for f in find_stores(source)]
    if not folders:
        raise InputError(f"no tuning logs in {', '.join(map(str, sources))}", hint="pass folders written by `dlc tune`")
    headers = {f: read_header(f) for f in folders}
    keys: dict[str, list[Path]] = defaultdict(list)
    for folder, header in headers.items():
        keys[str(header.get("key") or folder.name)].append(folder)
    output = Path(output)
    into = output if (output / "target.json").is_file() else None
    if key is not None:
        key = target_key_of(key)
    elif into is not None:
        key = str(read_header(into).get("key"))
        if key not in keys:
            raise LogStoreError(f"'{into}' holds logs for target key {key!r}, the sources for {', '.join(sorted(keys))}",
                                hint="merge stores of one target only; -o takes a directory of tuning logs")
    elif len(keys) == 1:
        key = next(iter(keys))
    else:
        listing = ", ".join(f"{k} ({len(v)} folder{'s' * (len(v) > 1)})" for k, v in sorted(keys.items()))
        raise InputError(f"the sources hold logs for {len(keys)} target keys: {listing}",
                         hint="records of one target never apply to another: merge one key at a time with --key KEY")
    if key not in keys:
        raise InputError(f"no logs for target key {key!r} in the sources",
                         hint=f"keys there: {', '.join(sorted(keys))}")
    chosen = keys[key]
    target = headers[chosen[0]].get("target")
    dest = into or output / key
    for folder in chosen + ([dest] if (dest / "target.json").is_file() else []):
        header = headers.get(folder) or read_header(folder)
        if header.get("key") != key or header.get("target") != target:
            raise LogStoreError(f"'{folder}' holds logs for {header.get('key')!r} ({header.get('target')!r}), "
                                f"not {key!r} ({target!r})",
                                hint="merge stores of one target only; -o takes a directory of tuning logs")
    if not (dest / "target.json").is_file():
        create_folder(dest, new_header(key, target))

    incoming = [line for folder in chosen if folder.resolve() != dest.resolve() for _, line in record_lines(folder)]
    if gains_only:
        gaining = gaining_kernels(incoming)
        incoming = [line for line in incoming if line["hash"] in gaining]
    before = len(record_lines(dest))
    with locked(dest):
        # Kernels first, then who contributed, then the records that refer to both.
        _merge_by("workloads.jsonl", dest, chosen, "hash", wanted={line["hash"] for line in incoming})
        _merge_by("contributions.jsonl", dest, chosen, "id")

        def union(lines: list[bytes]) -> list[bytes]:
            parsed = [(raw, line) for raw in lines if is_record(line := parse_line(raw))]
            everything = [line for _, line in parsed] + incoming
            raws = [raw for raw, _ in parsed] + [_dump(line) for line in incoming]
            return [raws[i] for i in select_records(everything, keep)]

        rewrite_lines(dest / "records.jsonl", union)
        provenance = Provenance.collect("merge", source=", ".join(str(f) for f in chosen))
        append_line(dest / "contributions.jsonl", provenance.to_json())
    left_out = tuple(f"{k} ({len(v)} folder{'s' * (len(v) > 1)})" for k, v in sorted(keys.items()) if k != key)
    return MergeResult(dest, key, tuple(chosen), before, len(record_lines(dest)), len(incoming), left_out)


def _merge_by(name: str, dest: Path, sources: list[Path], field: str, *, wanted: set[str] | None = None) -> None:
    """Append to dest's `name` the source lines whose `field` it lacks (only `wanted` ones)."""
    have = {line[field] for _, _, line in read_jsonl(dest / name) if line is not BAD and field in line}
    for folder in sources:
        if folder.resolve() == dest.resolve():
            continue
        for _, _, line in read_jsonl(folder / name):
            value = line.get(field) if line is not BAD else None
            if isinstance(value, str) and value not in have and (wanted is None or value in wanted):
                have.add(value)
                append_line(dest / name, line)


def parse_line(raw: bytes) -> Any:
    """A raw line's JSON object, or BAD."""
    try:
        line = json.loads(raw)
    except ValueError:
        return BAD
    return line if isinstance(line, dict) else BAD


def _dump(line: dict[str, Any]) -> bytes:
    return json.dumps(line, separators=(",", ":")).encode()


@dataclass(frozen=True)
class PruneResult:
    folder: Path
    key: str
    records_before: int
    records_after: int
    unreadable_dropped: int


def prune(folder: Path | str, *, keep: int) -> PruneResult:
    """Keep the `keep` fastest candidates of each kernel (and its fastest default timing);
    failed trials, repeated lines and unreadable lines go. Kernels stay in workloads.jsonl."""
    if keep < 1:
        raise InputError(f"--keep must be at least 1, not {keep}", hint="e.g. --keep 5")
    folder = Path(folder)
    header = read_header(folder)
    counts = {}

    def best(lines: list[bytes]) -> list[bytes]:
        parsed = [(raw, line) for raw in lines if is_record(line := parse_line(raw))]
        counts.update(before=len(lines), unreadable=len(lines) - len(parsed))
        kept = [parsed[i][0] for i in select_records([line for _, line in parsed], keep)]
        counts["after"] = len(kept)
        return kept

    with locked(folder):
        rewrite_lines(folder / "records.jsonl", best)
    return PruneResult(folder, str(header.get("key")), counts["before"], counts["after"], counts["unreadable"])
