"""Helpers shared by the rules: block analysis, inlining, the spatial-loop schedule."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tvm import s_tir

    from dlc.schedules.cpu import CpuParams

# A parallel loop hands half the work, and the data, to a thread on another core. Where
# cores are far apart (a VM whose two vCPUs sit on different dies at times) that costs
# ~5-10 us per kernel: PP-OCR cls ran 0.32 or 0.71 ms by placement, 0.38 ms with its small
# kernels serial (bench/README.md). Parallel only above ~20 us of one core's work:
PARALLEL_MIN_ELEMENTS = 131072  # elementwise, copies and plain reductions: elements touched
PARALLEL_MIN_FLOPS = 4 * 2**20  # register-tiled contractions (conv, matmul)


def block_infos(sch: s_tir.Schedule):
    """dlight's normal form: one SBlockInfo per block, its iters S/R with their loops; or None."""
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    return normalize_prim_func(sch)


def root_blocks(sch: s_tir.Schedule) -> list:
    from tvm.s_tir.dlight.analysis import get_root_block

    return list(sch.get_child_blocks(get_root_block(sch)))


def is_spatial(sch: s_tir.Schedule, block) -> bool:
    """Every block iter is data parallel (no reduction)."""
    from tvm.tirx import IterVar

    return all(iv.iter_type == IterVar.DataPar for iv in sch.get(block).iter_vars)


def has_if_then_else(sch: s_tir.Schedule, block) -> bool:
    import tvm

    return bool(tvm.get_global_func("s_tir.schedule.HasIfThenElse")(sch.get(block)))


def inline_injective(sch: s_tir.Schedule, *, keep=()) -> None:
    """Inline every spatial block that can be, except `keep` and padding (an if_then_else
    producer would put a branch into the consumer's inner loop); outputs stay.

    One analysis per sweep, not per inline: inlining a block leaves the others' handles
    and kinds valid, and a QDQ model's requantisation chains are 20-40 blocks long (the
    analysis after every inline took ~0.3 s per kernel there)."""
    keep_names = {sch.get(b).name_hint for b in keep}
    changed = True
    while changed:
        changed = False
        for info in block_infos(sch) or []:
            name = sch.get(info.block_rv).name_hint
            if name in keep_names or not info.is_injective():
                continue
            consumers = sch.get_consumers(info.block_rv)
            producer_of_reduction = not all(is_spatial(sch, c) for c in consumers)
            if producer_of_reduction and has_if_then_else(sch, info.block_rv):
                continue
            for primitive in (sch.compute_inline, sch.reverse_compute_inline):
                try:
                    primitive(info.block_rv)
                except Exception:  # not inlinable this way: that is data, not an error
                    continue
                changed = True
                break


def extents(sch: s_tir.Schedule, loops) -> list[int]:
    return [int(sch.get(loop).extent) for loop in loops]


def largest_divisor(n: int, cap: int, *, multiple_of: int = 1) -> int:
    """The largest divisor of n that is <= cap and a multiple of `multiple_of`; 0 if none."""
    for d in range(min(n, cap), 0, -1):
        if n % d == 0 and d % multiple_of == 0:
            return d
    return 0


def vector_chunk(extent: int, cpu: CpuParams) -> int:
    """How many innermost elements to vectorise: whole registers when the extent allows,
    else whole half registers (YOLOv8's 2100 anchors: 28, where scalar code took 10x longer)."""
    for multiple in (cpu.lanes, max(2, cpu.lanes // 2)):
        chunk = largest_divisor(extent, 4 * cpu.lanes, multiple_of=multiple)
        if chunk:
            return chunk
    return extent if 2 <= extent <= 4 * cpu.lanes else 1


def schedule_spatial(sch: s_tir.Schedule, block, cpu: CpuParams) -> None:
    """Elementwise/injective block: fuse all loops, vectorise the innermost chunk, run the
    rest in parallel when there is enough work."""
    loops = sch.get_loops(block)
    if not loops:
        return
    sizes = extents(sch, loops)
    chunk = vector_chunk(sizes[-1], cpu)
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    outer = fused
    if chunk > 1:
        outer, inner = sch.split(fused, [None, chunk])
        sch.vectorize(inner)
    if cpu.cores > 1 and math.prod(sizes) >= PARALLEL_MIN_ELEMENTS:
        sch.parallel(outer)


def schedule_reduction_loops(sch: s_tir.Schedule, block, cpu: CpuParams) -> None:
    """A block with reduction iters that no better rule took: parallel over its leading
    spatial loops. When the innermost spatial axis is also innermost in every operand
    (a reduction over rows or channels-last pixels: softmax over a non-last axis, global
    pooling in NHWC), the reduction moves outside it and that axis is vectorised;
    otherwise the reduction stays serial innermost (a chain without reassociation)."""
    from tvm.tirx import IterVar

    stmt = sch.get(block)
    loops = sch.get_loops(block)
    kinds = ["S" if iv.iter_type == IterVar.DataPar else "R" for iv in stmt.iter_vars]
    if len(kinds) != len(loops):
        return
    spatial = [i for i, k in enumerate(kinds) if k == "S"]
    reduction = [i for i, k in enumerate(kinds) if k == "R"]
    if not spatial:
        return
    sizes = extents(sch, loops)
    work = math.prod(sizes)
    last = spatial[-1]
    chunk = vector_chunk(sizes[last], cpu) if innermost_in_reads(stmt, stmt.iter_vars[last].var) else 1
    vectorized = chunk > 1 and bool(reduction)
    if vectorized:
        outer_loops = [loops[i] for i in spatial[:-1]]
        last_o, last_i = sch.split(loops[last], [None, chunk])
        sch.reorder(*outer_loops, last_o, *[loops[i] for i in reduction], last_i)
        lead = outer_loops + [last_o]
        sch.vectorize(last_i)
    else:
        order = [loops[i] for i in spatial + reduction]
        if spatial + reduction != list(range(len(loops))):
            sch.reorder(*order)
        lead = [loops[i] for i in spatial]
    fused = sch.fuse(*lead) if len(lead) > 1 else lead[0]
    if cpu.cores > 1 and work >= PARALLEL_MIN_ELEMENTS and int(sch.get(fused).extent) > 1:
        sch.parallel(fused)
    if vectorized:  # last: parallel/vectorize need the block to still be a complete reduction
        sch.decompose_reduction(block, loops[reduction[0]])


def innermost_in_reads(stmt, var) -> bool:
    """`var` appears in no read of `stmt` except in the innermost index: it vectorises."""
    from tvm.s_tir.dlight.analysis import collect_vars_used_in_prim_expr

    for read in stmt.reads:
        for dim, rng in enumerate(read.region):
            if var in collect_vars_used_in_prim_expr(rng.min) and dim != len(read.region) - 1:
                return False
    return True
