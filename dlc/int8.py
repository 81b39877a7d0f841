"""int8 (QDQ) models as integer kernels: the graph passes that take a QuantizeLinear /
DequantizeLinear model off the fp32 path.

An int8 model from `dlc quantize` (onnxruntime's QDQ format) is an fp32 graph with every
tensor passed through DequantizeLinear(QuantizeLinear(x)). Run as written, each Conv sums
dequantized fp32 values, in an order that differs from ONNX Runtime's int32 sums: a sum
that lands near a rounding boundary of the next QuantizeLinear flips one int8 step, and the
flips compound through the network. So, as ONNX Runtime's QLinearConv does:

  quantize(conv(dequantize(x_q), dequantize(W_q)) + dequantize(B_q))
      -> requantize(sum (x_q - x_zp) * W_q + B_q)      int32, exact in any order

with the requantisation in ONNX Runtime's arithmetic (fp32 `acc * (x_scale * w_scale /
y_scale)`, round half to even, plus the zero point, saturated).

`integer_qdq()` (first, before constant folding turns the int8 weights into fp32) rewrites
those convolutions (and Gemm / MatMul with int8 weights, ORT's QGemm) to an int32 conv2d /
matmul on (x_q - x_zp) as int16 with int16 weights, and the groups ONNX Runtime runs as int8
kernels of its own into their arithmetic: QLinearAdd, QLinearMul, QLinearAveragePool and
QLinearSoftmax each round their own way (a table, fused multiply-adds, a serial fp32 sum),
so agreeing with them means computing what they compute. Data movement between a Q/DQ pair
of one scale (reshape, transpose, slice, split, max pool, concat) runs on the int8 tensor
itself, as ONNX Runtime drops those pairs too. The remaining QuantizeLinear /
DequantizeLinear become the elementwise ops they are: those have layout rules, so the
channels-last conversion passes through them. The result is bit-exact with ONNX Runtime's
optimised run of the same int8 model (nudenet, PP-OCR cls / det / rec; a test checks).

`vnni_convs(target)` (after the layout passes) turns each channels-last one into a kernel
on the uint8 input itself with weights packed for `vpdpbusd` (AVX-512 VNNI: 64 u8 x s8
multiply-adds into 16 int32 sums per instruction), padded with the zero point;
`dlc.schedules.int8` schedules it. Without VNNI the int16 conv2d stays: exact, slower.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import tvm

    from dlc.target import TargetSpec

log = logging.getLogger(__name__)

VNNI_BLOCK = 16  # output channels per vpdpbusd (one zmm of int32)
VNNI_DEPTH = 4  # input channels each int32 lane sums
KERNEL_NAME = "conv2d_nhwc_u8s8"  # dlc.schedules.int8 recognises the kernel's block by it
PAD_BLOCK = "pad_zero_point"


def _constant(expr, bindings):
    """The numpy value of `expr`, following variable bindings to a constant, or None."""
    from dlc.pipeline import _constant_array

    expr = _follow(expr, bindings)
    return _constant_array(expr)


def _follow(expr, bindings):
    from tvm import relax

    while isinstance(expr, relax.Var) and bindings(expr) is not None:
        expr = bindings(expr)
    return expr


def _call_of(expr, op_name: str, bindings):
    expr = _follow(expr, bindings)
    return expr if getattr(getattr(expr, "op", None), "name", None) == op_name else None


def _scalar(value) -> float | int | None:
    return None if value is None or value.size != 1 else value.reshape(()).item()


def _saturate(builder, value, dtype: str):
    """An fp32 tensor of whole numbers clipped to `dtype`'s range and cast to it."""
    from tvm import relax

    op = relax.op
    info = np.iinfo(dtype)
    value = builder.emit(value)
    value = builder.emit(op.minimum(op.maximum(value, relax.const(float(info.min), "float32")),
                                    relax.const(float(info.max), "float32")))
    return op.astype(value, dtype)


def _requantize(builder, acc, multiplier: np.ndarray, zero_point: int, dtype: str):
    """clip(round_half_even(float(acc) * multiplier) + zero_point) as `dtype`."""
    from tvm import relax

    op = relax.op
    value = builder.emit(op.multiply(op.astype(acc, "float32"), relax.const(multiplier, "float32")))
    return _saturate(builder, op.add(op.round(value), relax.const(float(zero_point), "float32")), dtype)


def _per_axis(builder, call, value):
    """`value` (a scale or zero point of `call`, a QuantizeLinear / DequantizeLinear) shaped to
    broadcast along the call's axis when it is 1-D per channel."""
    from tvm import relax

    rank = len(call.args[0].ty.shape)
    axis = int(call.attrs.axis) % max(rank, 1)
    value = builder.emit(value)
    if len(value.ty.shape) == 1 and rank > 1 and int(value.ty.shape[0]) > 1:
        return relax.op.reshape(value, [-1] + [1] * (rank - 1 - axis))
    return value


def _dequantize(call, builder):
    """(float(q) - zero_point) * scale: exact like ONNX Runtime's (the subtraction is of
    small integers), as ops with layout rules."""
    from tvm import relax

    op = relax.op
    q, scale, zero_point = call.args
    dtype = str(call.attrs.out_dtype)
    value = builder.emit(op.subtract(op.astype(q, dtype), _per_axis(builder, call, op.astype(zero_point, dtype))))
    return op.multiply(value, _per_axis(builder, call, scale))


def _quantize(call, builder):
    """clip(round_half_even(x / scale) + zero_point): ONNX Runtime divides (MLAS), it does not
    multiply by the reciprocal."""
    from tvm import relax

    op = relax.op
    x, scale, zero_point = call.args
    value = builder.emit(op.round(op.divide(x, _per_axis(builder, call, scale))))
    value = op.add(value, _per_axis(builder, call, op.astype(zero_point, "float32")))
    return _saturate(builder, value, str(call.attrs.out_dtype))


FP32_EXACT = 2**24  # integers below this are exact in fp32, and so are sums that stay below it


def exact_in_fp32(weight: np.ndarray, bias: np.ndarray) -> bool:
    """A conv of 8-bit activations (|x - zp| <= 255) with these int8 weights and int32 bias
    has every partial sum below 2**24 in magnitude."""
    per_output = np.abs(weight.astype(np.int64)).reshape(weight.shape[0], -1).sum(axis=1) * 255
    return bool(np.all(per_output + np.abs(bias.astype(np.int64)) < FP32_EXACT))


def _integer_conv(call, builder, bindings, vnni: bool):
    """quantize(conv2d(dq(x_q), dq(W)) [+ reshape(dq(B))]) as a requantised int32 conv2d, or
    None when the pattern or its constants do not hold."""
    from tvm import relax

    op = relax.op
    _, y_scale, y_zp = call.args
    y_scale, y_zp = _scalar(_constant(y_scale, bindings)), _scalar(_constant(y_zp, bindings))
    out_dtype = str(call.attrs.out_dtype)
    if y_scale is None or y_zp is None or out_dtype not in ("uint8", "int8"):
        return None
    value = _follow(call.args[0], bindings)
    bias = None
    if getattr(getattr(value, "op", None), "name", None) == "relax.add":
        conv = _call_of(value.args[0], "relax.nn.conv2d", bindings)
        reshape = _call_of(value.args[1], "relax.reshape", bindings)
        bias_dq = _call_of(reshape.args[0], "relax.dequantize", bindings) if reshape is not None else None
        if conv is None or bias_dq is None:
            return None
        bias = [_constant(a, bindings) for a in bias_dq.args]
        if any(b is None for b in bias) or bias[0].dtype != np.int32 or np.any(bias[2]):
            return None
    else:
        conv = _call_of(value, "relax.nn.conv2d", bindings)
    if conv is None or str(conv.attrs.data_layout) != "NCHW" or str(conv.attrs.kernel_layout) != "OIHW":
        return None
    x_dq = _call_of(conv.args[0], "relax.dequantize", bindings)
    w_dq = _call_of(conv.args[1], "relax.dequantize", bindings)
    if x_dq is None or w_dq is None:
        return None
    x_q = x_dq.args[0]
    x_scale, x_zp = (_scalar(_constant(a, bindings)) for a in x_dq.args[1:])
    weight, w_scale, w_zp = (_constant(a, bindings) for a in w_dq.args)
    if (x_scale is None or x_zp is None or weight is None or w_scale is None or w_zp is None
            or weight.dtype != np.int8 or np.any(w_zp) or str(x_q.ty.dtype) not in ("uint8", "int8")
            or int(w_dq.attrs.axis) != 0):
        return None
    channels = weight.shape[0]
    w_scale = np.broadcast_to(w_scale.astype(np.float32).reshape(-1), (channels,))
    bias_values = np.zeros(channels, np.int32)
    if bias is not None:
        b_q, b_scale, _ = bias
        expected = np.float32(x_scale) * w_scale
        if b_q.shape != (channels,) or not np.allclose(np.broadcast_to(b_scale, (channels,)), expected,
                                                        rtol=1e-6, atol=0):
            return None  # a bias on another scale than x*w: ONNX Runtime would not fuse it either
        bias_values = b_q
    attrs = conv.attrs
    conv_attrs = dict(strides=attrs.strides, padding=attrs.padding, dilation=attrs.dilation, groups=attrs.groups,
                      data_layout="NCHW", kernel_layout="OIHW")
    bias_const = bias_values.reshape(1, -1, 1, 1).astype(np.int32)
    if exact_in_fp32(weight, bias_values) and (int(attrs.groups) > 1 or not vnni):
        # Every partial sum is an integer below 2**24, so fp32 (and its fused multiply-adds,
        # in any order) computes it exactly: the fp32 conv kernels at fp32 speed.
        shifted = builder.emit(op.subtract(op.astype(x_q, "float32"), relax.const(float(x_zp), "float32")))
        acc = builder.emit(op.nn.conv2d(shifted, relax.const(weight.astype(np.float32)), out_dtype="float32",
                                        **conv_attrs))
        acc = builder.emit(op.add(acc, relax.const(bias_const.astype(np.float32))))
    else:
        shifted = builder.emit(op.subtract(op.astype(x_q, "int16"), relax.const(np.int16(x_zp))))
        acc = builder.emit(op.nn.conv2d(shifted, relax.const(weight.astype(np.int16)), out_dtype="int32",
                                        **conv_attrs))
        acc = builder.emit(op.add(acc, relax.const(bias_const)))
    from dlc import int8_ort

    multiplier = int8_ort.ort_multiplier(x_scale, w_scale, y_scale).reshape(1, -1, 1, 1)
    return _requantize(builder, acc, multiplier, int(y_zp), out_dtype)


def _numel(shape) -> int:
    return int(np.prod([int(d) for d in shape]))


def _integer_matmul(call, builder, bindings):
    """quantize(matmul(dq(a), dq(W)) [+ dq(B)]) with a constant int8 W (a Gemm or MatMul with
    weights: ORT's QGemm / QLinearMatMul) as an exact int32 matmul requantised like the
    convs, or None."""
    from tvm import relax

    op = relax.op
    y_scale, y_zp = (_scalar(_constant(v, bindings)) for v in call.args[1:])
    if y_scale is None or y_zp is None or str(call.attrs.out_dtype) not in ("uint8", "int8"):
        return None
    value = _follow(call.args[0], bindings)
    bias = None
    if getattr(getattr(value, "op", None), "name", None) == "relax.add":
        bias_dq = _call_of(value.args[1], "relax.dequantize", bindings)
        value = _follow(value.args[0], bindings)
        if bias_dq is None:
            return None
        bias = [_constant(v, bindings) for v in bias_dq.args]
        if any(b is None for b in bias) or bias[0].dtype != np.int32 or np.any(bias[2]):
            return None
    if getattr(getattr(value, "op", None), "name", None) != "relax.matmul":
        return None
    a_dq = _call_of(value.args[0], "relax.dequantize", bindings)
    transposed = _call_of(value.args[1], "relax.permute_dims", bindings)
    w_dq = _call_of(transposed.args[0] if transposed is not None else value.args[1], "relax.dequantize", bindings)
    if a_dq is None or w_dq is None or str(a_dq.args[0].ty.dtype) not in ("uint8", "int8"):
        return None
    a_scale, a_zp = (_scalar(_constant(v, bindings)) for v in a_dq.args[1:])
    weight, w_scale, w_zp = (_constant(v, bindings) for v in w_dq.args)
    if (a_scale is None or a_zp is None or weight is None or w_scale is None or w_zp is None
            or weight.dtype != np.int8 or weight.ndim != 2 or np.any(w_zp)):
        return None
    axis = int(w_dq.attrs.axis) % 2
    if transposed is not None:  # Gemm's transB: [N, K] with per-row scales -> [K, N]
        weight, axis = weight.T, 1 - axis
    columns = weight.shape[1]
    if w_scale.size > 1 and axis != 1:
        return None  # scales per input feature: not a per-output requantisation
    w_scale = np.broadcast_to(w_scale.astype(np.float32).reshape(-1), (columns,))
    bias_values = np.zeros(columns, np.int32)
    if bias is not None:
        b_q, b_scale, _ = bias
        if b_q.shape != (columns,) or not np.allclose(np.broadcast_to(b_scale, (columns,)),
                                                      np.float32(a_scale) * w_scale, rtol=1e-6, atol=0):
            return None
        bias_values = b_q
    shifted = builder.emit(op.subtract(op.astype(a_dq.args[0], "int16"), relax.const(np.int16(a_zp))))
    acc = builder.emit(op.matmul(shifted, relax.const(np.ascontiguousarray(weight).astype(np.int16)),
                                 out_dtype="int32"))
    acc = builder.emit(op.add(acc, relax.const(bias_values.astype(np.int32))))
    from dlc import int8_ort

    return _requantize(builder, acc, int8_ort.ort_multiplier(a_scale, w_scale, y_scale), int(y_zp),
                       str(call.attrs.out_dtype))


# Ops that only move or select values: between a DequantizeLinear and a QuantizeLinear of the
# same scale and zero point they act on the int8 tensor itself, exactly (ONNX Runtime drops
# such Q/DQ pairs too). MaxPool is one: dequantisation is monotonic, and the uint8 padding
# (0) never wins a window of values >= 0; so is a nearest-neighbour Resize.
_MOVES = ("relax.reshape", "relax.permute_dims", "relax.strided_slice", "relax.nn.max_pool2d",
          "relax.squeeze", "relax.expand_dims", "relax.flatten")


def _same_parameters(dq, call, bindings) -> bool:
    """`dq` dequantizes with the scale and zero point `call` quantizes with (per tensor)."""
    if str(dq.args[0].ty.dtype) != str(call.attrs.out_dtype):
        return False
    ours = [_scalar(_constant(v, bindings)) for v in dq.args[1:]]
    theirs = [_scalar(_constant(v, bindings)) for v in call.args[1:]]
    return None not in ours + theirs and np.float32(ours[0]) == np.float32(theirs[0]) and ours[1] == theirs[1]


def _integer_move(call, builder, bindings):
    """quantize(move(dequantize(q))) with one scale and zero point as move(q); a Concat of
    dequantized tensors as a Concat of the int8 tensors, each requantised to the output's
    parameters where its own differ; or None."""
    from tvm import relax

    value = _follow(call.args[0], bindings)
    if isinstance(value, relax.TupleGetItem):  # one output of a Split
        split = _follow(value.tuple_value, bindings)
        if getattr(getattr(split, "op", None), "name", None) != "relax.split":
            return None
        dq = _call_of(split.args[0], "relax.dequantize", bindings)
        if dq is None or not _same_parameters(dq, call, bindings):
            return None
        parts = builder.emit(relax.Call(split.op, [dq.args[0]], split.attrs))
        return relax.TupleGetItem(parts, value.index)
    name = getattr(getattr(value, "op", None), "name", None)
    if name in _MOVES or (name == "relax.image.resize2d" and str(value.attrs.method) == "nearest_neighbor"):
        dq = _call_of(value.args[0], "relax.dequantize", bindings)
        if dq is None or not _same_parameters(dq, call, bindings):
            return None
        return relax.Call(value.op, [dq.args[0], *value.args[1:]], value.attrs)
    if name != "relax.concat":
        return None
    fields = _follow(value.args[0], bindings)
    if not isinstance(fields, relax.Tuple):
        return None
    scale, zero_point = call.args[1:]
    parts = []
    for field in fields.fields:
        dq = _call_of(field, "relax.dequantize", bindings)
        if dq is None or str(dq.args[0].ty.dtype) != str(call.attrs.out_dtype):
            return None
        if _same_parameters(dq, call, bindings):
            parts.append(dq.args[0])
        else:  # Q(DQ(q)) per input: the same sums as after the concat, on each part
            parts.append(builder.emit(relax.op.quantize(builder.emit(relax.Call(dq.op, dq.args, dq.attrs)), scale,
                                                        zero_point, axis=int(call.attrs.axis),
                                                        out_dtype=str(call.attrs.out_dtype))))
    return relax.op.concat(parts, axis=int(value.attrs.axis))


def integer_qdq(target: TargetSpec | None = None):
    """The QDQ rewrite described in the module docstring (a no-op on models without QDQ).
    `target` decides which convs stay int16 (the VNNI kernel takes them) and which run
    exactly in fp32."""
    import tvm
    from tvm import relax

    from dlc import int8_ort
    from dlc.pipeline import _rewrite_calls

    vnni = target is not None and has_vnni(target)
    groups = (lambda call, builder, bindings: _integer_conv(call, builder, bindings, vnni), _integer_matmul,
              int8_ort.integer_softmax, int8_ort.integer_add, int8_ort.integer_mul, int8_ort.integer_avg_pool,
              _integer_move)

    def integer_group(call, builder, bindings):
        return next((r for r in (rewrite(call, builder, bindings) for rewrite in groups) if r is not None), None)

    # Two passes: the groups are matched on the dequantize calls the second rewrites.
    return tvm.transform.Sequential([
        _rewrite_calls("relax.quantize", integer_group, "DlcIntegerGroups", bindings=True),
        relax.transform.DeadCodeElimination(["main"]),
        _rewrite_calls("relax.quantize", _quantize, "DlcElementwiseQuantize"),
        _rewrite_calls("relax.dequantize", _dequantize, "DlcElementwiseDequantize"),
    ], name="DlcIntegerQDQ")


def _fma_te(x, *addend, factor: float, constant: float | None = None):
    """fp32 fma(float(x), factor, addend): one rounding, as ONNX Runtime's AVX2 QLinearAdd.
    A scalar addend is an immediate (`constant`), not a buffer. TVM annotates these kernels
    as broadcasts, and FuseOps keeps them out of the conv epilogues before them (PP-OCR cls
    int8: 76 -> 100 kernels), which is still faster than the float64 form."""
    from tvm import te, tirx

    def at(tensor, index):
        rank = len(tensor.shape)
        return tensor[tuple(0 if int(d) == 1 else i for d, i in zip(tensor.shape, index[len(index) - rank:]))]

    def value(*i):
        c = tirx.const(constant, "float32") if constant is not None else at(addend[0], i)
        # llvm.fma rounds once on every target (llvm.fmuladd, what a plain fma may lower to,
        # need not).
        return tirx.call_llvm_pure_intrin("float32", "llvm.fma", at(x, i).astype("float32"),
                                          tirx.const(factor, "float32"), c)

    return te.compute(x.shape, value, name="fma_uint8")


def fused_multiply_adds():
    """The QLinearAdd steps int8_ort writes as float64 (`fp32(float64(x) * r + y)`, one
    rounding like an fma; plain ops, so the layout passes move them) as fp32 fma kernels,
    after the layout passes: float64 vectors are half as wide, and a QDQ model has one
    such step per residual or HardSwish in every epilogue."""
    from tvm import relax

    from dlc.pipeline import _constant_array, _rewrite_calls

    def as_fma(call, builder, bindings):
        if str(call.attrs.dtype) != "float32":
            return None
        total = _call_of(call.args[0], "relax.add", bindings)
        if total is None or str(total.ty.dtype) != "float64":
            return None
        product = _call_of(total.args[0], "relax.multiply", bindings)
        widened = _call_of(product.args[0], "relax.astype", bindings) if product is not None else None
        factor = _constant_array(product.args[1]) if product is not None else None
        if widened is None or factor is None or factor.size != 1 or "int" not in str(widened.args[0].ty.dtype):
            return None
        addend = _follow(total.args[1], bindings)
        value = _constant_array(addend)
        if value is not None:
            narrowed = value.astype(np.float32)
            if not np.array_equal(narrowed.astype(value.dtype), value):
                return None  # not an fp32 addend: the float64 sum stays
            if narrowed.size == 1:
                return builder.call_te(_fma_te, widened.args[0], factor=float(factor.reshape(())),
                                       constant=float(narrowed.reshape(())), primfunc_name_hint="fma_uint8")
            addend = relax.const(narrowed, "float32")
        else:
            narrow = _call_of(total.args[1], "relax.astype", bindings)
            if narrow is None or str(narrow.args[0].ty.dtype) != "float32":
                return None
            addend = narrow.args[0]
        return builder.call_te(_fma_te, widened.args[0], addend, factor=float(factor.reshape(())),
                               primfunc_name_hint="fma_uint8")

    return [_rewrite_calls("relax.astype", as_fma, "DlcFusedMultiplyAdds", bindings=True),
            relax.transform.DeadCodeElimination(["main"])]


def has_vnni(target: TargetSpec) -> bool:
    from tvm.target import codegen

    if target.kind != "llvm" or target.arch != "x86_64":
        return False
    features = {str(f) for f in codegen.llvm_get_cpu_features(target.to_tvm())}
    return {"avx512vnni", "avx512bw", "avx512f"} <= features


def pack_weights(weight_hwio: np.ndarray) -> np.ndarray:
    """HWIO int8 weights as [OC/16, KH, KW, IC/4, 16, 4]: the 16x4 block one vpdpbusd reads
    per input-channel quad, zero-padded to whole blocks."""
    kh, kw, ic, oc = weight_hwio.shape
    icp = -(-ic // VNNI_DEPTH) * VNNI_DEPTH
    ocp = -(-oc // VNNI_BLOCK) * VNNI_BLOCK
    padded = np.zeros((kh, kw, icp, ocp), np.int8)
    padded[:, :, :ic, :oc] = weight_hwio
    blocked = padded.reshape(kh, kw, icp // VNNI_DEPTH, VNNI_DEPTH, ocp // VNNI_BLOCK, VNNI_BLOCK)
    return np.ascontiguousarray(blocked.transpose(4, 0, 1, 2, 5, 3))


def conv2d_nhwc_u8s8(data, packed, correction, *, channels: int, strides, padding, dilation, zero_point: int):
    """TE: int32 sums of uint8 NHWC data (padded with its zero point) times packed int8
    weights, plus `correction` (-zero_point * sum of each output channel's weights)."""
    from tvm import te, tirx

    n, h, w, c = (int(d) for d in data.shape)
    blocks, kh, kw, quads = (int(d) for d in packed.shape[:4])
    sh, sw = strides
    dh, dw = dilation
    top, left, bottom, right = padding
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1

    def pad(b, y, x, k):
        inside = tirx.all(y >= top, y < h + top, x >= left, x < w + left, k < c)
        return tirx.if_then_else(inside, data[b, y - top, x - left, tirx.min(k, c - 1)],
                                 tirx.const(zero_point, data.dtype))

    if any(padding) or c != quads * VNNI_DEPTH:
        padded = te.compute((n, h + top + bottom, w + left + right, quads * VNNI_DEPTH), pad, name=PAD_BLOCK)
    else:  # a 1x1 conv on whole channel quads reads its input as it is (no copy per tile)
        padded = data
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    rq, rd = te.reduce_axis((0, quads), "rq"), te.reduce_axis((0, VNNI_DEPTH), "rd")
    sums = te.compute(
        (n, oh, ow, blocks * VNNI_BLOCK),
        lambda b, y, x, o: te.sum(
            padded[b, y * sh + rh * dh, x * sw + rw * dw, rq * VNNI_DEPTH + rd].astype("int32")
            * packed[o // VNNI_BLOCK, rh, rw, rq, o % VNNI_BLOCK, rd].astype("int32"),
            axis=[rh, rw, rq, rd]),
        name=KERNEL_NAME)
    out = te.compute((n, oh, ow, channels), lambda b, y, x, o: sums[b, y, x, o] + correction[o],
                     name="conv2d_nhwc_u8s8_output")
    return out


def vnni_convs(target: TargetSpec):
    """Channels-last int16 conv2d on (x_q - x_zp) of a uint8 x_q, from integer_qdq, as the
    VNNI kernel on x_q (no pass on targets without AVX-512 VNNI)."""
    from tvm import relax

    from dlc.pipeline import _rewrite_calls

    def as_vnni(call, builder, bindings):
        attrs = call.attrs
        if (str(attrs.data_layout) != "NHWC" or str(attrs.kernel_layout) != "HWIO" or int(attrs.groups) != 1
                or str(attrs.out_dtype) != "int32" or str(attrs.out_layout) != "NHWC"):
            return None
        weight = _constant(call.args[1], bindings)
        data = call.args[0]
        permute = _call_of(data, "relax.permute_dims", bindings)  # NCHW model input made NHWC
        shift = _call_of(permute.args[0] if permute is not None else data, "relax.subtract", bindings)
        cast = _call_of(shift.args[0], "relax.astype", bindings) if shift is not None else None
        zero_point = _constant(shift.args[1], bindings) if shift is not None else None
        if weight is None or cast is None or zero_point is None or str(cast.args[0].ty.dtype) != "uint8":
            return None
        zx = int(zero_point.reshape(()))
        correction = (-zx * weight.astype(np.int64).sum(axis=(0, 1, 2))).astype(np.int32)
        data = cast.args[0]
        if permute is not None:
            data = builder.emit(relax.op.permute_dims(data, permute.attrs.axes))
        return builder.call_te(
            conv2d_nhwc_u8s8, data, relax.const(pack_weights(weight.astype(np.int8))),
            relax.const(correction), channels=weight.shape[-1], strides=[int(s) for s in attrs.strides],
            padding=[int(p) for p in attrs.padding], dilation=[int(d) for d in attrs.dilation],
            zero_point=zx, primfunc_name_hint="conv2d_u8s8")

    if not has_vnni(target):
        return []
    return [_rewrite_calls("relax.nn.conv2d", as_vnni, "DlcVnniConvs", bindings=True),
            relax.transform.DeadCodeElimination(["main"])]
