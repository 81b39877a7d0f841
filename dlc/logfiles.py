"""Append-only JSON-lines files that several processes write at once.

An append is one O_APPEND write of a complete line and takes no lock, so concurrent tuners
never interleave and a kill loses at most the line being written. A read-modify-write (merge,
prune, repair, import) holds the folder's advisory lock (`locked`) and replaces the file by
an atomic rename (`rewrite_lines`); a line that an appender wrote to the old file meanwhile
is carried over, by the rewriter or by the appender itself, exactly once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from dlc.errors import LogStoreError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


def append_line(path: Path, data: dict[str, Any]) -> None:
    """Append one complete JSON line with a single write: atomic against other appenders."""
    payload = (json.dumps(data, separators=(",", ":")) + "\n").encode()
    try:
        _append(path, payload)
    except OSError as err:
        raise LogStoreError(
            f"cannot append to tuning log '{path}': {err.strerror}",
            hint="check the --logs directory is writable and the disk is not full",
        ) from err


def _append(path: Path, payload: bytes) -> None:
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            payload = b"\n" + payload  # never glue a record onto a torn line
        written = os.write(fd, payload)
        replaced = not _same_file(fd, path)
    finally:
        os.close(fd)
    if written != len(payload):
        raise LogStoreError(f"short write to tuning log '{path}'", hint="check free disk space")
    if replaced:
        # A rewrite renamed a new file over this one while we wrote. The rewriter copies what
        # reached the old file until it has renamed; a later line is appended again here, under
        # the lock (so after the rewriter's copy) and only if the copy missed it.
        with locked(path.parent):
            current = path.read_bytes() if path.exists() else b""  # removed by hand: start it again
            if payload.strip(b"\n") not in set(current.split(b"\n")):
                _append(path, payload)


def _same_file(fd: int, path: Path) -> bool:
    opened = os.fstat(fd)
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """The folder's advisory lock, held by whatever reads, changes and replaces its files."""
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise LogStoreError(f"cannot lock tuning-log folder '{folder}': {err.strerror}",
                            hint="the folder must be writable to change it") from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("waiting for another dlc that is rewriting %s", folder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock, as a killed holder's exit does


def rewrite_lines(path: Path, transform: Callable[[list[bytes]], list[bytes]]) -> None:
    """Replace `path` atomically by `transform(its lines)`; hold the folder's lock. Appends take
    no lock, so a line appended after the read lands in the old file: it is copied over after
    the rename (and an appender that finds its file replaced after that appends again)."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        data = _read_all(fd, 0)
        for _ in range(20):  # a last line without its newline may be an append still being copied
            if not data or data.endswith(b"\n"):
                break
            time.sleep(0.05)
            newer = _read_all(fd, 0)
            if newer == data:
                break  # torn for good: a crash's remnant, a line like any other here
            data = newer
        # Empty lines carry nothing (see read_jsonl): dropped here.
        lines = [line for line in data.split(b"\n") if line.strip()]
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(b"".join(line + b"\n" for line in transform(lines)))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        tail = _read_all(fd, len(data))
        if tail.strip(b"\n"):
            _append(path, tail.lstrip(b"\n"))
    except OSError as err:
        raise LogStoreError(f"cannot rewrite tuning log '{path}': {err.strerror}",
                            hint="check the folder is writable and the disk is not full") from err
    finally:
        os.close(fd)


def _read_all(fd: int, offset: int) -> bytes:
    chunks = []
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


BAD = object()  # read_jsonl's value for a line that is not a JSON object


def read_jsonl(path: Path) -> Iterator[tuple[int, bytes, Any]]:
    """(line number, raw line with its newline if it has one, the JSON object or BAD) for each
    line of `path`."""
    if not path.exists():
        return
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                # An appender that saw another's line half-written takes it for a torn one
                # and starts its own with a newline: an empty line, harmless, skipped.
                continue
            try:
                data = json.loads(raw)
            except ValueError:  # a torn last line after a crash, or a hand edit
                data = BAD
            yield number, raw, data if isinstance(data, dict) else BAD


def identity(data: Any) -> bytes:
    """A digest of a line's content, however its keys are ordered or spaced."""
    return hashlib.blake2b(json.dumps(data, sort_keys=True, separators=(",", ":")).encode(), digest_size=16).digest()
