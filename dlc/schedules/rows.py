"""Reductions along each row's innermost axis (softmax, layer norm, RMS norm of transformers).

One thread takes a row from start to finish while it is in L1: its max or mean, the
exponentials or centred values (vectorised), their sum, the normalised output (vectorised),
instead of one pass over the whole tensor per block with the exponentials computed twice.
Each reduction keeps one vector of partial results (rfactor) and sums those at the end: a
scalar chain waits ~4 cycles per element on the previous add (MiniLM's softmax and layer
norm ran at ~8 GFLOP/s that way); `apply_scalar` keeps the chains, split and unrolled by
vector-width steps, for a reduction rfactor cannot take. After TVM's
dlight.cpu.Reduction, with a check it lacks: every reduction must run along the innermost,
contiguous axis (YOLOv8's softmax over axis 1 of 1x16x4x2100 is left to `reduction`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from dlc.schedules import common

if TYPE_CHECKING:
    from tvm import s_tir

    from dlc.schedules.cpu import CpuParams


def apply(sch: s_tir.Schedule, cpu: CpuParams) -> bool:
    return _apply(sch, cpu, vector_partials=True)


def apply_scalar(sch: s_tir.Schedule, cpu: CpuParams) -> bool:
    return _apply(sch, cpu, vector_partials=False)


def _apply(sch: s_tir.Schedule, cpu: CpuParams, *, vector_partials: bool) -> bool:
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    infos = normalize_prim_func(sch)
    if infos is None or len(infos) < 2 or not infos[-1].is_injective():
        return False
    reductions = [b for b in infos if not b.is_injective()]
    if not reductions:
        return False
    lead = None
    for info in infos:
        kinds = info.dom_kind()
        if not kinds or kinds[0] != "S":
            return False
        spatial = len(kinds) - len(kinds.lstrip("S"))
        lead = spatial if lead is None else min(lead, spatial)
    for info in reductions:
        stmt = sch.get(info.block_rv)
        reduce_vars = [it.var for it in info.iters if it.kind == "R"]
        if info.dom_kind()[-1] != "R" or not all(common.innermost_in_reads(stmt, v) for v in reduce_vars):
            return False
    last_stmt = sch.get(infos[-1].block_rv)
    if len(last_stmt.writes) != 1 or len(last_stmt.writes[0].region) < lead + 1:
        return False

    partials = []
    if vector_partials:
        partials = [_vector_partials(sch, info.block_rv, cpu) for info in reductions]
        if not any(partials):
            return False  # apply_scalar gives the same schedule

    loops = sch.get_loops(infos[-1].block_rv)
    sizes = common.extents(sch, loops)
    rows = sch.fuse(*loops[:lead]) if lead > 1 else loops[0]
    if cpu.cores > 1 and sizes[0] > 1 and math.prod(sizes) >= common.PARALLEL_MIN_ELEMENTS:
        sch.parallel(rows)
    _vectorize_inner(sch, infos[-1].block_rv, cpu)
    blocks = common.root_blocks(sch)  # the partial-result blocks rfactor added, in order
    for block in reversed(blocks[:-1]):
        sch.compute_at(block, rows, preserve_unit_loops=True)
    for info in infos[:-1]:
        if info.is_injective():
            _vectorize_inner(sch, info.block_rv, cpu)
        elif not vector_partials:
            _unroll_inner(sch, info.block_rv, cpu)
    for partial in filter(None, partials):
        # compute_at made the loops in block-iter order (partial result, reduction, and
        # unit loops): the partial results go innermost to be one vector.
        loops = sch.get_loops(partial)
        inside = loops[[sch.get(loop).same_as(sch.get(rows)) for loop in loops].index(True) + 1:]
        lane, reduction = [loop for loop in inside if int(sch.get(loop).extent) > 1]
        sch.reorder(reduction, lane)
        sch.vectorize(lane)  # before the init is split off: it copies the annotation
        sch.decompose_reduction(partial, reduction)
    return True


def _vector_partials(sch: s_tir.Schedule, block, cpu: CpuParams):
    """rfactor the innermost reduction loop by `lanes`: the block that accumulates one
    vector of partial results, or None where the extent does not split into vectors."""
    loops = sch.get_loops(block)
    extent = int(sch.get(loops[-1]).extent)
    if extent < 2 * cpu.lanes or extent % cpu.lanes:
        return None
    _, inner = sch.split(loops[-1], [None, cpu.lanes])
    # The partial results innermost in their buffer: vector loads and stores.
    return sch.rfactor(inner, factor_axis=len(sch.get(block).writes[0].region))


def _vectorize_inner(sch: s_tir.Schedule, block, cpu: CpuParams) -> None:
    loops = sch.get_loops(block)
    if len(loops) <= 1:
        return
    chunk = common.vector_chunk(int(sch.get(loops[-1]).extent), cpu)
    if chunk > 1:
        _, inner = sch.split(loops[-1], [None, chunk])
        sch.vectorize(inner)


def _unroll_inner(sch: s_tir.Schedule, block, cpu: CpuParams) -> None:
    loops = sch.get_loops(block)
    extent = int(sch.get(loops[-1]).extent)
    if len(loops) <= 1 or extent <= cpu.lanes or extent % cpu.lanes:
        return
    _, inner = sch.split(loops[-1], [None, cpu.lanes])
    sch.annotate(inner, ann_key="pragma_auto_unroll_max_step", ann_val=cpu.lanes)
    sch.annotate(inner, ann_key="pragma_unroll_explicit", ann_val=1)
