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
those convolutions to a conv2d on (x_q - x_zp) as int16 with int16 weights and an int32
result, and the remaining QuantizeLinear / DequantizeLinear into the elementwise ops they
are: those have layout rules, so the channels-last conversion passes through them.
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
MAX_SOFTMAX_ROW = 64  # longer rows keep the fp32 softmax (its sum is unrolled term by term)


def has_qdq(mod: tvm.IRModule) -> bool:
    from dlc.pipeline import _graph_ops

    return bool({"relax.quantize", "relax.dequantize"} & _graph_ops(mod))


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


def ort_multiplier(x_scale: float, w_scale: np.ndarray, y_scale: float) -> np.ndarray:
    """ONNX Runtime's QLinearConv output scale, x_scale * w_scale / y_scale in fp32 in that
    order: another order rounds differently and moves values that sit on a rounding edge."""
    return (np.float32(x_scale) * w_scale.astype(np.float32)) / np.float32(y_scale)


def _requantize(builder, acc, multiplier: np.ndarray, zero_point: int, dtype: str):
    """clip(round_half_even(float(acc) * multiplier) + zero_point) as `dtype`."""
    from tvm import relax

    op = relax.op
    info = np.iinfo(dtype)
    value = builder.emit(op.multiply(op.astype(acc, "float32"), relax.const(multiplier, "float32")))
    value = builder.emit(op.add(op.round(value), relax.const(float(zero_point), "float32")))
    value = builder.emit(op.minimum(op.maximum(value, relax.const(float(info.min), "float32")),
                                    relax.const(float(info.max), "float32")))
    return op.astype(value, dtype)


def _dequantize(builder, call):
    """(float(q) - zero_point) * scale: exact like ONNX Runtime's (the subtraction is of
    small integers), as ops with layout rules."""
    from tvm import relax

    op = relax.op
    q, scale, zero_point = call.args
    dtype = str(call.attrs.out_dtype)
    rank = len(q.ty.shape)
    axis = int(call.attrs.axis) % max(rank, 1)

    def per_axis(value):  # a 1-D per-channel operand, broadcast along `axis`
        value = builder.emit(value)
        if len(value.ty.shape) == 1 and rank > 1 and int(value.ty.shape[0]) > 1:
            return op.reshape(value, [-1] + [1] * (rank - 1 - axis))
        return value

    value = builder.emit(op.subtract(op.astype(q, dtype), per_axis(op.astype(zero_point, dtype))))
    return op.multiply(value, per_axis(scale))


def _quantize(builder, call):
    """clip(round_half_even(x / scale) + zero_point): ONNX Runtime divides (MLAS), it does not
    multiply by the reciprocal."""
    from tvm import relax

    op = relax.op
    x, scale, zero_point = call.args
    dtype = str(call.attrs.out_dtype)
    rank = len(x.ty.shape)
    axis = int(call.attrs.axis) % max(rank, 1)
    info = np.iinfo(dtype)

    def per_axis(value):
        value = builder.emit(value)
        if len(value.ty.shape) == 1 and rank > 1 and int(value.ty.shape[0]) > 1:
            return op.reshape(value, [-1] + [1] * (rank - 1 - axis))
        return value

    value = builder.emit(op.round(op.divide(x, per_axis(scale))))
    value = builder.emit(op.add(value, per_axis(op.astype(zero_point, "float32"))))
    value = builder.emit(op.minimum(op.maximum(value, relax.const(float(info.min), "float32")),
                                    relax.const(float(info.max), "float32")))
    return op.astype(value, dtype)


def _integer_conv(call, builder, bindings):
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
    shifted = builder.emit(op.subtract(op.astype(x_q, "int16"), relax.const(np.int16(x_zp))))
    attrs = conv.attrs
    acc = builder.emit(op.nn.conv2d(
        shifted, relax.const(weight.astype(np.int16)), strides=attrs.strides, padding=attrs.padding,
        dilation=attrs.dilation, groups=attrs.groups, data_layout="NCHW", kernel_layout="OIHW",
        out_dtype="int32"))
    acc = builder.emit(op.add(acc, relax.const(bias_values.reshape(1, -1, 1, 1).astype(np.int32))))
    multiplier = ort_multiplier(x_scale, w_scale, y_scale).reshape(1, -1, 1, 1)
    return _requantize(builder, acc, multiplier, int(y_zp), out_dtype)


def ort_softmax_table(x_scale: float, length: int) -> np.ndarray:
    """ONNX Runtime's QLinearSoftmax exponent table (contrib_ops/cpu/quantization/
    qlinear_softmax.cc, uint8): exp((i - 255 + shift) * x_scale) in double, stored as float,
    with the shift that keeps a row's sum of `length` entries below FLT_MAX."""
    shift = max(0.0, float(np.log(np.float64(np.finfo(np.float32).max) / length)) - 5.0) / float(x_scale)
    i = np.arange(256, dtype=np.float64)
    return np.exp((i - 255.0 + shift) * np.float64(np.float32(x_scale))).astype(np.float32)


def _quantized_softmax_te(x, table, *, axis: int, y_scale: float, y_zero_point: int):
    """ONNX Runtime's uint8 softmax: each row's max aligned to table entry 255, the entries
    summed in row order in fp32, y = nearbyint(entry * floor(1 / y_scale) / sum) + zp
    (saturated at 255). The sum is written out term by term: a reduction's order is the
    schedule's, and a different order rounds differently."""
    from tvm import te, tirx

    length = int(x.shape[axis])
    numerator = tirx.const(float(np.floor(np.float32(1.0) / np.float32(y_scale))), "float32")

    def at(index, k):
        return tuple(k if d == axis else v for d, v in enumerate(index))

    def row_max(*index):
        value = x[at(index, 0)]
        for k in range(1, length):
            value = tirx.max(value, x[at(index, k)])
        return value

    top = te.compute(x.shape, row_max, name="softmax_row_max")

    def entry(index, k):
        return table[x[at(index, k)].astype("int32") + 255 - top[index].astype("int32")]

    def row_sum(*index):
        value = entry(index, 0)
        for k in range(1, length):
            value = value + entry(index, k)
        return value

    total = te.compute(x.shape, row_sum, name="softmax_row_sum")

    def output(*index):
        value = tirx.round(entry(index, index[axis]) * numerator / total[index]).astype("int32")
        return tirx.min(value + y_zero_point, 255).astype("uint8")

    return te.compute(x.shape, output, name="softmax_uint8")


def _integer_softmax(call, builder, bindings):
    """quantize(softmax(dequantize(x_q))) of uint8 tensors in ONNX Runtime's QLinearSoftmax
    arithmetic (what it runs for this group), or None."""
    softmax = _call_of(call.args[0], "relax.nn.softmax", bindings)
    x_dq = _call_of(softmax.args[0], "relax.dequantize", bindings) if softmax is not None else None
    if x_dq is None or str(call.attrs.out_dtype) != "uint8" or str(x_dq.args[0].ty.dtype) != "uint8":
        return None
    x_q = x_dq.args[0]
    x_scale = _scalar(_constant(x_dq.args[1], bindings))
    y_scale, y_zp = (_scalar(_constant(a, bindings)) for a in call.args[1:])
    rank = len(x_q.ty.shape)
    axis = int(softmax.attrs.axis) % rank
    length = int(x_q.ty.shape[axis])
    if x_scale is None or y_scale is None or y_zp is None or length > MAX_SOFTMAX_ROW:
        return None
    from tvm import relax

    table = relax.const(ort_softmax_table(x_scale, length), "float32")
    return builder.call_te(_quantized_softmax_te, x_q, table, axis=axis, y_scale=y_scale,
                           y_zero_point=int(y_zp), primfunc_name_hint="softmax_uint8")


def integer_qdq():
    """The QDQ rewrite described in the module docstring (a no-op on models without QDQ)."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from dlc.pipeline import _relax_rewrite_pass

    @mutator
    class IntegerConvs(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if getattr(call.op, "name", None) != "relax.quantize":
                return call
            for rewrite in (_integer_conv, _integer_softmax):
                replacement = rewrite(call, self.builder_, self.lookup_binding)
                if replacement is not None:
                    return replacement
            return call

    @mutator
    class ElementwiseQDQ(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            name = getattr(call.op, "name", None)
            if name == "relax.quantize":
                return _quantize(self.builder_, call)
            if name == "relax.dequantize":
                return _dequantize(self.builder_, call)
            return call

    # Two passes: the conv pattern is matched on the dequantize calls the second rewrites.
    return tvm.transform.Sequential([
        _relax_rewrite_pass(IntegerConvs, "DlcIntegerConvs"),
        relax.transform.DeadCodeElimination(["main"]),
        _relax_rewrite_pass(ElementwiseQDQ, "DlcElementwiseQDQ"),
    ], name="DlcIntegerQDQ")


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

    padded = te.compute((n, h + top + bottom, w + left + right, quads * VNNI_DEPTH), pad, name="pad_zero_point")
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
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from dlc.pipeline import _relax_rewrite_pass

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

    @mutator
    class VnniConvs(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if getattr(call.op, "name", None) != "relax.nn.conv2d":
                return call
            replacement = as_vnni(call, self.builder_, self.lookup_binding)
            return call if replacement is None else replacement

    if not has_vnni(target):
        return []
    return [_relax_rewrite_pass(VnniConvs, "DlcVnniConvs"), relax.transform.DeadCodeElimination(["main"])]
