"""Compile an optimised module to a shared library and write its manifest beside it.

The manifest is `<library>.json` (e.g. `model.so.json`): everything `dlc run` and
`dlc verify` need to drive the library without the ONNX file, plus provenance.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlc import __version__
from dlc.errors import BuildError, DlcError, InputError
from dlc.fileio import deferred_interrupt, write_json_atomic

if TYPE_CHECKING:
    from dlc.pipeline import OptimizedModel
    from dlc.target import TargetSpec

log = logging.getLogger(__name__)

MANIFEST_FORMAT_VERSION = 1


def manifest_path(library: Path) -> Path:
    return library.with_name(library.name + ".json")


@dataclass(frozen=True)
class BuiltModule:
    library: Path
    manifest_path: Path
    manifest: dict[str, Any]
    kernels: int
    seconds: float
    tuning: TuningApplied | None = None


def _lowering_pipeline(tvm_target):
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    passes = cpu.dataflow_lower_passes(tvm_target) + cpu.finalize_passes(tvm_target)

    @tvm.transform.module_pass(opt_level=0, name="DlcLowerToVM")
    def lower(mod, _ctx):
        return tvm.transform.Sequential(passes)(mod)

    return lower


@dataclass(frozen=True)
class SourceShare:
    """The kernels of a build whose tuned record came from tuning one model."""

    model: str  # "name (sha256 prefix)", or "unknown models" for lines without provenance
    kernels: int
    flops_share: float


@dataclass(frozen=True)
class TuningApplied:
    """What `--tuning-logs` contributed to a build."""

    logs: Path
    target_key: str
    tasks_with_records: int  # kernels that got a tuned schedule
    tasks_recorded: int  # kernels with any successful record (slower ones keep the default)
    tasks_total: int
    flops_share: float  # of the model's FLOPs, in kernels that got a tuned schedule
    by_source: tuple[SourceShare, ...] = ()  # the same, per model the records were tuned on
    unusable_records: int = 0  # skipped: they do not load or replay with this TVM
    unusable_reason: str | None = None
    compatible_unused: int = 0  # kernels a compatible target's records could cover (--accept-compatible)


def _apply_records(optimized: OptimizedModel, target: TargetSpec, mod, logs: Path, *, accept_compatible: bool = False):
    """Replace every kernel that has a tuned record (faster than its default) by that record;
    with `accept_compatible`, a kernel with no record for `target` takes the best record of a
    compatible target's store (another CPU model of the same vector level), if it has one."""
    from tvm.relax.transform import MetaScheduleApplyDatabase

    from dlc.logstore import compatible_stores, open_store
    from dlc.schedule import is_scheduled
    from dlc.measure import load_cpu_tensor_intrinsics
    from dlc.tuning import extract_tasks

    if not Path(logs).is_dir():
        raise InputError(f"tuning-log directory '{logs}' not found", hint="tune first with `dlc tune`, or fix the path")
    store = open_store(logs, target, create=False)
    load_cpu_tensor_intrinsics()
    tasks = extract_tasks(optimized, target)
    # Only each kernel's fastest usable record: one that does not load or replay is skipped
    # (and counted) there, instead of failing the whole build inside TVM.
    database = store.to_database(only_improvements=True, per_workload=1)
    # A kernel this target's own records cover is theirs, even when they kept the default:
    # they were measured here, a compatible target's were not.
    covered = {t.workload_hash for t in tasks if store.best_seconds(t.workload_hash) is not None}
    origin = {h: (store, trial) for h, trial in store.applied.items()}
    unused: set[str] = set()
    for other in compatible_stores(logs, target):
        uncovered = {t.workload_hash for t in tasks} - covered  # what earlier stores left
        if not accept_compatible:
            unused |= {h for h in uncovered if other.best_seconds(h) is not None}
            continue
        other.to_database(only_improvements=True, per_workload=1, database=database, exclude=covered)
        origin.update({h: (other, trial) for h, trial in other.applied.items() if h in uncovered})
        covered |= {h for h in uncovered if other.best_seconds(h) is not None}
    with database:
        mod = MetaScheduleApplyDatabase()(mod)
    names = {t.name for t in tasks}
    tuned = {gvar.name_hint for gvar, func in mod.functions.items() if gvar.name_hint in names and is_scheduled(func)}
    total_flops = sum(t.weight * t.flops for t in tasks) or 1.0
    share = sum(t.weight * t.flops for t in tasks if t.name in tuned) / total_flops
    sources: dict[str, list[float]] = {}
    for task in tasks:
        if task.name in tuned and task.workload_hash in origin:
            source, trial = origin[task.workload_hash]
            model = source.model_of(trial)
            name = f"{model[0]} ({model[1][:12]})" if model else "unknown models"
            if source is not store:
                name += f" on compatible target {source.target_key}"
            counts = sources.setdefault(name, [0, 0.0])
            counts[0] += 1
            counts[1] += task.weight * task.flops / total_flops
    by_source = tuple(SourceShare(name, int(n), f) for name, (n, f) in sorted(sources.items(), key=lambda kv: -kv[1][1]))
    return mod, TuningApplied(Path(logs), target.key, len(tuned), len(covered), len(tasks), share, by_source,
                              store.unusable_records, store.unusable_reason(), len(unused))


def _compile(optimized: OptimizedModel, target: TargetSpec, tuning_logs: Path | None = None, *,
             accept_compatible: bool = False):
    import tvm

    from dlc.schedule import apply_default_schedules

    tvm_target = target.to_tvm()
    mod = optimized.mod
    applied = None
    try:
        with tvm_target, tvm.transform.PassContext(opt_level=3):
            # Tuned records go first (they mark their kernels scheduled), then defaults.
            if tuning_logs is not None:
                mod, applied = _apply_records(optimized, target, mod, tuning_logs, accept_compatible=accept_compatible)
            mod = apply_default_schedules(mod, target).mod
            executable = tvm.compile(mod, target=tvm_target, relax_pipeline=_lowering_pipeline(tvm_target))
            return executable, applied
    except DlcError:
        raise
    except Exception as err:
        text = str(err).strip()
        if "CodeGenVM cannot emit this Relax operator" in text:
            lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
            after = lines.index("Offending call:") + 1 if "Offending call:" in lines else len(lines) - 1
            op = lines[min(after, len(lines) - 1)]
            raise BuildError(
                f"an operator was left without a kernel: {op}",
                hint="its operands have no static shape, usually because a shape is computed "
                "from data at run time; fix every input with --input-shape",
            ) from err
        raise BuildError(
            f"TVM failed to compile the model: {text.splitlines()[-1] if text else type(err).__name__}",
            hint="run with --debug for TVM's traceback and --dump-ir DIR for the IR",
        ) from err


def check_output(library: Path) -> None:
    """Fail before a long build when the library cannot be written where it is asked for."""
    library = Path(library)
    folder = library.parent
    if library.is_dir():
        raise InputError(f"output '{library}' is a directory", hint="give -o a file name, e.g. -o model.so")
    if not folder.is_dir():
        raise InputError(f"output directory '{folder}' does not exist",
                         hint=f"create it first (mkdir -p '{folder}') or pick another -o PATH")
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise InputError(f"cannot write to '{folder}': {err.strerror}", hint="pick a writable -o PATH") from err


# Debian's cross g++ per target architecture; `zig` is the PyPI ziglang alternative.
_DEBIAN_CROSS = {"aarch64": "g++-aarch64-linux-gnu", "armv7": "g++-arm-linux-gnueabihf"}
_ZIG_TRIPLES = {"aarch64": "aarch64-linux-gnu", "armv7": "arm-linux-gnueabihf"}
ZIG = "zig"


def _install_hint(target: TargetSpec, program: str) -> str:
    package = _DEBIAN_CROSS.get(target.arch) if program.endswith("g++") else None
    debian = f"apt-get install {package}" if package else f"install {program!r}"
    return f"on Debian: {debian}; or pip install ziglang and pass --cross-compiler zig"


def linker_command(target: TargetSpec) -> list[str] | None:
    """The command that links a library for `target` (None: the host's compiler).

    `target.cross_compiler` is a command line ("aarch64-linux-gnu-g++", "clang++ --target=...")
    or `zig`, which links with the PyPI `ziglang` package for the target's triple."""
    import shlex
    from importlib.util import find_spec

    if not target.cross_compiler:
        return None
    words = shlex.split(target.cross_compiler)
    if words == [ZIG]:
        if target.arch not in _ZIG_TRIPLES:
            raise BuildError(f"dlc knows no zig triple for architecture {target.arch!r}",
                             hint="pass --cross-compiler with a cross g++ for it")
        if find_spec("ziglang") is None:
            raise BuildError("--cross-compiler zig needs the ziglang package, which is not installed",
                             hint="pip install ziglang==0.17.1 (or use Debian's cross g++: "
                             f"apt-get install {_DEBIAN_CROSS.get(target.arch, 'g++-<triple>')})")
        return [sys.executable, "-m", "ziglang", "c++", "-target", _ZIG_TRIPLES[target.arch]]
    if not words or shutil.which(words[0]) is None:
        raise BuildError(
            f"cross compiler {target.cross_compiler!r} for target '{target.name}' is not installed",
            hint=_install_hint(target, words[0] if words else ""),
        )
    return words


def _cross_link(command: list[str], output: str, objects, options=None) -> None:
    """export_library's fcompile: link `objects` into the shared library `output`."""
    import subprocess

    objects = [objects] if isinstance(objects, str) else list(objects)
    line = [*command, "-shared", "-fPIC", "-o", output, *objects, *(options or [])]
    done = subprocess.run(line, capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"the cross linker failed: {(done.stderr or done.stdout).strip()[-500:]}",
                         hint="command: " + " ".join(line))


def linker(target: TargetSpec):
    """An `export_library` fcompile for `target` (None: the host's compiler); picklable, so
    MetaSchedule's builder workers can use it."""
    import functools

    command = linker_command(target)
    return None if command is None else functools.partial(_cross_link, command)


def _link(executable, staged: Path, target: TargetSpec) -> None:
    try:
        executable.export_library(str(staged), fcompile=linker(target))
    except DlcError:
        raise
    except Exception as err:
        raise BuildError(
            f"linking '{staged.name}' failed: {str(err).strip().splitlines()[-1]}",
            hint="run with --debug for the linker's command line",
        ) from err


def _manifest(
    optimized: OptimizedModel, target: TargetSpec, library: Path, seconds: float, applied: TuningApplied | None
):
    import onnx
    import onnxruntime
    import tvm

    imported = optimized.source
    loaded = imported.source
    return {
        "format": "dlc-manifest",
        "format_version": MANIFEST_FORMAT_VERSION,
        "library": library.name,
        "inputs": [spec.to_json() for spec in imported.inputs],
        "outputs": [spec.to_json() for spec in imported.outputs],
        "target": {
            "name": target.name,
            "string": str(target),
            "config": target.config,
            "key": target.key,
            "cross_compiler": target.cross_compiler,
            # What a machine must have to load the library: checked before loading it.
            "arch": target.arch,
            "isa_features": target.isa_features(),
        },
        "model": {
            "file": loaded.path.name,
            "sha256": loaded.sha256,
            "opset": loaded.opset,
            "nodes": loaded.nodes_before_folding,
            "nodes_after_folding": loaded.nodes_after_folding,
        },
        "build": {
            "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(seconds, 2),
            "kernels": optimized.kernels,
            "layout": optimized.layout,
        },
        "versions": {
            "dlc": __version__,
            "tvm": tvm.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "tuning": {
            "records_applied": applied.tasks_with_records if applied else 0,
            "tasks": applied.tasks_total if applied else None,
            "flops_share": round(applied.flops_share, 4) if applied else None,
            "logs": str(applied.logs) if applied else None,
            "target_key": applied.target_key if applied else None,
            "by_source": [{"model": s.model, "kernels": s.kernels, "flops_share": round(s.flops_share, 4)}
                          for s in applied.by_source] if applied else [],
            "unusable_records": applied.unusable_records if applied else 0,
        },
        # Per kernel: the ONNX nodes it computes and its FLOPs per call, for `dlc profile`.
        "kernels": _kernel_table(optimized),
    }


def _kernel_table(optimized: OptimizedModel) -> dict[str, dict[str, Any]]:
    import tvm
    from tvm.s_tir.analysis import estimate_tir_flops
    from tvm.tirx import PrimFunc

    table = {}
    for gvar, func in optimized.mod.functions.items():
        if isinstance(func, PrimFunc):
            try:
                flops = float(estimate_tir_flops(tvm.IRModule({"main": func})))
            except Exception:  # an aid for the profile only (e.g. a kernel with data-dependent loops)
                flops = None
            table[gvar.name_hint] = {"nodes": list(optimized.kernel_nodes.get(gvar.name_hint, ())), "flops": flops}
    return table


def _write_asm(executable, path: Path) -> None:
    """Write the assembly LLVM generated for the kernels (every LLVM module in the library)."""
    pending, texts = [executable.mod], []
    while pending:
        module = pending.pop()
        pending.extend(module.imports)
        if module.kind == "llvm":
            texts.append(module.inspect_source("asm"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(texts))
    except OSError as err:
        raise InputError(f"cannot write assembly to '{path}': {err.strerror}",
                         hint="pick a writable --dump-asm FILE") from err


def build(
    optimized: OptimizedModel,
    target: TargetSpec,
    *,
    output: Path | str,
    tuning_logs: Path | str | None = None,
    dump_asm: Path | None = None,
    accept_compatible: bool = False,
) -> BuiltModule:
    """Compile for `target`, export `output` (a .so) and write its manifest beside it.

    `dump_asm`: also write the generated assembly there (which vector instructions the
    target got), before linking, so it is written even when no cross linker is installed.
    `accept_compatible`: also apply records of compatible targets (`_apply_records`).
    """
    library = Path(output)
    check_output(library)
    linker_command(target)  # a missing cross linker fails now, not after the compile
    started = time.perf_counter()
    executable, applied = _compile(optimized, target, Path(tuning_logs) if tuning_logs else None,
                                   accept_compatible=accept_compatible)
    if dump_asm is not None:
        _write_asm(executable, Path(dump_asm))
    manifest_file = manifest_path(library)
    # Library and manifest are written under temporary names and renamed together at the
    # end: a crash or Ctrl-C never leaves a half-written library or one without its manifest.
    staging = Path(tempfile.mkdtemp(prefix=".dlc-build-", dir=library.parent))
    try:
        _link(executable, staging / library.name, target)
        seconds = time.perf_counter() - started
        manifest = _manifest(optimized, target, library, seconds, applied)
        write_json_atomic(staging / manifest_file.name, manifest)
        with deferred_interrupt():
            os.replace(staging / library.name, library)
            os.replace(staging / manifest_file.name, manifest_file)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("built %s in %.1f s", library, seconds)
    return BuiltModule(library, manifest_file, manifest, optimized.kernels, seconds, applied)
