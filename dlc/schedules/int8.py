"""The VNNI int8 convolution of `dlc.int8` (uint8 NHWC data x packed int8 weights).

    parallel  for rows, width tiles, output-channel pairs      (fused)
                pad the tile's input window with the zero point
                for rh, rw, input-channel quads
                  unrolled width x 2 blocks of 16 channels:  vpdpbusd (16 int32 += 16x4 u8*s8)
                epilogue (correction, bias, requantisation, activation) on the tile

The reduction's innermost (16 output channels x 4 input channels) is tensorised with one
`vpdpbusd` per input pixel and quad; a width tile of up to 16 pixels times two channel
blocks keeps 32 zmm accumulators (a 80x80x32 -> 32 3x3 conv on a Zen 5, 2 cores: 16 x 2
740 GOP/s, 8 x 2 677, 4 x 2 586, 4 x 1 327).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dlc.schedules import common

if TYPE_CHECKING:
    from tvm import s_tir

    from dlc.schedules.cpu import CpuParams

INTRIN = "dlc_dot_16x4_u8s8_vnni"
WIDTH_TILE = 16
CHANNEL_BLOCKS = 2


def _register_intrinsic() -> None:
    """TVM 0.27's own VNNI intrinsic passes vpdpbusd int32 vectors; the LLVM it links takes
    <64 x i8> operands and rejects the call, so dlc registers the same description with
    byte-vector operands."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    try:
        TensorIntrin.get(INTRIN)
        return
    except Exception:  # not registered yet in this process
        pass

    # Importing tvm.s_tir.tensor_intrin for TVM's description would take ~30 s (its
    # package imports every target's intrinsics), so the description is written here too.
    @T.prim_func(s_tir=True)
    def vnni_desc(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def vnni_impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            pixel = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                T.reinterpret(T.broadcast(pixel, 16), dtype="int8x64"),
                B.vload([0, 0], dtype="int8x64"),
                dtype="int32x16")

    TensorIntrin.register(INTRIN, vnni_desc, vnni_impl)


def apply(sch: s_tir.Schedule, cpu: CpuParams) -> bool:
    from dlc.int8 import KERNEL_NAME, VNNI_BLOCK

    infos = common.block_infos(sch) or []
    main = next((b for b in infos if sch.get(b.block_rv).name_hint.startswith(KERNEL_NAME)
                 and b.is_reduction()), None)
    if main is None:
        return False
    _register_intrinsic()
    block = main.block_rv
    # The data's producer (the zero-point padding, or the ops fused in front of a 1x1 conv)
    # stays a block computed per tile: inlined into the sums it would hide the byte loads
    # vpdpbusd is matched against.
    staged = sch.get_producers(block)
    common.inline_injective(sch, keep=[block, *staged])
    # Inlining rebuilds the loop nest: the sums' loops are looked up again.
    main = next(b for b in common.block_infos(sch) if sch.get(b.block_rv).name_hint.startswith(KERNEL_NAME))
    block = main.block_rv
    # Unit loops (batch 1, a 1x1 window) are gone after fusion: take the loops by role.
    spatial = [it.loop_rv for it in main.iters if it.kind == "S"]
    reduce = [it.loop_rv for it in main.iters if it.kind == "R"]
    if len(spatial) < 2 or not reduce:
        return False
    *outer, w, oc = spatial
    *window, rd = reduce
    width = int(sch.get(w).extent)
    blocks = int(sch.get(oc).extent) // VNNI_BLOCK
    pair = CHANNEL_BLOCKS if blocks % CHANNEL_BLOCKS == 0 else 1
    tile = common.largest_divisor(width, WIDTH_TILE * CHANNEL_BLOCKS // pair)
    oc_o, oc_i = sch.split(oc, [None, VNNI_BLOCK])
    oc_oo, oc_oi = sch.split(oc_o, [None, pair])
    w_o, w_i = sch.split(w, [None, tile])
    sch.reorder(*outer, w_o, oc_oo, *window, w_i, oc_oi, oc_i, rd)
    fused = sch.fuse(*outer, w_o, oc_oo)
    if cpu.cores > 1 and int(sch.get(fused).extent) > 1:
        sch.parallel(fused)
    for producer in staged:
        sch.compute_at(producer, fused, preserve_unit_loops=True)
    consumers = sch.get_consumers(block)
    if len(consumers) == 1:
        sch.reverse_compute_at(consumers[0], fused, preserve_unit_loops=True)
        _vectorize_channels(sch, consumers[0])
    sch.decompose_reduction(block, window[0] if window else w_i)
    sch.unroll(w_i)
    sch.unroll(oc_oi)
    sch.tensorize(oc_i, INTRIN)
    for other in common.root_blocks(sch):
        loops = sch.get_loops(other)
        if loops and not sch.get(loops[0]).same_as(sch.get(fused)):
            common.schedule_spatial(sch, other, cpu)
    return True


def apply_softmax(sch: s_tir.Schedule, cpu: CpuParams) -> bool:
    """dlc.int8's uint8 softmax: rows in parallel, each row's sum serial from first to last
    (ONNX Runtime's fp32 order; the reduction rules would split it into vector lanes)."""
    from dlc.int8_ort import SOFTMAX_SUM_BLOCK

    names = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    if not any(name.startswith(SOFTMAX_SUM_BLOCK) for name in names):
        return False
    common.inline_injective(sch)  # the row max and sum are reductions: they stay
    for info in common.block_infos(sch) or []:
        spatial = {sch.get(it.loop_rv) for it in info.iters if it.kind == "S" and it.loop_rv is not None}
        # The outermost loop over spatial iterators only: a reduction loop must stay serial.
        first = next((loop for loop in sch.get_loops(info.block_rv) if sch.get(loop) in spatial), None)
        if first is not None and cpu.cores > 1:
            sch.parallel(first)
    return True


def _vectorize_channels(sch: s_tir.Schedule, block) -> None:
    """The epilogue's innermost (output channel) loop in vectors of 16."""
    loops = sch.get_loops(block)
    extent = int(sch.get(loops[-1]).extent)
    if extent % 16 == 0 and extent > 16:
        _, inner = sch.split(loops[-1], [None, 16])
        sch.vectorize(inner)
    elif 1 < extent <= 64:
        sch.vectorize(loops[-1])
