"""ONNX converters dlc adds to, or puts in place of, those of TVM's Relax importer.

TVM's importer looks its converters up through `onnx_frontend._get_convert_map()` on every
node; `registered()` puts dlc's map over it while a model is imported, so TVM's importer
stays as shipped (no fork) and each class here is an ordinary `OnnxOpConverter` with
`_impl_vN` methods. What each one adds, and why TVM's own falls short, is in its docstring.

One module per family (recurrent, attention, normalization, resize, quantized, tensor_ops;
lowbit and narrow_graph: bfloat16/float8/float4/int4/int2 as integer storage; shape_inputs:
Reduce* axes, TopK k, Split sizes, Reshape shape... given at run time; common: shared
helpers). Every input dimension is fixed before import (dlc.frontend), so converters may rely
on static shapes: the recurrent nets unroll over the sequence length into plain matmuls,
Resize's odd cases become constant matrices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from dlc.onnx_ops.attention import Attention, RotaryEmbedding
from dlc.onnx_ops.common import tvm_convert_map
from dlc.onnx_ops.lowbit import CONVERTERS as NARROW_CONVERTERS
from dlc.onnx_ops.normalization import LayerNormalization, RMSNormalization
from dlc.onnx_ops.quantized import ConvInteger, QLinearConv, QLinearMatMul
from dlc.onnx_ops.recurrent import GRU, LSTM, RNN
from dlc.onnx_ops.resize import Resize
from dlc.onnx_ops.shape_inputs import ExpectInput, OverAxes
from dlc.onnx_ops.tensor_ops import (
    BitCast, Celu, Constant, Cosh, CumProd, Dropout, IsInf, LpNormalization, OneHot, Pow, ReduceMax, ReduceMin,
    ReverseSequence, Sinh, Split,
)

CONVERTERS: dict[str, type[OnnxOpConverter]] = {
    "RNN": RNN,
    "GRU": GRU,
    "LSTM": LSTM,
    "LayerNormalization": LayerNormalization,
    "Attention": Attention,
    "Resize": Resize,
    "QLinearMatMul": QLinearMatMul,
    "QLinearConv": QLinearConv,
    "ConvInteger": ConvInteger,
    "RMSNormalization": RMSNormalization,
    "RotaryEmbedding": RotaryEmbedding,
    "Pow": Pow,
    "LpNormalization": LpNormalization,
    "CumProd": CumProd,
    "Celu": Celu,
    "ReduceMax": ReduceMax,
    "ReduceMin": ReduceMin,
    "OneHot": OneHot,
    "Constant": Constant,
    "ReverseSequence": ReverseSequence,
    "Split": Split,
    "Sinh": Sinh,
    "Cosh": Cosh,
    "IsInf": IsInf,
    "Dropout": Dropout,
    "BitCast": BitCast,
    **NARROW_CONVERTERS,
    "OverAxes": OverAxes,
    "ExpectInput": ExpectInput,
}




def convert_map() -> dict[str, type[OnnxOpConverter]]:
    """TVM's converters with dlc's over them."""
    return {**tvm_convert_map(), **CONVERTERS}


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """TVM's importer sees dlc's converters while the block runs."""
    saved = onnx_frontend._get_convert_map
    onnx_frontend._get_convert_map = convert_map
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = saved
