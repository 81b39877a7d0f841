"""Graph passes: simplify, legalise to TIR, fuse into kernels.

The sequence after graph simplification (dispatch, LegalizeOps, AnnotateTIROpPattern,
FoldConstant, FuseOps, FuseTIR) is the one MetaSchedule's `compile_relax` runs before it
looks kernels up in a tuning database, so tasks extracted from `OptimizedModel.mod` have
the same workload keys as the kernels `build` later compiles.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dlc.errors import BuildError, InputError

if TYPE_CHECKING:
    import tvm

    from dlc.frontend import ImportedModel
    from dlc.target import TargetSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimizedModel:
    """A Relax module whose operators are all fused TIR kernels, ready to schedule and build."""

    source: ImportedModel
    mod: tvm.IRModule
    kernels: int


def _graph_passes():
    from tvm import relax

    return [
        relax.transform.DecomposeOpsForInference(),  # batch norm etc. to elementwise ops
        relax.transform.CanonicalizeBindings(),
        relax.transform.FoldConstant(),
        relax.transform.DeadCodeElimination(["main"]),
    ]


def _fusion_passes(target: tvm.target.Target):
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    return [
        *cpu.library_dispatch_passes(target),
        *cpu.legalize_passes(target),  # LegalizeOps ... FuseOps, FuseTIR
        relax.transform.DeadCodeElimination(["main"]),
    ]


def count_kernels(mod: tvm.IRModule) -> int:
    from tvm.tirx import PrimFunc

    return sum(isinstance(func, PrimFunc) for func in mod.functions.values())


def _dump(mod: tvm.IRModule, dump_dir: Path | None, name: str) -> None:
    if dump_dir is None:
        return
    try:
        dump_dir.mkdir(parents=True, exist_ok=True)
        (dump_dir / name).write_text(mod.script(show_meta=False))
    except OSError as err:
        raise InputError(
            f"cannot write IR to '{dump_dir}': {err.strerror}", hint="pick a writable --dump-ir DIR"
        ) from err


def optimize(
    imported: ImportedModel, target: TargetSpec, *, dump_ir: Path | None = None
) -> OptimizedModel:
    """Simplify the imported graph and fuse it into TIR kernels for `target`."""
    import tvm

    tvm_target = target.to_tvm()
    mod = imported.mod
    _dump(mod, dump_ir, "01-imported.py")
    try:
        with tvm_target, tvm.transform.PassContext(opt_level=3):
            mod = tvm.transform.Sequential(_graph_passes())(mod)
            mod = tvm.transform.Sequential(_fusion_passes(tvm_target))(mod)
    except Exception as err:
        raise BuildError(
            f"graph passes failed: {str(err).strip().splitlines()[-1]}",
            hint="run with --debug and --dump-ir DIR to see the IR they failed on",
        ) from err
    _dump(mod, dump_ir, "02-fused.py")
    kernels = count_kernels(mod)
    log.info("fused into %d kernels", kernels)
    return OptimizedModel(source=imported, mod=mod, kernels=kernels)
