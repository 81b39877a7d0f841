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
A uint8 quantize(softmax(dequantize(x))) takes ONNX Runtime's QLinearSoftmax arithmetic (an
exponent table and a row sum in fp32, `floor(1 / y_scale)`): an approximation of its own,
which is what ONNX Runtime runs for that group; YOLOv8's box decoder has one.

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
MAX_POOL_WINDOW = 64  # larger windows keep fp32 (the window's sum is unrolled term by term)


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


SOFTMAX_SUM_BLOCK = "softmax_uint8_row_sum"  # dlc.schedules.int8 keeps its reduction in order


def _quantized_softmax_te(x, table, *, axis: int, y_scale: float, y_zero_point: int):
    """ONNX Runtime's uint8 softmax: each row's max aligned to table entry 255, the entries
    summed in row order in fp32, y = nearbyint(entry * floor(1 / y_scale) / sum) + zp
    (saturated at 255). The sum's order is ORT's (first to last): the schedule keeps that
    reduction serial, as another order rounds differently."""
    from tvm import te, tirx

    length = int(x.shape[axis])
    numerator = tirx.const(float(np.floor(np.float32(1.0) / np.float32(y_scale))), "float32")
    row_shape = [d for i, d in enumerate(x.shape) if i != axis]

    def full(row, k):
        return (*row[:axis], k, *row[axis:])

    k = te.reduce_axis((0, length), "k")
    top = te.compute(row_shape, lambda *row: te.max(x[full(row, k)], axis=k), name="softmax_uint8_row_max")

    def entry(row, at):
        return table[x[full(row, at)].astype("int32") + 255 - top[row].astype("int32")]

    j = te.reduce_axis((0, length), "j")
    total = te.compute(row_shape, lambda *row: te.sum(entry(row, j), axis=j), name=SOFTMAX_SUM_BLOCK)

    def output(*index):
        row = (*index[:axis], *index[axis + 1:])
        value = tirx.round(entry(row, index[axis]) * numerator / total[row]).astype("int32")
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
    if x_scale is None or y_scale is None or y_zp is None:
        return None
    from tvm import relax

    table = relax.const(ort_softmax_table(x_scale, length), "float32")
    return builder.call_te(_quantized_softmax_te, x_q, table, axis=axis, y_scale=y_scale,
                           y_zero_point=int(y_zp), primfunc_name_hint="softmax_uint8")


def ort_add_constants(a_scale, a_zp, b_scale, b_zp, y_scale, y_zp) -> tuple[float, float, float]:
    """(ratio_a, ratio_b, fixed) as ONNX Runtime's QLinearAdd computes them in fp32: the
    ratios by division, `fixed = y_zp - (ratio_a * a_zp + ratio_b * b_zp)` with the first
    product fused into the addition (the compiler contracts it)."""
    f32 = np.float32
    ratio_a, ratio_b = f32(a_scale) / f32(y_scale), f32(b_scale) / f32(y_scale)
    inner = f32(np.float64(ratio_a) * a_zp + np.float64(f32(ratio_b * f32(b_zp))))  # fma(ra, za, rb * zb)
    return float(ratio_a), float(ratio_b), float(f32(f32(y_zp) - inner))


def _integer_add(call, builder, bindings):
    """quantize(dequantize(a) + dequantize(b)) of uint8 tensors with per-tensor parameters
    in ONNX Runtime's QLinearAdd arithmetic (what it runs for this group), or None."""
    found = _binary_operands(call, "relax.add", bindings)
    if found is None:
        return None
    a, b, (a_scale, a_zp), (b_scale, b_zp), y_scale, y_zp = found
    size = _numel(call.ty.shape)
    if _numel(a.ty.shape) < size and _numel(b.ty.shape) == size:  # ORT swaps a broadcast a into b
        a, b, a_scale, a_zp, b_scale, b_zp = b, a, b_scale, b_zp, a_scale, a_zp
    if _numel(a.ty.shape) < size:
        return None  # both broadcast: ORT's general loop, left to the fp32 path
    from tvm import relax

    op = relax.op
    ratio_a, ratio_b, fixed = ort_add_constants(a_scale, a_zp, b_scale, b_zp, y_scale, y_zp)

    def const(value, dtype="float64"):
        return relax.const(value, dtype)

    # fma(x, r, c) as float64 x * r + c rounded once to fp32: x is an 8-bit integer and r an
    # fp32, so the product and the sum are exact in float64 at these magnitudes. Plain
    # Relax ops (not a kernel of dlc's) keep the channels-last layout passing through.
    b_term = builder.emit(op.multiply(op.astype(b, "float64"), const(ratio_b)))
    if _numel(b.ty.shape) < size:  # ORT's per-span scalar b: fixed + b * ratio_b, each rounded
        value = op.add(const(np.float32(fixed), "float32"), op.astype(b_term, "float32"))
    else:
        value = op.astype(op.add(b_term, const(fixed)), "float32")
    value = builder.emit(value)
    value = builder.emit(op.astype(op.add(op.multiply(op.astype(a, "float64"), const(ratio_a)),
                                          op.astype(value, "float64")), "float32"))
    return _saturate(builder, op.round(value), "uint8")


def _binary_operands(call, op_name: str, bindings):
    """(a, b, [a_scale, a_zp], [b_scale, b_zp], y_scale, y_zp) of a uint8
    quantize(op(dequantize(a), dequantize(b))) with constant per-tensor parameters, or None."""
    inner = _call_of(call.args[0], op_name, bindings)
    if inner is None or str(call.attrs.out_dtype) != "uint8":
        return None
    operands = [_call_of(arg, "relax.dequantize", bindings) for arg in inner.args]
    if any(dq is None or str(dq.args[0].ty.dtype) != "uint8" for dq in operands):
        return None
    params = [[_scalar(_constant(v, bindings)) for v in dq.args[1:]] for dq in operands]
    y_scale, y_zp = (_scalar(_constant(v, bindings)) for v in call.args[1:])
    if any(v is None for v in (*params[0], *params[1], y_scale, y_zp)):
        return None
    return operands[0].args[0], operands[1].args[0], params[0], params[1], y_scale, y_zp


def _integer_mul(call, builder, bindings):
    """quantize(dequantize(a) * dequantize(b)) of uint8 tensors in ONNX Runtime's
    QLinearMul arithmetic, or None."""
    found = _binary_operands(call, "relax.multiply", bindings)
    if found is None:
        return None
    a, b, (a_scale, a_zp), (b_scale, b_zp), y_scale, y_zp = found
    from tvm import relax

    op = relax.op
    f32 = np.float32
    ratio = f32(f32(a_scale) * f32(b_scale)) / f32(y_scale)
    shifted = [builder.emit(op.subtract(op.astype(x, "int32"), relax.const(int(zp), "int32")))
               for x, zp in ((a, a_zp), (b, b_zp))]
    # The product rounded to fp32 before the add, as ORT's separate multiply and add do (an
    # fp32 multiply-add would be fused by LLVM); exact in float64 (17 by 24 bits).
    product = builder.emit(op.astype(op.multiply(*shifted), "float64"))
    value = builder.emit(op.astype(op.multiply(product, relax.const(float(ratio), "float64")), "float32"))
    value = builder.emit(op.add(value, relax.const(float(y_zp), "float32")))
    return _saturate(builder, op.round(value), "uint8")


def _rounded_product(value_f64, factor: float):
    """fp32(value * factor) rounded once, as a plain fp32 multiply would be: TVM lets LLVM
    fuse an fp32 multiply into a following add (one rounding, not two), and ONNX Runtime's
    kernels round the product first. The float64 product of an int16 and an fp32 is exact,
    and a narrowed product is never fused."""
    from tvm import tirx

    return (value_f64 * tirx.const(float(factor), "float64")).astype("float32")


def _quantized_avg_pool_te(x, *, pool, strides, x_scale: float, x_zp: int, y_scale: float, y_zp: int):
    """ONNX Runtime's uint8 QLinearAveragePool (contrib_ops/cpu/quantization/
    qlinear_pool.cc): the window's dequantized values summed row by row in fp32, divided by
    the window size, then nearbyint(y / y_scale + y_zp), saturated."""
    from tvm import te, tirx

    n, c, h, w = (int(d) for d in x.shape)
    (kh, kw), (sh, sw) = pool, strides
    f32 = lambda value: tirx.const(value, "float32")  # noqa: E731

    def output(b, ch, y, z):
        total = None
        for i in range(kh):
            for j in range(kw):
                shifted = (x[b, ch, y * sh + i, z * sw + j].astype("int32") - x_zp).astype("float64")
                term = _rounded_product(shifted, x_scale)
                total = term if total is None else total + term
        value = tirx.round(total / f32(kh * kw) / f32(y_scale) + f32(y_zp))
        return tirx.max(tirx.min(value, f32(255.0)), f32(0.0)).astype("uint8")

    return te.compute((n, c, (h - kh) // sh + 1, (w - kw) // sw + 1), output, name="avg_pool_uint8")


def _integer_avg_pool(call, builder, bindings):
    """quantize(avg_pool2d(dequantize(x))) of a uint8 NCHW tensor, unpadded, in ONNX
    Runtime's QLinearAveragePool arithmetic, or None."""
    pool = _call_of(call.args[0], "relax.nn.avg_pool2d", bindings)
    x_dq = _call_of(pool.args[0], "relax.dequantize", bindings) if pool is not None else None
    if x_dq is None or str(call.attrs.out_dtype) != "uint8" or str(x_dq.args[0].ty.dtype) != "uint8":
        return None
    attrs = pool.attrs
    size = [int(k) for k in attrs.pool_size]
    if (str(attrs.layout) != "NCHW" or any(int(p) for p in attrs.padding) or bool(attrs.ceil_mode)
            or any(int(d) != 1 for d in attrs.dilation) or size[0] * size[1] > MAX_POOL_WINDOW):
        return None
    x_scale, x_zp = (_scalar(_constant(v, bindings)) for v in x_dq.args[1:])
    y_scale, y_zp = (_scalar(_constant(v, bindings)) for v in call.args[1:])
    if any(v is None for v in (x_scale, x_zp, y_scale, y_zp)):
        return None
    return builder.call_te(_quantized_avg_pool_te, x_dq.args[0], pool=size, strides=[int(v) for v in attrs.strides],
                           x_scale=x_scale, x_zp=int(x_zp), y_scale=y_scale, y_zp=int(y_zp),
                           primfunc_name_hint="avg_pool_uint8")


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
    return _requantize(builder, acc, ort_multiplier(a_scale, w_scale, y_scale), int(y_zp), str(call.attrs.out_dtype))


# Ops that only move or select values: between a DequantizeLinear and a QuantizeLinear of the
# same scale and zero point they act on the int8 tensor itself, exactly (ONNX Runtime drops
# such Q/DQ pairs too). MaxPool is one: dequantisation is monotonic, and the uint8 padding
# (0) never wins a window of values >= 0.
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
    if name in _MOVES:
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
            for rewrite in (_integer_conv, _integer_matmul, _integer_softmax, _integer_add, _integer_mul,
                            _integer_avg_pool, _integer_move):
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
