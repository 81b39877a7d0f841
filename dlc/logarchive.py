"""Tuning logs in transit: export a store as a .tar.gz (or as MetaSchedule's JSONDatabase pair
for plain TVM users) and import such an archive from someone else.

An archive holds one store: `<target key>/target.json`, `workloads.jsonl`, `records.jsonl`,
`contributions.jsonl`. Import treats it as untrusted input: it reads members as bytes, never
extracts them and never unpickles; it refuses absolute or `..` paths, links, devices and any
other member, caps the total size and the line length, and refuses another schema or a
target key that does not match its own target. It then appends the lines the local store
lacks, under the store's lock, through the store's own writer: nothing is written anywhere
but `<logs>/<target key>/`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlc.errors import InputError, LogImportError, TargetError
from dlc.logfiles import BAD, append_line, identity, locked, read_jsonl
from dlc.logshare import KEY_PATTERN, is_record, select_records
from dlc.logstore import FORMAT, LINE_FILES, READS_VERSIONS, create_folder, new_header, open_folder, read_header
from dlc.provenance import Provenance

# Caps against decompression bombs and runaway lines, far above real stores: PP-OCR cls's
# 55 kernels take 4.9 MB (~90 KB a line), a trial line a few KB to tens of KB.
MAX_ARCHIVE_BYTES = 256 << 20  # uncompressed
MAX_LINE_BYTES = 8 << 20
MAX_MEMBERS = 16
MEMBERS = ("target.json", *LINE_FILES)
JSON_DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    key: str
    archive: Path | None
    json_database: Path | None
    records: int  # in the archive
    workloads: int
    json_records: int  # in the JSONDatabase pair
    unusable_records: int  # left out of the pair: they do not load or replay here


def export_store(folder: Path | str, *, output: Path | str | None = None, json_database: Path | str | None = None,
                 keep: int | None = None) -> ExportResult:
    """Write the store in `folder` as a .tar.gz (`output`) and/or as MetaSchedule's JSONDatabase
    pair in the directory `json_database`; with `keep`, only each kernel's fastest `keep`."""
    if output is None and json_database is None:
        raise InputError("nothing to export to", hint="pass -o FILE.tar.gz and/or --json-database DIR")
    if keep is not None and keep < 1:
        raise InputError(f"--keep must be at least 1, not {keep}", hint="e.g. --keep 5")
    folder = Path(folder)
    header = read_header(folder)
    key = str(header.get("key") or folder.name)
    records = [line for _, _, line in read_jsonl(folder / "records.jsonl") if is_record(line)]
    records = [records[i] for i in select_records(records, keep)]
    used = {line["hash"] for line in records}
    workloads: dict[str, dict] = {}
    for _, _, line in read_jsonl(folder / "workloads.jsonl"):
        if line is not BAD and line.get("hash") in used:
            workloads.setdefault(line["hash"], line)
    records = [line for line in records if line["hash"] in workloads]  # no orphans: an import would skip them
    contributions = [line for _, _, line in read_jsonl(folder / "contributions.jsonl") if line is not BAD]
    archive = None
    if output is not None:
        archive = _write_archive(Path(output), key, header, {
            "workloads.jsonl": workloads.values(), "records.jsonl": records, "contributions.jsonl": contributions})
    json_records = unusable = 0
    if json_database is not None:
        json_records, unusable = _write_json_database(folder, Path(json_database), keep)
    return ExportResult(folder, key, archive, None if json_database is None else Path(json_database),
                        len(records), len(workloads), json_records, unusable)


def _write_archive(output: Path, key: str, header: dict, files: dict[str, Any]) -> Path:
    if output.is_dir():
        raise InputError(f"output '{output}' is a directory", hint="give -o a file name, e.g. -o logs.tar.gz")
    if not output.parent.is_dir():
        raise InputError(f"output directory '{output.parent}' does not exist", hint="create it first")
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            members = {"target.json": json.dumps(header, indent=2).encode() + b"\n"}
            members.update({name: b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines)
                            for name, lines in files.items()})
            for name, data in members.items():
                info = tarfile.TarInfo(f"{key}/{name}")
                info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, output)
    except OSError as err:
        raise InputError(f"cannot write '{output}': {err.strerror}", hint="pick a writable -o path") from err
    finally:
        tmp.unlink(missing_ok=True)
    return output


def _write_json_database(folder: Path, directory: Path, keep: int | None) -> tuple[int, int]:
    """MetaSchedule's JSONDatabase pair: the successful records (defaults included: they are
    dlc's schedules, and a plain TVM user has no other), each kernel's fastest replayed first."""
    import shutil
    import tempfile

    from tvm.s_tir import meta_schedule as ms

    from dlc.measure import load_cpu_tensor_intrinsics

    load_cpu_tensor_intrinsics()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".dlc-export-", dir=directory))
    except OSError as err:
        raise InputError(f"cannot write to '{directory}': {err.strerror}", hint="pick a writable --json-database DIR") from err
    try:
        store = open_folder(folder)
        database = ms.database.JSONDatabase(work_dir=str(staging))
        store.to_database(per_workload=keep, include_defaults=True, database=database)
        count = len(database.get_all_tuning_records())
        for name in JSON_DATABASE_FILES:
            os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return count, store.unusable_records


# ---------------------------------------------------------------------- import


@dataclass(frozen=True)
class ImportResult:
    archive: Path
    folder: Path
    key: str
    records_added: int
    records_known: int  # already in the store
    workloads_added: int
    skipped_lines: int  # unreadable, or records whose kernel is in neither the archive nor the store


def import_archive(archive: Path | str, root: Path | str, *, target_key: str | None = None,
                   max_bytes: int = MAX_ARCHIVE_BYTES, max_line_bytes: int = MAX_LINE_BYTES) -> ImportResult:
    """Add the records of `archive` (written by export_store) that the store of its target key
    under `root` lacks. `target_key`: refuse an archive for any other target."""
    archive = Path(archive)
    if not archive.is_file():
        raise InputError(f"archive '{archive}' not found", hint="check the path")
    if archive.stat().st_size > max_bytes:
        raise LogImportError(f"'{archive}' is {archive.stat().st_size:,} bytes, over the {max_bytes:,}-byte cap",
                             hint="raise --max-size if you trust it, or ask for an export with --keep N")
    key, members = _read_members(archive, max_bytes)
    header = _check_header(archive, key, members.pop("target.json", None), target_key)
    lines = {name: _split_lines(archive, name, members.get(name, b""), max_line_bytes) for name in LINE_FILES}
    skipped = sum(1 for found in lines.values() for line in found if line is BAD)

    dest = Path(root) / key
    if (dest / "target.json").is_file():
        local = read_header(dest)
        if local.get("target") != header["target"]:
            raise LogImportError(f"'{dest}' holds logs for target {local.get('target')!r}, the archive for "
                                 f"{header['target']!r}", hint="the local folder was renamed: move it away")
    else:
        create_folder(dest, new_header(key, header["target"]))
    added = known = workloads_added = 0
    with locked(dest):
        have_workloads = {line["hash"] for _, _, line in read_jsonl(dest / "workloads.jsonl")
                          if line is not BAD and isinstance(line.get("hash"), str)}
        have_runs = {line["id"] for _, _, line in read_jsonl(dest / "contributions.jsonl")
                     if line is not BAD and isinstance(line.get("id"), str)}
        have_records = {identity(line) for _, _, line in read_jsonl(dest / "records.jsonl") if line is not BAD}
        new_kernels = {}
        for line in lines["workloads.jsonl"]:
            if line is not BAD and isinstance(line.get("hash"), str) and "workload" in line:
                new_kernels.setdefault(line["hash"], line)
        for line in lines["contributions.jsonl"]:
            if line is not BAD and isinstance(line.get("id"), str) and line["id"] not in have_runs:
                have_runs.add(line["id"])
                append_line(dest / "contributions.jsonl", line)
        for line in lines["records.jsonl"]:
            if line is BAD:
                continue
            if not is_record(line) or (line["hash"] not in have_workloads and line["hash"] not in new_kernels):
                skipped += 1
                continue
            if identity(line) in have_records:
                known += 1
                continue
            if line["hash"] not in have_workloads:  # its kernel first, so no record is ever orphaned
                append_line(dest / "workloads.jsonl", new_kernels[line["hash"]])
                have_workloads.add(line["hash"])
                workloads_added += 1
            append_line(dest / "records.jsonl", line)
            have_records.add(identity(line))
            added += 1
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        append_line(dest / "contributions.jsonl",
                    Provenance.collect("import", source=f"{archive.name} (sha256 {digest})").to_json())
    return ImportResult(archive, dest, key, added, known, workloads_added, skipped)


def _refuse(archive: Path, what: str, hint: str) -> LogImportError:
    return LogImportError(f"refused '{archive}': {what}", hint=hint)


def _read_members(archive: Path, max_bytes: int) -> tuple[str, dict[str, bytes]]:
    """The archive's files as bytes, after checking every member's path, type and size."""
    members: dict[str, bytes] = {}
    key = None
    total = 0
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for count, member in enumerate(iter(tar.next, None), 1):
                if count > MAX_MEMBERS:
                    raise _refuse(archive, f"more than {MAX_MEMBERS} members", "a dlc export has four files")
                name = member.name
                parts = name.rstrip("/").split("/")
                if name.startswith("/") or ".." in parts or (len(name) > 1 and name[1] == ":"):
                    raise _refuse(archive, f"member {name!r} points outside the store", "only import dlc exports")
                if member.issym() or member.islnk():
                    raise _refuse(archive, f"member {name!r} is a link (to {member.linkname!r})",
                                  "only import dlc exports: they hold regular files only")
                if member.isdir() and len(parts) == 1:
                    continue
                if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    raise _refuse(archive, f"member {name!r} is not a regular file (a device, FIFO or special entry)",
                                  "only import dlc exports: they hold regular files only")
                if len(parts) != 2 or parts[1] not in MEMBERS or (key is not None and parts[0] != key):
                    raise _refuse(archive, f"unexpected member {name!r}",
                                  f"a dlc export holds <target key>/{{{','.join(MEMBERS)}}} only")
                if parts[1] in members:
                    raise _refuse(archive, f"member {name!r} appears twice", "only import dlc exports")
                key = parts[0]
                total += member.size
                if total > max_bytes:
                    raise _refuse(archive, f"its files hold over {max_bytes:,} bytes",
                                  "raise --max-size if you trust it, or ask for an export with --keep N")
                handle = tar.extractfile(member)
                members[parts[1]] = handle.read(member.size) if handle is not None else b""
    except LogImportError:
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        raise _refuse(archive, f"not a readable .tar.gz ({err})", "export it again with `dlc logs export`") from err
    if key is None:
        raise _refuse(archive, "it holds no tuning log", "export it again with `dlc logs export`")
    return key, members


def _check_header(archive: Path, key: str, data: bytes | None, target_key: str | None) -> dict[str, Any]:
    from dlc.target import TargetSpec

    try:
        header = json.loads(data) if data is not None else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _refuse(archive, f"'{key}/target.json' is missing or not a dlc tuning-log header (foreign schema)",
                      "import archives written by `dlc logs export`")
    if header.get("format_version") not in READS_VERSIONS:
        raise _refuse(archive, f"its logs have format version {header.get('format_version')!r}; this dlc reads "
                      f"version {', '.join(map(str, READS_VERSIONS))}", "import it with the dlc version that wrote it")
    try:
        computed = TargetSpec("archive", dict(header.get("target") or {})).key
    except (TargetError, TypeError, ValueError):
        computed = None
    if not KEY_PATTERN.fullmatch(key) or header.get("key") != key or computed != key:
        raise _refuse(archive, f"its target key {key!r} does not match its target {header.get('target')!r}"
                      f" (key {computed!r})", "the archive was edited or is not a dlc export: export it again")
    if target_key is not None and key != target_key:
        raise _refuse(archive, f"it holds logs for target key {key!r}, not {target_key!r}",
                      "import it without --target, or ask for an export of your target")
    return header


def _split_lines(archive: Path, name: str, data: bytes, max_line_bytes: int) -> list[Any]:
    found = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw:
            continue
        if len(raw) > max_line_bytes:
            raise _refuse(archive, f"line {number} of {name} is {len(raw):,} bytes, over the {max_line_bytes:,}-byte cap",
                          "only import dlc exports")
        try:
            line = json.loads(raw)
        except ValueError:
            line = BAD
        found.append(line if isinstance(line, dict) else BAD)
    return found
