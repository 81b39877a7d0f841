"""Smaller gaps: Pow, LpNormalization, CumProd, Celu, bool and empty ReduceMax/Min, OneHot, Constant, ReverseSequence,
zero-size Split pieces, Sinh/Cosh, IsInf's directions, inference Dropout's mask, BitCast."""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from dlc.onnx_ops.common import constant, dtype_of, static_shape, tvm_converter


class Pow(OnnxOpConverter):
    """TVM's requires one dtype for base and exponent, and a float base; ONNX allows mixed
    types (the output has the base's). Integer bases go through float64 and back."""

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        op = relax.op
        base, exponent = inputs[0], inputs[1]
        dtype = dtype_of(base)
        if dtype.startswith("float"):
            if dtype_of(exponent) != dtype:
                exponent = bb.emit(op.astype(exponent, dtype))
            return bb.emit(op.power(base, exponent))
        wide = op.power(op.astype(base, "float64"), op.astype(exponent, "float64"))
        return bb.emit(op.astype(bb.emit(wide), dtype))


class LpNormalization(OnnxOpConverter):
    """Not in TVM 0.27's importer: x / ||x||_p along `axis` (p 1 or 2), 0 where the norm is 0."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        op = relax.op
        x = inputs[0]
        axis, p = attr.get("axis", -1), attr.get("p", 2)
        if p == 1:
            norm = op.sum(op.abs(x), [axis], keepdims=True)
        elif p == 2:
            norm = op.sqrt(op.sum(op.multiply(x, x), [axis], keepdims=True))
        else:
            raise ValueError(f"LpNormalization with p={p} (ONNX allows 1 or 2)")
        norm = bb.emit(norm)
        zero = relax.const(0.0, dtype_of(x))
        is_zero = op.equal(norm, zero)
        safe = bb.emit(op.where(is_zero, relax.const(1.0, dtype_of(x)), norm))
        return bb.emit(op.where(is_zero, zero, op.divide(x, safe)))


class CumProd(OnnxOpConverter):
    """Not in TVM 0.27's importer (opset 26): TVM's CumSum converter's handling of a constant
    axis, exclusive and reverse, with relax's cumprod."""

    @classmethod
    def _impl_v26(cls, bb, inputs, attr, params):
        op = relax.op
        data = inputs[0]
        axis = constant(inputs[1])
        if axis is None or axis.size != 1:
            raise ValueError("CumProd needs a constant scalar axis")
        axis = int(axis.reshape(-1)[0])
        reverse = attr.get("reverse", 0) != 0
        if reverse:
            data = bb.emit(op.flip(data, axis))
        out = bb.emit(op.cumprod(data, axis, exclusive=attr.get("exclusive", 0) != 0))
        return bb.emit(op.flip(out, axis)) if reverse else out


class Celu(OnnxOpConverter):
    """Not in TVM 0.27's importer: max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""

    @classmethod
    def _impl_v12(cls, bb, inputs, attr, params):
        op = relax.op
        x = inputs[0]
        dtype = dtype_of(x)
        alpha = relax.const(attr.get("alpha", 1.0), dtype)
        zero = relax.const(0.0, dtype)
        negative = op.multiply(alpha, op.subtract(op.exp(op.divide(x, alpha)), relax.const(1.0, dtype)))
        return bb.emit(op.add(op.maximum(x, zero), op.minimum(negative, zero)))


class _BoolReduce(OnnxOpConverter):
    """TVM's ReduceMax/ReduceMin legalisation has no min/max value for bool: reduce as uint8.
    Over an empty axis the result is the reduction's identity (ONNX: max of nothing is -inf,
    False, or the type's minimum), where TVM's gives the type's finite extreme."""

    name = ""

    @classmethod
    def _convert(cls, bb, inputs, attr, params, version):
        convert = tvm_converter(cls.name, version)
        x = inputs[0]
        dtype = dtype_of(x)
        if dtype != "bool":
            out = bb.normalize(convert(bb, inputs, attr, params))
        else:
            widened = [bb.emit(relax.op.astype(x, "uint8")), *inputs[1:]]
            out = bb.emit(relax.op.astype(bb.normalize(convert(bb, widened, attr, params)), "bool"))
        if not cls._reduces_nothing(x, inputs, attr, version):
            return out
        identity = np.full(static_shape(out, cls.name), cls._identity(dtype), dtype=dtype)
        return relax.const(identity, dtype)  # empty input: nothing to compute at run time

    @classmethod
    def _reduces_nothing(cls, x, inputs, attr, version) -> bool:
        """Some reduced axis has size 0 (axes known at import; none given: every axis)."""
        shape = static_shape(x, cls.name)
        axes = constant(inputs[1]) if version >= 18 and len(inputs) > 1 else attr.get("axes")
        if axes is None or np.size(axes) == 0:
            axes = [] if attr.get("noop_with_empty_axes", 0) else range(len(shape))
        return any(shape[int(a)] == 0 for a in np.reshape(axes, -1))

    @classmethod
    def _identity(cls, dtype: str):
        largest = cls.name == "ReduceMin"
        if dtype == "bool":
            return largest
        if dtype.startswith("float"):
            return np.inf if largest else -np.inf
        info = np.iinfo(dtype)
        return int(info.max if largest else info.min)

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        return cls._convert(bb, inputs, attr, params, 1)

    @classmethod
    def _impl_v18(cls, bb, inputs, attr, params):
        return cls._convert(bb, inputs, attr, params, 18)


class ReduceMax(_BoolReduce):
    name = "ReduceMax"


class ReduceMin(_BoolReduce):
    name = "ReduceMin"


class OneHot(OnnxOpConverter):
    """TVM's needs constant on/off values; ONNX's come from a tensor. With a constant depth the
    comparison against arange(depth) and a select need no constants at all (negative indices
    wrap; out-of-range ones match nothing, as in ONNX's reference)."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        op = relax.op
        indices, depth, values = inputs[0], constant(inputs[1]), inputs[2]
        if depth is None:
            raise ValueError("OneHot needs a constant depth (the output's shape depends on it)")
        depth = int(depth.reshape(-1)[0])
        rank = len(static_shape(indices, "OneHot indices"))
        axis = attr.get("axis", -1)
        axis = axis + rank + 1 if axis < 0 else axis
        idx = bb.emit(op.astype(indices, "int64"))
        idx = bb.emit(op.where(op.less(idx, relax.const(0, "int64")), op.add(idx, relax.const(depth, "int64")), idx))
        idx = bb.emit(op.expand_dims(idx, [axis]))
        targets = np.arange(depth, dtype="int64").reshape([1] * axis + [depth] + [1] * (rank - axis))
        hit = bb.emit(op.equal(relax.const(targets, "int64"), idx))
        off = bb.emit(op.strided_slice(values, [0], [0], [1]))
        on = bb.emit(op.strided_slice(values, [0], [1], [2]))
        return bb.emit(op.where(hit, on, off))


class Constant(OnnxOpConverter):
    """TVM's reads only the `value` tensor; ONNX function bodies (Celu's expansion) write
    `value_float(s)` / `value_int(s)`."""

    @classmethod
    def _impl_v13(cls, bb, inputs, attr, params):
        for key, dtype in (("value_float", "float32"), ("value_floats", "float32"),
                           ("value_int", "int64"), ("value_ints", "int64")):
            if key in attr:
                return relax.const(np.asarray(attr[key], dtype=dtype), dtype)
        return tvm_converter("Constant", 13)(bb, inputs, attr, params)


class ReverseSequence(OnnxOpConverter):
    """Not in TVM 0.27's importer: reverse the first sequence_lens[b] steps of each batch entry,
    as a gather whose indices are computed from the lengths (any lengths, at run time)."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        op = relax.op
        x, lengths = inputs[0], inputs[1]
        shape = static_shape(x, "ReverseSequence input")
        batch_axis, time_axis = attr.get("batch_axis", 1), attr.get("time_axis", 0)
        steps = shape[time_axis]
        # index[b, t] = len[b] - 1 - t for t < len[b], else t
        t = relax.const(np.arange(steps, dtype="int64").reshape(1, steps), "int64")
        lens = bb.emit(op.reshape(bb.emit(op.astype(lengths, "int64")), [-1, 1]))
        flipped = op.subtract(op.subtract(lens, relax.const(1, "int64")), t)
        flipped = bb.emit(flipped)
        index = bb.emit(op.where(op.less(t, lens), flipped, op.add(t, op.zeros_like(flipped))))
        if batch_axis > time_axis:
            index = bb.emit(op.permute_dims(index, [1, 0]))  # [time, batch]
        expand = [a for a in range(len(shape)) if a not in (batch_axis, time_axis)]
        if expand:
            index = bb.emit(op.expand_dims(index, expand))
        index = bb.emit(op.broadcast_to(index, list(shape)))
        return bb.emit(op.gather_elements(x, index, axis=time_axis))


class Split(OnnxOpConverter):
    """TVM's becomes relax's split at the running sums of the sizes, which must increase
    strictly: a zero-size piece ("split_indices must be sorted") fails to compile. Constant
    sizes with a zero become one strided slice per piece; anything else is TVM's."""

    @classmethod
    def _pieces(cls, bb, x, sizes, axis: int):
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        pieces = [bb.emit(relax.op.strided_slice(x, [axis], [int(s)], [int(s + n)])) for s, n in zip(starts, sizes)]
        return relax.Tuple(pieces)

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        sizes = attr.get("split")
        if sizes is not None and 0 in sizes:
            return cls._pieces(bb, inputs[0], list(sizes), attr.get("axis", 0))
        return tvm_converter("Split", 1)(bb, inputs, attr, params)

    @classmethod
    def _impl_v13(cls, bb, inputs, attr, params):
        sizes = constant(inputs[1]) if len(inputs) > 1 else None
        if sizes is not None and sizes.ndim == 1 and 0 in sizes:
            return cls._pieces(bb, inputs[0], sizes.tolist(), attr.get("axis", 0))
        return tvm_converter("Split", 13)(bb, inputs, attr, params)


def _half_exp_pair(bb, x, combine):
    """combine(exp(x), exp(-x)) / 2: TVM's Sinh and Cosh lower to tirx.sinh / tirx.cosh
    intrinsics LLVM has no lowering for ("unknown intrinsic")."""
    op = relax.op
    return bb.emit(op.multiply(combine(op.exp(x), op.exp(op.negative(x))), relax.const(0.5, dtype_of(x))))


class Sinh(OnnxOpConverter):
    """(exp(x) - exp(-x)) / 2."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        return _half_exp_pair(bb, inputs[0], relax.op.subtract)


class Cosh(OnnxOpConverter):
    """(exp(x) + exp(-x)) / 2."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        return _half_exp_pair(bb, inputs[0], relax.op.add)


class IsInf(OnnxOpConverter):
    """TVM's ignores detect_positive / detect_negative."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        op, x = relax.op, inputs[0]
        found = bb.emit(op.isinf(x))
        zero = relax.const(0, dtype_of(x))
        if not attr.get("detect_positive", 1):
            found = bb.emit(op.logical_and(found, op.less(x, zero)))
        if not attr.get("detect_negative", 1):
            found = bb.emit(op.logical_and(found, op.greater(x, zero)))
        return found


class Dropout(OnnxOpConverter):
    """Outside training (no training_mode, or a constant false one) or with a constant ratio
    of 0, ONNX's Dropout is the identity and its mask all true (bool); TVM's mask is float.
    Without a mask output, or training with a real ratio (random), TVM's."""

    @classmethod
    def _impl_v12(cls, bb, inputs, attr, params):
        x = inputs[0]
        ratio = constant(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else None
        training = constant(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else np.array(False)
        random = training is None or (bool(training) and (ratio is None or float(ratio) != 0.0))
        if random or attr["tvm_custom"]["num_outputs"] == 1:
            return tvm_converter("Dropout", 12)(bb, inputs, attr, params)
        mask = relax.const(np.ones(static_shape(x, "Dropout input"), dtype=bool), "bool")
        return relax.Tuple([x, mask])


class BitCast(OnnxOpConverter):
    """Not in TVM 0.27's importer (opset 26): the same bits as another type of the same width."""

    @classmethod
    def _impl_v26(cls, bb, inputs, attr, params):
        from onnx import helper
        from tvm import te, tirx

        x = inputs[0]
        to = helper.tensor_dtype_to_np_dtype(attr["to"]).name
        source = dtype_of(x)
        if source == "bool" or to == "bool":  # one byte holding 0 or 1 either way
            return bb.emit(relax.op.astype(x, to))
        if np.dtype(source).itemsize != np.dtype(to).itemsize:
            raise ValueError(f"BitCast from {source} to {to}: the widths differ")
        return bb.emit_te(lambda t: te.compute(t.shape, lambda *i: tirx.reinterpret(to, t(*i)), name="bitcast"), x)
