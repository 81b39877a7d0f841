"""ONNX Runtime's own int8 kernels, computed as it computes them.

For a QDQ group it fuses into an int8 kernel of its own, ONNX Runtime rounds its own way:
QLinearAdd with two fused multiply-adds (AVX2), QLinearMul with a rounded product and a
separate add, QLinearAveragePool with a row-by-row fp32 sum, QLinearSoftmax with an
exponent table, a serial fp32 row sum and `floor(1 / y_scale)`, the requantisation of its
convolutions and GEMMs with `x_scale * w_scale / y_scale` in that order. Another evaluation
of the same graph (fp32 between the DequantizeLinear and QuantizeLinear, as ONNX Runtime's
own unoptimised run) lands on the other side of a rounding edge now and then, and the
flipped steps compound: agreeing with ONNX Runtime means computing what it computes. The
sources are onnxruntime's mlas/lib/qladd_avx2.cpp, qlmul.cpp and contrib_ops/cpu/
quantization/qlinear_softmax.cc, qlinear_pool.cc (1.31), checked value for value by
tests/e2e/test_quantize.py.

Each `_integer_*` takes the QuantizeLinear call closing a group (and `dlc.int8`'s binding
lookup) and returns its replacement, or None when the group is not of its kind.
"""

from __future__ import annotations

import numpy as np

from dlc.int8 import _call_of, _constant, _numel, _saturate, _scalar

MAX_POOL_WINDOW = 64  # larger windows keep fp32 (the window's sum is unrolled term by term)


def ort_multiplier(x_scale: float, w_scale: np.ndarray, y_scale: float) -> np.ndarray:
    """ONNX Runtime's QLinearConv output scale, x_scale * w_scale / y_scale in fp32 in that
    order: another order rounds differently and moves values that sit on a rounding edge."""
    return (np.float32(x_scale) * w_scale.astype(np.float32)) / np.float32(y_scale)


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


def integer_softmax(call, builder, bindings):
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


def integer_add(call, builder, bindings):
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
    broadcast = _numel(b.ty.shape) < size  # ORT's per-span scalar b: fixed + b * ratio_b, each rounded
    b_value = _constant(b, bindings)
    if b_value is not None:
        # A constant b (a per-channel shift): its side computed here, so no cast of a constant
        # is left for the layout pass (TVM 0.27's ConvertLayout drops one and mixes dtypes).
        f32 = np.float32
        term = b_value.astype(np.float64) * np.float64(f32(ratio_b))
        side = (f32(fixed) + term.astype(f32)) if broadcast else (term + np.float64(f32(fixed))).astype(f32)
        value = const(side.astype(np.float64))
    else:
        b_term = builder.emit(op.multiply(op.astype(b, "float64"), const(ratio_b)))
        if broadcast:
            value = op.add(const(np.float32(fixed), "float32"), op.astype(b_term, "float32"))
        else:
            value = op.astype(op.add(b_term, const(fixed)), "float32")
        value = op.astype(builder.emit(value), "float64")
    value = builder.emit(op.astype(op.add(op.multiply(op.astype(a, "float64"), const(ratio_a)), value),
                                   "float32"))
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


def integer_mul(call, builder, bindings):
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


def integer_avg_pool(call, builder, bindings):
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
