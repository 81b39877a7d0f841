"""LayerNormalization (all three outputs) and RMSNormalization."""

from __future__ import annotations

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from dlc.onnx_ops.common import dtype_of, static_shape, tvm_converter


class LayerNormalization(OnnxOpConverter):
    """TVM's returns float32 scalars as placeholders for the optional Mean and InvStdDev
    outputs; when the node asks for them they are computed (kept dims, the input's dtype,
    as ONNX's reference does). One output: TVM's fused layer_norm, unchanged."""

    @classmethod
    def _impl_v17(cls, bb, inputs, attr, params):
        if attr["tvm_custom"]["num_outputs"] == 1:
            return tvm_converter("LayerNormalization", 17)(bb, inputs, attr, params)
        op = relax.op
        x, scale = inputs[0], inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        rank = len(static_shape(x, "LayerNormalization input"))
        axis = attr.get("axis", -1) % rank
        axes = list(range(axis, rank))
        dtype = dtype_of(x)
        # stash_type 1 (the default): statistics in float32 whatever the input type.
        xf = bb.emit(op.astype(x, "float32")) if dtype != "float32" else x
        mean = bb.emit(op.mean(xf, axes, keepdims=True))
        diff = bb.emit(op.subtract(xf, mean))
        var = bb.emit(op.mean(op.multiply(diff, diff), axes, keepdims=True))
        inv_std = bb.emit(op.divide(relax.const(1.0, "float32"),
                                    op.sqrt(op.add(var, relax.const(attr.get("epsilon", 1e-5), "float32")))))
        y = op.multiply(op.astype(op.multiply(diff, inv_std), dtype), scale)
        if bias is not None:
            y = op.add(y, bias)
        outs = [bb.emit(y), bb.emit(op.astype(mean, dtype)), bb.emit(op.astype(inv_std, dtype))]
        return relax.Tuple(outs[: attr["tvm_custom"]["num_outputs"]])



class RMSNormalization(OnnxOpConverter):
    """TVM's relax rms_norm fails to lower when the normalised axes start at 0 (scale as
    large as the input); written out it is one reduction and elementwise ops."""

    @classmethod
    def _impl_v23(cls, bb, inputs, attr, params):
        op = relax.op
        x, scale = inputs[0], inputs[1]
        rank = len(static_shape(x, "RMSNormalization input"))
        axes = list(range(attr.get("axis", -1) % rank, rank))
        dtype = dtype_of(x)
        xf = bb.emit(op.astype(x, "float32")) if dtype != "float32" else x  # stash_type 1
        mean_square = bb.emit(op.mean(op.multiply(xf, xf), axes, keepdims=True))
        eps = relax.const(attr.get("epsilon", 1e-5), "float32")
        normed = bb.emit(op.divide(xf, op.sqrt(op.add(mean_square, eps))))
        return bb.emit(op.multiply(op.astype(normed, dtype), scale))
