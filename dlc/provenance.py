"""Who added tuning records, where, when, from which model, on which CPU, with which versions."""

from __future__ import annotations

import getpass
import os
import platform
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from dlc import __version__, usable_cpus


@lru_cache(maxsize=1)
def tvm_version() -> str:
    """The installed TVM's version, read from its package metadata (no `import tvm`)."""
    from importlib import metadata

    try:
        return metadata.version("apache-tvm")
    except metadata.PackageNotFoundError:
        import sys

        return str(getattr(sys.modules.get("tvm"), "__version__", "unknown"))


def versions() -> dict[str, str]:
    return {"dlc": __version__, "tvm": tvm_version()}


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Provenance:
    """Who added records to a store, where, when, from which model, on which CPU."""

    id: str
    kind: str  # "tune", "import" or "merge"
    time: str
    host: str
    user: str
    cpu_model: str
    cores: int
    dlc: str
    tvm: str
    model_name: str | None = None
    model_sha256: str | None = None
    source: str | None = None  # import: the archive; merge: the source folders

    @classmethod
    def collect(cls, kind: str, *, model_name: str | None = None, model_sha256: str | None = None,
                source: str | None = None) -> Provenance:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (containers)
            user = str(os.getuid())
        return cls(uuid.uuid4().hex[:16], kind, now_utc(), socket.gethostname(), user, cpu_model_name(),
                   usable_cpus(), __version__, tvm_version(), model_name, model_sha256, source)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "time": self.time, "host": self.host, "user": self.user,
            "cpu": {"model": self.cpu_model, "cores": self.cores},
            "model": {"name": self.model_name, "sha256": self.model_sha256} if self.model_sha256 else None,
            "source": self.source, "dlc": self.dlc, "tvm": self.tvm,
        }


def cpu_model_name() -> str:
    """The CPU's marketing name as the OS reports it (x86 "model name"; ARM has none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("model name", "hardware", "cpu model") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"
