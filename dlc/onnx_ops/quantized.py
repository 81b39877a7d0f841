"""ORT's QOperator int8 ops: QLinearMatMul, QLinearConv, ConvInteger."""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from dlc.onnx_ops.common import dtype_of, static_shape, tvm_converter


def _minus_zero_point(bb, value, zero_point, channel_axis: int | None = None):
    """value - zero_point in int32; a 1-D zero point is per channel along `channel_axis`."""
    op = relax.op
    out = bb.emit(op.astype(value, "int32"))
    if zero_point is None:
        return out
    zp = op.astype(zero_point, "int32")
    rank = len(static_shape(value, "quantised input"))
    zp_shape = static_shape(zero_point, "zero point")
    if channel_axis is not None and len(zp_shape) == 1 and zp_shape[0] > 1:
        zp = op.reshape(bb.emit(zp), [-1] + [1] * (rank - 1 - channel_axis))
    return bb.emit(op.subtract(out, zp))


def _requantize(bb, acc, multiplier, zero_point, out_dtype: str, *, half_even: bool = True,
                wide: str = "float64"):
    """clip(round(acc * multiplier) + zero_point) as `out_dtype`, in `wide` (float64 keeps an
    int32 accumulator exact)."""
    op = relax.op
    value = op.multiply(op.astype(acc, wide), op.astype(multiplier, wide))
    value = bb.emit(op.round(value) if half_even else value)
    if zero_point is not None:
        value = op.add(value, op.astype(zero_point, wide))
    info = np.iinfo(out_dtype)
    value = op.clip(bb.emit(value), float(info.min), float(info.max))
    if not half_even:
        value = op.round(bb.emit(value))
    return bb.emit(op.astype(bb.emit(value), out_dtype))


class QLinearMatMul(OnnxOpConverter):
    """Not in TVM 0.27's importer: int32 matmul of the zero-point-shifted operands, then
    requantised with a_scale*b_scale/y_scale (ONNX's reference, exactly)."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        op = relax.op
        a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = inputs[:8]
        acc = bb.emit(op.matmul(_minus_zero_point(bb, a, a_zp), _minus_zero_point(bb, b, b_zp)))
        multiplier = bb.emit(op.divide(op.multiply(a_scale, b_scale), y_scale))
        return _requantize(bb, acc, multiplier, y_zp, dtype_of(y_zp) if y_zp is not None else dtype_of(a))


class QLinearConv(OnnxOpConverter):
    """Not in TVM 0.27's importer: TVM's Conv on the zero-point-shifted operands (per-channel
    weight zero points and scales), plus the int32 bias, requantised. A reference
    implementation, not an int8 kernel: the int8 path is `dlc quantize`'s (issue 14, part 3)."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        op = relax.op
        x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp = inputs[:8]
        bias = inputs[8] if len(inputs) > 8 else None
        # The shifted operands as float64 (exact for any int32 sum): TVM 0.27's simplifier fails
        # on an int32 conv2d fused with the cast to float ("IntImm supports only int ...").
        x64, w64 = (bb.emit(op.astype(v, "float64")) for v in
                    (_minus_zero_point(bb, x, x_zp), _minus_zero_point(bb, w, w_zp, 0)))
        acc = _conv(bb, x64, w64, attr)
        rank = len(static_shape(acc, "QLinearConv output"))
        if bias is not None:
            acc = bb.emit(op.add(acc, op.reshape(bb.emit(op.astype(bias, "float64")), [-1] + [1] * (rank - 2))))
        w_scale_shape = static_shape(w_scale, "w_scale")
        if len(w_scale_shape) == 1 and w_scale_shape[0] > 1:  # per output channel
            w_scale = bb.emit(op.reshape(w_scale, [-1] + [1] * (rank - 2)))
        multiplier = bb.emit(op.divide(op.multiply(x_scale, w_scale), y_scale))
        # ONNX's reference clips, then rounds (numpy's round: half to even).
        return _requantize(bb, acc, multiplier, y_zp, dtype_of(y_zp) if y_zp is not None else dtype_of(x),
                           half_even=False)


class ConvInteger(OnnxOpConverter):
    """Not in TVM 0.27's importer: TVM's Conv on int32 zero-point-shifted operands."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, w = inputs[0], inputs[1]
        x_zp = inputs[2] if len(inputs) > 2 else None
        w_zp = inputs[3] if len(inputs) > 3 else None
        return _conv(bb, _minus_zero_point(bb, x, x_zp), _minus_zero_point(bb, w, w_zp, 0), attr)


def _conv(bb, x, w, attr):
    """TVM's own Conv converter (auto_pad, groups, dilations) on shifted operands."""
    conv = tvm_converter("Conv", 11)
    return bb.normalize(conv(bb, [x, w, None], dict(attr), None))
