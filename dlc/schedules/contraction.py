"""Conv2d (plain, depthwise, grouped), dense, matmul, batch-matmul and pooling.

All are one reduction block whose output's innermost axis can be vectorised: every operand
either does not depend on that axis (a broadcast, like the input pixel of an NHWC conv) or
has it as its own innermost axis (the HWIO weight, the input channel of a depthwise conv).
They share one register-blocked micro-kernel:

    parallel  for outer spatial, vec_o, reg_o        (fused)
                init acc[reg_i, vec_i] (vectorised)
                for reductions (rh, rw, ci / k)
                  unrolled reg_i, vectorised vec_i:  acc += a * b   (FMA)
                epilogue (bias, activation, residual add) on acc, vectorised, stored once

`vec` is the output's innermost axis (output channel, matmul N), tiled to a few vector
registers; `reg` is the next output axis with extent > 1 (output width, matmul M), tiled
so that reg_i * vec_i / lanes accumulators fit the register file.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from dlc.schedules import common

if TYPE_CHECKING:
    from tvm import s_tir

    from dlc.schedules.cpu import CpuParams


SHORT_REDUCTION = 64  # multiply-adds per output


def _vars_in(expr) -> set:
    from tvm.s_tir.dlight.analysis import collect_vars_used_in_prim_expr

    return collect_vars_used_in_prim_expr(expr)


def _axis_var(region_min, iter_vars: dict):
    """The single block iter var an output index is, or None."""
    used = [v for v in _vars_in(region_min) if v in iter_vars]
    return used[0] if len(used) == 1 else None


def _tiles(vec_extent: int, reg_extent: int, cpu: CpuParams, *, matmul: bool = False) -> tuple[int, int]:
    lanes = cpu.lanes
    if reg_extent <= 1:
        # GEMV-like: no second axis to block, so hold more vector accumulators instead.
        cap = lanes * min(8, cpu.accumulators)
        vec = common.largest_divisor(vec_extent, cap, multiple_of=lanes)
        if not vec:
            # e.g. 50 outputs: one 50-wide vector (LLVM splits it into registers and a tail),
            # not 50 scalar chains.
            vec = vec_extent if vec_extent <= cap else 0
        return (vec or common.vector_chunk(vec_extent, cpu)), 1
    wide = cpu.widest_lanes
    if matmul and wide > lanes and vec_extent % wide == 0:
        # Whole zmm registers: 2 x 16 lanes by 8 rows measured best on a Zen 5 (MiniLM's
        # 128x384x1536 matmul: 243 GFLOP/s on one core, against 179 for 32 x 4 counted in
        # ymm units and 216-226 for 16 x 16 or 64 x 4); 16 accumulators of the 32 zmm.
        # Convolutions measured 5-9% slower so (PP-OCR det, rec, cls): they keep ymm units.
        for k in (2, 4, 1):
            if vec_extent % (k * wide) == 0:
                return k * wide, common.largest_divisor(reg_extent, max(1, cpu.registers // 2 // k))
    vec = 0
    for k in ((4, 2, 1) if cpu.registers >= 32 else (2, 1)):
        if vec_extent % (k * lanes) == 0:
            vec = k * lanes
            break
    if not vec:
        vec = vec_extent if vec_extent <= 2 * lanes else common.largest_divisor(vec_extent, 2 * lanes)
    vectors = -(-vec // lanes)
    reg = common.largest_divisor(reg_extent, max(1, cpu.accumulators // vectors))
    return vec, reg


def apply(sch: s_tir.Schedule, cpu: CpuParams) -> bool:
    infos = common.block_infos(sch)
    if not infos:
        return False
    reductions = [b for b in infos if b.is_reduction()]
    if len(reductions) != 1:
        return False
    main = reductions[0]
    common.inline_injective(sch, keep=[main.block_rv])
    infos = common.block_infos(sch)
    main = next(b for b in infos if b.is_reduction())
    block = main.block_rv
    stmt = sch.get(block)
    if len(stmt.writes) != 1 or "S" not in main.dom_kind() or "R" not in main.dom_kind():
        return False

    by_var = {it.var: it for it in main.iters}
    out_region = stmt.writes[0].region
    vec_var = _axis_var(out_region[-1].min, by_var)
    if vec_var is None or by_var[vec_var].kind != "S" or not common.innermost_in_reads(stmt, vec_var):
        return False
    reg_var = None
    for rng in reversed(out_region[:-1]):
        var = _axis_var(rng.min, by_var)
        if var is not None and by_var[var].kind == "S" and int(by_var[var].dom) > 1:
            reg_var = var
            break

    vec_extent = int(by_var[vec_var].dom)
    reg_extent = int(by_var[reg_var].dom) if reg_var is not None else 1
    matmul = sum(it.kind == "R" for it in main.iters) == 1  # no conv window
    vec_tile, reg_tile = _tiles(vec_extent, reg_extent, cpu, matmul=matmul)
    depthwise = _reads_vec_axis_innermost(stmt, vec_var)
    if depthwise and vec_tile <= cpu.lanes and reg_var is not None:
        # One vector of channels: every row loads its own input vector, and past ~12 rows
        # that ran slower (PP-OCR cls's 5x5 depthwise over 200 and 88 channels: 24 rows
        # 24.4 / 15.8 us, 12 rows 17.3 / 11.6 us on one core).
        reg_tile = common.largest_divisor(reg_extent, cpu.accumulators // 2)

    vec_o, vec_i = _tile(sch, by_var[vec_var].loop_rv, vec_extent, vec_tile, max(4 * cpu.lanes, vec_tile))
    if reg_var is not None:
        reg_o, reg_i = _tile(sch, by_var[reg_var].loop_rv, reg_extent, reg_tile, max(cpu.accumulators, reg_tile))
    outer = [it.loop_rv for it in main.iters if it.kind == "S" and it.var not in (vec_var, reg_var)]
    reduce = [it.loop_rv for it in main.iters if it.kind == "R"]
    tile_outer = outer + [vec_o] + ([reg_o] if reg_var is not None else [])
    inner = ([reg_i] if reg_var is not None else []) + [vec_i]
    sch.reorder(*tile_outer, *reduce, *inner)
    fused = sch.fuse(*tile_outer) if len(tile_outer) > 1 else tile_outer[0]
    flops = 2 * math.prod(int(it.dom) for it in main.iters)  # one multiply-add per iteration
    if cpu.cores > 1 and flops >= common.PARALLEL_MIN_FLOPS and int(sch.get(fused).extent) > 1:
        sch.parallel(fused)

    # The accumulator tile lives in registers: the epilogue (or a write-back) consumes it
    # right after the reduction, inside the same parallel iteration.
    consumers = sch.get_consumers(block)
    epilogue = None
    reduction = math.prod(int(it.dom) for it in main.iters if it.kind == "R")
    sliced = (len(consumers) == 1 and reduction < SHORT_REDUCTION
              and int(sch.get(consumers[0]).writes[0].source.shape[-1]) != vec_extent)
    # Padded features sliced off (pipeline._pad_output_features): inside the tile loop the
    # epilogue's last tile is predicated, and the epilogue is then left unvectorised in every
    # tile (_vectorize_innermost). Behind a short reduction that costs more than the sums
    # (PP-OCR cls's 1x1 conv 16 -> 104: 25.5 us, 8.1 us as a pass of its own over the output,
    # scheduled with the root blocks below); behind a long one (rec's K=120 head, det's
    # 3x3x96) the extra pass costs more (394 -> 475 us, 6.8 -> 7.3 ms): those keep it here.
    if not sliced:
        if len(consumers) == 1 and common.is_spatial(sch, consumers[0]):
            try:
                sch.reverse_compute_at(consumers[0], fused, preserve_unit_loops=True)
                epilogue = consumers[0]
            except Exception:
                epilogue = None
        if epilogue is None:
            epilogue = sch.cache_write(block, 0, "global")
            sch.reverse_compute_at(epilogue, fused, preserve_unit_loops=True)
        _vectorize_innermost(sch, epilogue)

    # Vectorise while the block is still a complete reduction; decompose_reduction then
    # copies the annotated inner loops into the init block.
    if reg_var is not None and reg_tile > 1:
        sch.unroll(reg_i)
    if vec_tile > 1:
        width = _vector_width(vec_tile, cpu.lanes, cpu.widest_lanes)
        if width < vec_tile:
            # LLVM legalises a 24-wide vector with shuffles through the stack (7x slower on
            # PP-OCRv4 det's 24-channel 3x3 conv) and a 32-wide one as badly in a matmul
            # (rec's head, 20x): unrolled vectors of at most the widest register instead.
            vec_k, vec_i = sch.split(vec_i, [None, width])
            sch.unroll(vec_k)
        sch.vectorize(vec_i)
    sch.decompose_reduction(block, reduce[0])

    if depthwise or reduction < SHORT_REDUCTION:
        # Depthwise convs and stems (3 input channels): each input element feeds only a few
        # FMAs, so a padded copy of the whole input (written, then read back) costs as much
        # as the sums; pad each tile's window where it is used instead (one core: PP-OCRv4
        # det's stride-2 depthwise 3x3 over 320x320x32 741 -> 652 us, its stem 952 -> 560
        # us; PP-OCR cls's stem 15.1 -> 12.1 us).
        for producer in sch.get_producers(block):
            if common.has_if_then_else(sch, producer):
                sch.compute_at(producer, fused, preserve_unit_loops=True)
                _vectorize_innermost(sch, producer)
    for other in common.root_blocks(sch):  # padding and producers that could not be inlined
        loops = sch.get_loops(other)
        if loops and not sch.get(loops[0]).same_as(sch.get(fused)):
            common.schedule_spatial(sch, other, cpu)
    return True


def _vector_width(vec_tile: int, lanes: int, widest: int) -> int:
    """Lanes per vector op: the largest power-of-two multiple of `lanes` that divides the
    tile, at most `widest` (a zmm's 16 where dlc tiles in 8-lane ymm units)."""
    if vec_tile % lanes:
        return vec_tile
    width = lanes
    while vec_tile % (2 * width) == 0 and 2 * width <= widest:
        width *= 2
    return width


def _reads_vec_axis_innermost(stmt, vec_var) -> bool:
    """Some input other than the weights is indexed by the output channel innermost: a
    depthwise conv's data (a plain conv's data is indexed by the reduction channel)."""
    data_reads = [read for read in stmt.reads if len(read.region) == 4]
    return any(vec_var in _vars_in(read.region[-1].min) and any(
        len(_vars_in(rng.min)) > 1 for rng in read.region[1:3]) for read in data_reads)


def _tile(sch: s_tir.Schedule, loop, extent: int, inner: int, max_inner: int):
    """Split `loop` into (extent / inner, inner) through a sampled perfect tile whose decision
    is this rule's pick: the same loops as a plain split, but recorded in the trace as a
    decision that MetaSchedule's mutators and cost model can move (dlc.tuning)."""
    if extent % inner:
        return sch.split(loop, [None, inner])
    factors = sch.sample_perfect_tile(loop, n=2, max_innermost_factor=max_inner,
                                      decision=[extent // inner, inner])
    return sch.split(loop, factors)


def _vectorize_innermost(sch: s_tir.Schedule, block) -> None:
    loops = sch.get_loops(block)
    from tvm.tirx import ForKind

    if not loops or not 1 < int(sch.get(loops[-1]).extent) <= 64 or sch.get(loops[-1]).kind != ForKind.SERIAL:
        return
    if int(sch.get(block).writes[0].source.shape[-1]) % int(sch.get(loops[-1]).extent):
        # The last tile of a sliced output (rec's 6625 of 6640 classes) is predicated: TVM
        # would scalarise the vector loop; left serial, LLVM vectorises it with masked stores.
        return
    sch.vectorize(loops[-1])
