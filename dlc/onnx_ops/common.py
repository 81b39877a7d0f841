"""Helpers the converters share: static shapes, dtypes, constants, and TVM's own converters."""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.ir.expr import Constant as ConstantExpr
from tvm.relax.frontend.onnx import onnx_frontend

# TVM's converter map as shipped, taken before `registered()` can put dlc's over it.
tvm_convert_map = onnx_frontend._get_convert_map


def tvm_converter(op_type: str, opset: int):
    """TVM's own converter of `op_type` for `opset` (to delegate the cases it handles)."""
    return tvm_convert_map()[op_type].get_converter(opset)


def static_shape(expr: relax.Expr, what: str) -> tuple[int, ...]:
    shape = expr.ty.shape
    try:
        return tuple(int(d) for d in shape.values)
    except (AttributeError, TypeError) as err:
        raise ValueError(f"{what} needs a static shape; got {shape}") from err


def dtype_of(expr: relax.Expr) -> str:
    return str(expr.ty.dtype.dtype)


def constant(expr: relax.Expr | None) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, ConstantExpr) else None


def attr_str(attr: dict, name: str, default: str) -> str:
    value = attr.get(name, default)
    return value.decode() if isinstance(value, bytes) else value
