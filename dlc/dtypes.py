"""ONNX's narrow dtypes (bfloat16, float8, float4, int4, int2) and how a dlc library carries them.

TVM 0.27's CPU code generator gets these wrong (its float8 casts ignore NaN, subnormals and
the fnuz formats; int4 tensors fail with "bits % 8 == 0"), so dlc never hands them to TVM:
inside the library each is an ordinary integer tensor holding its storage, one element per
byte or half-word (bfloat16 as its uint16 bits, a float8/float4 as its uint8 bits, int4/int2
as their int8/uint8 value), and the converters in `dlc.onnx_ops.lowbit` do the arithmetic on
bits. The manifest records the ONNX dtype, and `dlc.runtime` converts arrays of ml_dtypes'
types to and from the storage at the library's boundary. Imports numpy and ml_dtypes only.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class NarrowType:
    name: str  # ml_dtypes' name, as a manifest records it
    onnx_type: int  # onnx.TensorProto's elem type
    storage: str  # the integer dtype the library holds it in
    is_float: bool


# ONNX TensorProto elem types (onnx.TensorProto.BFLOAT16 etc.), written out so the runtime
# need not import onnx.
NARROW_TYPES: dict[str, NarrowType] = {
    t.name: t
    for t in (
        NarrowType("bfloat16", 16, "uint16", True),
        NarrowType("float8_e4m3fn", 17, "uint8", True),
        NarrowType("float8_e4m3fnuz", 18, "uint8", True),
        NarrowType("float8_e5m2", 19, "uint8", True),
        NarrowType("float8_e5m2fnuz", 20, "uint8", True),
        NarrowType("uint4", 21, "uint8", False),
        NarrowType("int4", 22, "int8", False),
        NarrowType("float4_e2m1fn", 23, "uint8", True),
        NarrowType("uint2", 25, "uint8", False),
        NarrowType("int2", 26, "int8", False),
    )
}
NARROW_BY_ONNX_TYPE = {t.onnx_type: t for t in NARROW_TYPES.values()}


def is_narrow(dtype: str) -> bool:
    return dtype in NARROW_TYPES


def numpy_dtype(dtype: str) -> np.dtype:
    """numpy's dtype for a manifest's dtype name (ml_dtypes' types included)."""
    if dtype in NARROW_TYPES:
        return np.dtype(getattr(ml_dtypes, dtype))
    return np.dtype(dtype)


def to_storage(array: np.ndarray, dtype: str) -> np.ndarray:
    """An array of narrow `dtype` as the integer storage the library takes."""
    narrow = NARROW_TYPES[dtype]
    array = np.asarray(array, dtype=numpy_dtype(dtype), order="C")
    if narrow.is_float:
        return array.view(narrow.storage)
    # ml_dtypes' int4 bytes hold the value's low bits, not its sign extension: convert by value.
    return array.astype(narrow.storage)


def from_storage(array: np.ndarray, dtype: str) -> np.ndarray:
    """The library's integer storage as an array of narrow `dtype`."""
    narrow = NARROW_TYPES[dtype]
    array = np.asarray(array, dtype=narrow.storage)
    if narrow.is_float:
        return array.view(numpy_dtype(dtype))
    return array.astype(numpy_dtype(dtype))
