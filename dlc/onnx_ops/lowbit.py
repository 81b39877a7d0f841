"""ONNX's narrow dtypes (bfloat16, float8, float4, int4, int2) computed on as integer storage.

TVM 0.27 cannot compute with these on a CPU (dlc.dtypes says what breaks). Before import,
dlc.onnx_ops.narrow_graph rewrites the graph so that every narrow tensor is its integer
storage (dlc.dtypes.NARROW_TYPES) and every place a narrow value is converted is an explicit
node of dlc's own (domain "dlc"), whose converter here does the conversion on bits:

- `Decode`: narrow float storage -> float32, exactly.
- `Encode`: float -> narrow float storage, rounded to nearest even, with ONNX's `saturate`
  (and ml_dtypes' rules for NaN, infinity and overflow, which ONNX's reference uses).
- `WrapInt`: number -> int4/uint4/int2/uint2 storage, truncated and wrapped as ml_dtypes does.
- `ReferenceQuantizeLinear` / `ReferenceDequantizeLinear`: ONNX's reference semantics, for a
  narrow quantised side and for blocked quantisation (TVM 0.27 refuses both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper
from tvm import relax, te, tirx
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from dlc.dtypes import NARROW_TYPES
from dlc.onnx_ops.common import attr_str, dtype_of, static_shape

DOMAIN = "dlc"
OPAQUE_PATTERN = 8  # relax's OpPatternKind.kOpaque


# ---------------------------------------------------------------- the float formats


@dataclass(frozen=True)
class FloatFormat:
    exponent_bits: int
    mantissa_bits: int
    bias: int
    max_code: int  # the largest finite magnitude, as bits without the sign
    inf_code: int | None  # the magnitude of infinity, None when the format has none
    nan_code: int | None  # NaN's bits (sign included where it is kept); None: no NaN
    unsigned_zero: bool = False  # fnuz: 0x80 is NaN, so -0 becomes +0

    @property
    def sign_shift(self) -> int:
        return self.exponent_bits + self.mantissa_bits


FORMATS = {
    "bfloat16": FloatFormat(8, 7, 127, 0x7F7F, 0x7F80, 0x7FC0),
    "float8_e4m3fn": FloatFormat(4, 3, 7, 0x7E, None, 0x7F),
    "float8_e4m3fnuz": FloatFormat(4, 3, 8, 0x7F, None, 0x80, unsigned_zero=True),
    "float8_e5m2": FloatFormat(5, 2, 15, 0x7B, 0x7C, 0x7E),
    "float8_e5m2fnuz": FloatFormat(5, 2, 16, 0x7F, None, 0x80, unsigned_zero=True),
    "float4_e2m1fn": FloatFormat(2, 1, 1, 0x7, None, None),
}


def _i64(value: int):
    return tirx.const(value, "int64")


class _Lets:
    """Names intermediate values with Lets: the bodies below use each value several times,
    and as a plain tree (no sharing) the expression, and TVM's simplifier's time on it, grows
    exponentially with depth (a float8 encode took 20-100 s to compile)."""

    def __init__(self) -> None:
        self.bindings: list[tuple[tirx.Var, tirx.PrimExpr]] = []

    def __call__(self, name: str, value):
        var = tirx.Var(name, value.ty)
        self.bindings.append((var, value))
        return var

    def around(self, body):
        for var, value in reversed(self.bindings):
            body = tirx.Let(var, value, body)
        return body


def _encode_element(x, fmt: FloatFormat, saturate: bool, storage: str):
    """float32 `x` -> the format's bits, rounded to nearest even (integer arithmetic only, in
    int64 so no step can overflow)."""
    let = _Lets()
    bits = let("bits", tirx.reinterpret("int32", x).astype("int64"))
    sign = let("sign", (bits >> _i64(31)) & _i64(1))
    magnitude = let("magnitude", bits & _i64(0x7FFFFFFF))
    exponent = let("exponent", magnitude >> _i64(23))
    mantissa = magnitude & _i64(0x7FFFFF)
    shift = 23 - fmt.mantissa_bits
    # Normal in the target: round the float32 bits to the target's mantissa width (a carry
    # into the exponent is the right answer), then move the exponent's bias.
    rounded = (magnitude + _i64((1 << (shift - 1)) - 1) + ((magnitude >> _i64(shift)) & _i64(1))) >> _i64(shift)
    normal = let("normal", rounded - _i64((127 - fmt.bias) << fmt.mantissa_bits))
    # Subnormal (or zero) in the target: the full significand shifted to the target's
    # subnormal step, rounded to nearest even; a result of 1 << M is the smallest normal.
    # The shift is clamped to [1, 30] because both arms of the select are evaluated.
    significand = let("significand", mantissa | tirx.Select(exponent > _i64(0), _i64(1 << 23), _i64(0)))
    exp_eff = tirx.max(exponent, _i64(1))
    sub_shift = let("sub_shift", tirx.max(tirx.min(_i64(151 - fmt.bias - fmt.mantissa_bits) - exp_eff, _i64(30)), _i64(1)))
    quotient = let("quotient", significand >> sub_shift)
    remainder = let("remainder", significand & ((_i64(1) << sub_shift) - _i64(1)))
    half = let("half", _i64(1) << (sub_shift - _i64(1)))
    round_up = tirx.Or(remainder > half, tirx.And(remainder == half, (quotient & _i64(1)) == _i64(1)))
    subnormal = let("subnormal", quotient + tirx.Select(round_up, _i64(1), _i64(0)))
    code = let("code", tirx.Select(exponent >= _i64(128 - fmt.bias), normal, subnormal))
    if fmt.inf_code is not None and not saturate:
        code = tirx.min(code, _i64(fmt.inf_code))  # overflow (and infinity) -> infinity
    elif fmt.nan_code is not None and not saturate:
        code = tirx.Select(code > _i64(fmt.max_code), _i64(-1), code)  # overflow -> NaN, below
    else:
        code = tirx.min(code, _i64(fmt.max_code))  # saturate (float4 always does)
    code = let("limited", code)
    signed = code | (sign << _i64(fmt.sign_shift))
    if fmt.unsigned_zero:
        signed = tirx.Select(code == _i64(0), _i64(0), signed)
    is_nan = magnitude > _i64(0x7F800000)
    if fmt.nan_code is not None:
        nan = _i64(fmt.nan_code) if fmt.unsigned_zero else _i64(fmt.nan_code) | (sign << _i64(fmt.sign_shift))
        signed = tirx.Select(tirx.Or(is_nan, code < _i64(0)), nan, signed)
    else:  # float4 has no NaN: ml_dtypes (ONNX's reference) writes +NaN as -0 and -NaN as +0
        signed = tirx.Select(is_nan, (_i64(1) - sign) << _i64(fmt.sign_shift), signed)
    return let.around(signed.astype(storage))


def _decode_element(code, fmt: FloatFormat):
    """The format's bits -> float32, exactly."""
    let = _Lets()
    m_bits, e_bits = fmt.mantissa_bits, fmt.exponent_bits
    c = let("code", code.astype("int64"))
    sign = let("sign", (c >> _i64(fmt.sign_shift)) & _i64(1))
    exponent = let("exponent", (c >> _i64(m_bits)) & _i64((1 << e_bits) - 1))
    mantissa = let("mantissa", c & _i64((1 << m_bits) - 1))

    def from_bits(value):
        return tirx.reinterpret("float32", value.astype("uint32"))

    normal = from_bits((sign << _i64(31)) | ((exponent + _i64(127 - fmt.bias)) << _i64(23))
                       | (mantissa << _i64(23 - m_bits)))
    step = tirx.const(2.0 ** (1 - fmt.bias - m_bits), "float32")
    tiny = mantissa.astype("float32") * step
    subnormal = tirx.Select(sign == _i64(1), -tiny, tiny)
    value = let("value", tirx.Select(exponent == _i64(0), subnormal, normal))
    nan = from_bits(_i64(0x7FC00000))
    if fmt.unsigned_zero:
        value = tirx.Select(c == _i64(0x80), nan, value)
    elif fmt.inf_code is not None:  # IEEE-like: all-ones exponent is infinity or NaN
        all_ones = exponent == _i64((1 << e_bits) - 1)
        inf = from_bits((sign << _i64(31)) | _i64(0x7F800000))
        value = tirx.Select(all_ones, tirx.Select(mantissa == _i64(0), inf, nan), value)
    elif fmt.nan_code is not None:  # e4m3fn: S.1111.111 is NaN, there is no infinity
        value = tirx.Select((c & _i64(0x7F)) == _i64(0x7F), nan, value)
    return let.around(value)


def encode(bb, x: relax.Expr, dtype: str, *, saturate: bool) -> relax.Expr:
    """Float tensor -> storage of narrow float `dtype`. ONNX's `saturate` applies to float8
    only: bfloat16 overflows to infinity, float4 (no infinity) always saturates."""
    fmt, storage = FORMATS[dtype], NARROW_TYPES[dtype].storage
    saturate = (saturate and dtype.startswith("float8")) or dtype == "float4_e2m1fn"
    if isinstance(x.ty, relax.ShapeType):  # the importer keeps Shape's result as a shape
        x = bb.emit(relax.op.shape_to_tensor(x))
    if dtype_of(x) != "float32":
        x = bb.emit(relax.op.astype(x, "float32"))
    return _emit_elementwise(bb, x, lambda v: _encode_element(v, fmt, saturate, storage), f"encode_{dtype}")


def decode(bb, code: relax.Expr, dtype: str) -> relax.Expr:
    """Storage of narrow float `dtype` -> float32."""
    fmt = FORMATS[dtype]
    return _emit_elementwise(bb, code, lambda v: _decode_element(v, fmt), f"decode_{dtype}")


def _emit_elementwise(bb, x: relax.Expr, element, name: str) -> relax.Expr:
    """A kernel applying `element` to each element of x, marked opaque so that FuseOps keeps
    it apart: fused and inlined, a chain of encodes and decodes (bfloat16 Celu's function
    body) becomes one expression whose size multiplies at each step, and the simplifier
    never finishes."""
    call = bb.call_te(lambda t: te.compute(t.shape, lambda *i: element(t(*i)), name=name), x, primfunc_name_hint=name)
    kernel = call.args[0]
    bb.update_func(kernel, bb.get()[kernel].with_attr("op_pattern", OPAQUE_PATTERN))
    return bb.emit(call)


def wrap_int(bb, x: relax.Expr, dtype: str) -> relax.Expr:
    """Number -> int4/uint4/int2/uint2 storage: truncated toward zero, then the low bits kept
    (two's complement), as ml_dtypes' astype does."""
    op = relax.op
    bits = {"int4": 4, "uint4": 4, "int2": 2, "uint2": 2}[dtype]
    value = bb.emit(op.astype(x, "int64"))
    low = op.bitwise_and(value, relax.const((1 << bits) - 1, "int64"))
    if dtype.startswith("int"):  # sign-extend the low bits
        half = relax.const(1 << (bits - 1), "int64")
        low = op.subtract(op.bitwise_xor(low, half), half)
    return bb.emit(op.astype(bb.emit(low), NARROW_TYPES[dtype].storage))


# ---------------------------------------------------------------- converters


def _narrow(attr: dict) -> str:
    dtype = attr_str(attr, "narrow", "")
    if dtype not in NARROW_TYPES:
        raise ValueError(f"dlc node without a narrow dtype (narrow={dtype!r})")
    return dtype


class Decode(OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        return decode(bb, inputs[0], _narrow(attr))


class Encode(OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        return encode(bb, inputs[0], _narrow(attr), saturate=attr.get("saturate", 1) != 0)


class WrapInt(OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        return wrap_int(bb, inputs[0], _narrow(attr))


def _broadcast_param(bb, param: relax.Expr, x_shape: tuple[int, ...], axis: int, block_size: int) -> relax.Expr:
    """A scale or zero point made to broadcast against x, as ONNX's reference does: a scalar
    as is, a 1-D one along `axis`, a blocked one repeated `block_size` times along `axis`."""
    shape = static_shape(param, "quantisation parameter")
    rank = len(x_shape)
    axis = axis + rank if axis < 0 else axis
    if int(np.prod(shape)) == 1:
        return bb.emit(relax.op.reshape(param, []))
    if block_size:
        repeated = bb.emit(relax.op.repeat(param, block_size, axis=axis))
        return bb.emit(relax.op.strided_slice(repeated, [axis], [0], [x_shape[axis]]))
    return bb.emit(relax.op.reshape(param, [shape[0] if a == axis else 1 for a in range(rank)]))


def _quantized(attr: dict) -> str:
    dtype = attr_str(attr, "quantized", "")
    if dtype not in NARROW_TYPES and dtype not in ("int8", "uint8", "int16", "uint16"):
        raise ValueError(f"dlc quantisation node with quantized={dtype!r}")
    return dtype


def _integer_range(dtype: str) -> tuple[int, int]:
    if dtype in NARROW_TYPES:
        bits = 4 if "4" in dtype else 2
        return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if dtype.startswith("int") else (0, (1 << bits) - 1)
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _qdq_operands(inputs, attr: dict, what: str):
    """(narrow dtype, x, scale, zero point or None, x's shape, axis, block size) of a
    QuantizeLinear / DequantizeLinear node."""
    x, scale = inputs[0], inputs[1]
    zero_point = inputs[2] if len(inputs) > 2 else None
    return (_quantized(attr), x, scale, zero_point, static_shape(x, f"{what} input"), attr.get("axis", 1),
            attr.get("block_size", 0))


class QuantizeLinear(OnnxOpConverter):
    """ONNX's reference, for narrow outputs and blocked quantisation (TVM 0.27 takes neither):
    x / scale, then for integers round half to even, add the zero point and clip; for float8
    cast (saturating or not, the zero point unused); for float4 add the zero point and cast,
    saturating."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        op = relax.op
        dtype, x, scale, zero_point, x_shape, axis, block_size = _qdq_operands(inputs, attr, "QuantizeLinear")
        scale = _broadcast_param(bb, bb.emit(op.astype(scale, "float32")), x_shape, axis, block_size)
        value = bb.emit(op.divide(op.astype(x, "float32"), scale))
        narrow = NARROW_TYPES.get(dtype)
        if narrow is None or not narrow.is_float:
            value = bb.emit(op.round(value))
            if zero_point is not None:
                zero = _broadcast_param(bb, zero_point, x_shape, axis, block_size)
                value = bb.emit(op.add(value, op.astype(zero, "float32")))
            low, high = _integer_range(dtype)
            storage = narrow.storage if narrow else dtype
            return bb.emit(op.astype(bb.emit(op.clip(value, float(low), float(high))), storage))
        if dtype == "float4_e2m1fn" and zero_point is not None:
            zero = _broadcast_param(bb, decode(bb, zero_point, dtype), x_shape, axis, block_size)
            value = bb.emit(op.add(value, zero))
        return encode(bb, value, dtype, saturate=attr.get("saturate", 1) != 0)


class DequantizeLinear(OnnxOpConverter):
    """ONNX's reference, for narrow inputs and blocked quantisation: (x - zero point) * scale
    for integers; x * scale for float8 and float4 (their zero point must be 0); the result in
    the scale's dtype or `output_dtype`."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        op = relax.op
        dtype, x, scale, zero_point, x_shape, axis, block_size = _qdq_operands(inputs, attr, "DequantizeLinear")
        out_dtype = dtype_of(scale)
        if attr.get("output_dtype", 0):
            out_dtype = helper.tensor_dtype_to_np_dtype(attr["output_dtype"]).name
        if dtype in NARROW_TYPES and NARROW_TYPES[dtype].is_float:
            value = decode(bb, x, dtype)
        else:
            value = bb.emit(op.astype(x, "float32"))
            if zero_point is not None:
                zero = _broadcast_param(bb, zero_point, x_shape, axis, block_size)
                value = bb.emit(op.subtract(value, op.astype(zero, "float32")))
        scale = _broadcast_param(bb, bb.emit(op.astype(scale, "float32")), x_shape, axis, block_size)
        return bb.emit(op.astype(bb.emit(op.multiply(value, scale)), out_dtype))


CONVERTERS: dict[str, type[OnnxOpConverter]] = {
    "Decode": Decode,
    "Encode": Encode,
    "WrapInt": WrapInt,
    "ReferenceQuantizeLinear": QuantizeLinear,
    "ReferenceDequantizeLinear": DequantizeLinear,
}
