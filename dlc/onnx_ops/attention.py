"""The standard ONNX Attention (opset 23+) and RotaryEmbedding."""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, get_type

from dlc.onnx_ops.common import dtype_of, static_shape, tvm_converter


class Attention(OnnxOpConverter):
    """TVM's "Attention" is the com.microsoft contrib op (it reads `num_heads`); the standard
    ONNX Attention (opset 23+) shares the name. A node with `num_heads` still goes to TVM's.
    This follows ONNX's reference implementation step for step: 3D inputs split into heads,
    the scale applied as sqrt(scale) to Q and K, KV cache concatenation, causal/bool/float
    masks, nonpad_kv_seqlen, sliding windows, grouped-query heads (interleaved repeat),
    softcap, softmax_precision, zeroed fully-masked rows, and the four qk_matmul_output modes."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):  # one version: `num_heads` tells the two ops apart
        if "num_heads" in attr:
            return tvm_converter("Attention", 1)(bb, inputs, attr, params)
        return cls._standard(bb, inputs, attr)

    @classmethod
    def _standard(cls, bb, inputs, attr):
        op = relax.op
        inputs = list(inputs) + [None] * (7 - len(inputs))
        q, k, v, mask, past_k, past_v, nonpad = inputs[:7]
        rank = len(static_shape(q, "Attention Q"))
        dtype = dtype_of(q)
        neg_inf = relax.const(-np.inf, dtype)
        zero = relax.const(0.0, dtype)
        q_heads, kv_heads = attr.get("q_num_heads"), attr.get("kv_num_heads")
        if rank == 3:
            q = cls._split_heads(bb, q, q_heads)
            k = cls._split_heads(bb, k, kv_heads)
            v = cls._split_heads(bb, v, kv_heads)
        batch, q_heads, q_len, head_size = static_shape(q, "Attention Q")
        scale = attr.get("scale")
        scale = float(np.sqrt(1.0 / np.sqrt(head_size) if scale is None else scale))
        if past_k is not None:
            k = bb.emit(op.concat([past_k, k], axis=2))
            v = bb.emit(op.concat([past_v, v], axis=2))
        present_k, present_v = k, v
        kv_len = static_shape(k, "Attention K")[2]
        kv_heads = static_shape(k, "Attention K")[1]

        bias = None  # additive, broadcastable to [batch, heads, q, kv]
        if mask is not None:
            mask_shape = static_shape(mask, "Attention attn_mask")
            is_bool = dtype_of(mask) == "bool"
            if mask_shape[-1] < kv_len:  # a short mask is padded with masked positions
                pad = np.full(mask_shape[:-1] + (kv_len - mask_shape[-1],), False if is_bool else -np.inf,
                              dtype="bool" if is_bool else dtype)
                mask = bb.emit(op.concat([mask, relax.const(pad)], axis=-1))
            bias = bb.emit(op.where(mask, zero, neg_inf)) if is_bool else mask
        offset = None  # the causal frontier: key j is visible to query i iff j <= i + offset
        if past_k is not None:
            offset = relax.const(static_shape(past_k, "Attention past_key")[2], "int64")
        elif nonpad is not None:
            lengths = bb.emit(op.subtract(op.astype(nonpad, "int64"), relax.const(q_len, "int64")))
            offset = bb.emit(op.reshape(lengths, [-1, 1, 1, 1]))
        else:
            offset = relax.const(0, "int64")
        rows = relax.const(np.arange(q_len, dtype="int64").reshape(q_len, 1), "int64")
        cols = relax.const(np.arange(kv_len, dtype="int64").reshape(1, kv_len), "int64")
        diff = bb.emit(op.subtract(op.add(rows, offset), cols))  # i + offset - j
        if attr.get("is_causal", 0):
            causal = op.where(op.greater_equal(diff, relax.const(0, "int64")), zero, neg_inf)
            bias = bb.emit(causal if bias is None else op.add(bias, causal))
        left, right = attr.get("left_window_size", -1), attr.get("right_window_size", -1)
        if left >= 0 or right >= 0:
            allowed = relax.const(True)
            if left >= 0:
                allowed = op.logical_and(allowed, op.less_equal(diff, relax.const(left, "int64")))
            if right >= 0:
                allowed = op.logical_and(allowed, op.less_equal(op.negative(diff), relax.const(right, "int64")))
            window = op.where(allowed, zero, neg_inf)
            bias = bb.emit(window if bias is None else op.add(bias, window))
        if nonpad is not None:
            lengths = bb.emit(op.astype(nonpad, "int64"))
            valid = op.less(cols, bb.emit(op.reshape(lengths, [-1, 1])))  # [batch, kv]
            padding = op.reshape(bb.emit(op.where(valid, zero, neg_inf)), [batch, 1, 1, kv_len])
            bias = bb.emit(padding if bias is None else op.add(bias, padding))

        if q_heads != kv_heads and q_heads % kv_heads == 0:  # grouped-query: [h0, h0, h1, h1, ...]
            k = bb.emit(op.repeat(k, q_heads // kv_heads, axis=1))
            v = bb.emit(op.repeat(v, q_heads // kv_heads, axis=1))
        s = relax.const(scale, dtype)
        qk = cls._matmul(bb, bb.emit(op.multiply(q, s)), bb.emit(op.permute_dims(op.multiply(k, s), [0, 1, 3, 2])))
        softcap = attr.get("softcap", 0.0)
        if softcap and softcap > 0:
            cap = relax.const(softcap, dtype)
            qk = bb.emit(op.multiply(op.tanh(op.divide(qk, cap)), cap))
        with_bias = bb.emit(op.add(qk, bias)) if bias is not None else qk
        mode = attr.get("qk_matmul_output_mode", 0)
        qk_out = with_bias if mode == 2 else qk
        logits = with_bias
        precision = attr.get("softmax_precision")
        if precision is not None:
            logits = bb.emit(op.astype(logits, get_type(precision)))
        elif dtype == "float16":  # exp and the row sum in float32: in float16 they drift an ulp
            logits = bb.emit(op.astype(logits, "float32"))
        probs = cls._softmax(bb, logits)
        if bias is not None:  # a row whose bias masks every key attends to nothing: zeros
            lt = dtype_of(probs)
            row_masked = op.equal(op.max(bias, axis=-1, keepdims=True), neg_inf)
            probs = bb.emit(op.where(row_masked, relax.const(0.0, lt), probs))
        if mode == 3:
            qk_out = probs
        qk_out = bb.emit(op.astype(qk_out, dtype))
        y = cls._matmul(bb, bb.emit(op.astype(probs, dtype)), v)
        if rank == 3:
            y = bb.emit(op.reshape(bb.emit(op.permute_dims(y, [0, 2, 1, 3])), [batch, q_len, -1]))
        outs = [y, present_k, present_v, qk_out]
        count = attr["tvm_custom"]["num_outputs"]
        return relax.Tuple(outs[:count]) if count > 1 else outs[0]

    @staticmethod
    def _matmul(bb, a, b):
        """float16 products summed in float32, then rounded once (as ONNX's reference and ORT
        do): a float16 sum drifts by an ulp or more over a row."""
        if dtype_of(a) != "float16":
            return bb.emit(relax.op.matmul(a, b))
        return bb.emit(relax.op.astype(bb.emit(relax.op.matmul(a, b, out_dtype="float32")), "float16"))

    @staticmethod
    def _split_heads(bb, x, heads):
        batch, seq, hidden = static_shape(x, "Attention input")
        x = bb.emit(relax.op.reshape(x, [batch, seq, heads, hidden // heads]))
        return bb.emit(relax.op.permute_dims(x, [0, 2, 1, 3]))

    @staticmethod
    def _softmax(bb, x):
        """Softmax whose all -inf rows give zeros, not NaN (ONNX's reference)."""
        op = relax.op
        dt = dtype_of(x)
        neg_inf, zero, one = (relax.const(v, dt) for v in (-np.inf, 0.0, 1.0))
        top = op.max(x, axis=-1, keepdims=True)
        safe = op.where(op.equal(top, neg_inf), zero, top)
        e = bb.emit(op.exp(op.subtract(x, safe)))
        total = op.sum(e, axis=-1, keepdims=True)
        return bb.emit(op.divide(e, op.where(op.equal(total, zero), one, total)))



class RotaryEmbedding(OnnxOpConverter):
    """Not in TVM 0.27's importer (opset 23; LLM exports): ONNX's reference, with the cos/sin
    caches gathered by position_ids, halves or interleaved pairs rotated, and an optional
    rotary_embedding_dim prefix."""

    @classmethod
    def _impl_v23(cls, bb, inputs, attr, params):
        op = relax.op
        x, cos, sin = inputs[0], inputs[1], inputs[2]
        positions = inputs[3] if len(inputs) > 3 else None
        shape = static_shape(x, "RotaryEmbedding input")
        if len(shape) == 4:  # [batch, heads, seq, head] -> [batch, seq, heads, head]
            x = bb.emit(op.permute_dims(x, [0, 2, 1, 3]))
        else:
            heads = attr.get("num_heads", 0)
            x = bb.emit(op.reshape(x, [shape[0], shape[1], heads, shape[2] // heads]))
        batch, seq, heads, head = static_shape(x, "RotaryEmbedding input")
        dim = attr.get("rotary_embedding_dim", 0) or head
        if positions is not None:
            cos, sin = (bb.emit(op.take(c, positions, axis=0)) for c in (cos, sin))
        cos, sin = (bb.emit(op.expand_dims(c, [2])) for c in (cos, sin))  # [batch, seq, 1, dim/2]
        rotate = bb.emit(op.strided_slice(x, [3], [0], [dim]))
        if attr.get("interleaved", 0):
            x1 = bb.emit(op.strided_slice(rotate, [3], [0], [dim], [2]))
            x2 = bb.emit(op.strided_slice(rotate, [3], [1], [dim], [2]))
        else:
            x1 = bb.emit(op.strided_slice(rotate, [3], [0], [dim // 2]))
            x2 = bb.emit(op.strided_slice(rotate, [3], [dim // 2], [dim]))
        real = bb.emit(op.subtract(op.multiply(cos, x1), op.multiply(sin, x2)))
        imag = bb.emit(op.add(op.multiply(sin, x1), op.multiply(cos, x2)))
        if attr.get("interleaved", 0):
            pairs = bb.emit(op.stack([real, imag], axis=4))
            rotated = bb.emit(op.reshape(pairs, [batch, seq, heads, dim]))
        else:
            rotated = bb.emit(op.concat([real, imag], axis=3))
        if dim < head:
            rotated = bb.emit(op.concat([rotated, bb.emit(op.strided_slice(x, [3], [dim], [head]))], axis=3))
        if len(shape) == 4:
            return bb.emit(op.permute_dims(rotated, [0, 2, 1, 3]))
        return bb.emit(op.reshape(rotated, list(shape)))
