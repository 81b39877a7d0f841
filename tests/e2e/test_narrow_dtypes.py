"""ONNX's narrow dtypes (bfloat16, float8, float4, int4, int2) end to end: dlc.onnx_ops.lowbit's
bit-arithmetic kernels against ml_dtypes, and small models through dlc's whole pipeline
against ONNX's reference (onnxruntime has no kernels for most of these)."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from tvm import relax

from dlc import build, frontend, pipeline
from dlc.dtypes import NARROW_TYPES, from_storage, to_storage
from dlc.errors import InputError
from dlc.onnx_ops import lowbit
from dlc.runtime import load_library, read_npz
from dlc.target import parse_target
from tests.models import save_graph

HOST = parse_target("host")


def _floats() -> np.ndarray:
    """Random bit patterns (NaNs, infinities, subnormals) and dense values across every
    format's range, ties included."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=50000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 448, 464, 480, 240, 57344, 61440,
                      6, 7, 0.25, 0.75, 1e-7, -1e-7, 1e-45, 3.4e38], np.float32)
    dense = np.linspace(-700, 700, 28001, dtype=np.float32)
    tiny = np.geomspace(1e-9, 1.0, 10000).astype(np.float32)
    return np.concatenate([bits, edges, dense, tiny, -tiny])


@pytest.fixture(scope="module")
def round_trip():
    """format, saturate -> (encoded bits, decoded float32) of _floats(), compiled once each."""
    x = _floats()
    cache = {}

    def run(dtype: str, saturate: bool):
        if (dtype, saturate) not in cache:
            bb = relax.BlockBuilder()
            arg = relax.Var("x", relax.TensorType(x.shape, "float32"))
            with bb.function("main", [arg]):
                with bb.dataflow():
                    code = lowbit.encode(bb, arg, dtype, saturate=saturate)
                    value = lowbit.decode(bb, code, dtype)
                    out = bb.emit_output(relax.Tuple([code, value]))
                bb.emit_func_output(out)
            vm = relax.VirtualMachine(tvm.compile(bb.get(), target="llvm"), tvm.cpu())
            code, value = vm["main"](tvm.runtime.tensor(x))
            cache[dtype, saturate] = (code.numpy(), value.numpy())
        return x, *cache[dtype, saturate]

    return run


@pytest.mark.parametrize("saturate", [False, True])
@pytest.mark.parametrize("dtype", list(lowbit.FORMATS))
def test_encode_and_decode_match_ml_dtypes_bit_for_bit(round_trip, dtype, saturate):
    x, code, value = round_trip(dtype, saturate)
    narrow = getattr(ml_dtypes, dtype)
    with np.errstate(all="ignore"):
        # ONNX's saturate (float8 only): clip to the finite range first, NaN stays NaN
        want = numpy_helper.saturate_cast(x, narrow) if saturate and dtype.startswith("float8") else x.astype(narrow)
    want_bits = want.view(NARROW_TYPES[dtype].storage)
    wrong = np.flatnonzero(code != want_bits)
    assert wrong.size == 0, f"{x[wrong[:5]]} -> {code[wrong[:5]]}, expected {want_bits[wrong[:5]]}"
    exact = want.astype(np.float32)
    same = (value.view(np.uint32) == exact.view(np.uint32)) | (np.isnan(value) & np.isnan(exact))
    assert same.all(), f"decoded {value[~same][:5]}, expected {exact[~same][:5]}"


def test_storage_round_trip_keeps_int4_signs():
    values = np.arange(-8, 8).astype(ml_dtypes.int4)
    storage = to_storage(values, "int4")
    assert storage.dtype == np.int8 and storage.tolist() == list(range(-8, 8))
    assert from_storage(storage, "int4").tolist() == values.tolist()
    bf16 = np.array([1.5, -np.inf], ml_dtypes.bfloat16)
    assert to_storage(bf16, "bfloat16").tolist() == [0x3FC0, 0xFF80]


def _model(path: Path, nodes, inputs, outputs, initializers=(), opset: int = 23) -> Path:
    return save_graph(path, nodes, inputs, outputs, initializers, opset)


def _dlc(path: Path, feeds: dict):
    optimized = pipeline.optimize(frontend.import_model(frontend.load_model(path)), HOST)
    built = build.build(optimized, HOST, output=path.with_suffix(".so"))
    return load_library(built.library), built


def _reference(path: Path, feeds: dict) -> dict:
    model = onnx.load(str(path))
    values = ReferenceEvaluator(model).run(None, feeds)
    return dict(zip([o.name for o in model.graph.output], values))


def _same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype.name in ("bfloat16",) or got.dtype.name.startswith("float"):
        np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))
    else:
        np.testing.assert_array_equal(got.astype(np.int64), want.astype(np.int64))


def test_casts_through_narrow_types_match_the_reference(tmp_path):
    """float32 -> bfloat16 -> float32, float32 -> float8 (no saturation) and -> int4 (wraps),
    float8 input -> float16; the manifest records the narrow dtypes."""
    value = helper.make_tensor_value_info
    x = np.array([[0.47892547, 1e6, -3.7, np.nan, -np.inf, 2.5e-3, 9.0, -9.0]], np.float32)
    f8 = np.array([[1, -0.5, 448, np.nan, 0.001953125, 3, -2, 0]], np.float32).astype(ml_dtypes.float8_e4m3fn)
    path = _model(tmp_path / "casts.onnx", [
        helper.make_node("Cast", ["x"], ["bf16"], to=TensorProto.BFLOAT16),
        helper.make_node("Cast", ["bf16"], ["back"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["x"], ["e5m2"], to=TensorProto.FLOAT8E5M2, saturate=0),
        helper.make_node("Cast", ["x"], ["i4"], to=TensorProto.INT4),
        helper.make_node("Cast", ["f8"], ["half"], to=TensorProto.FLOAT16),
    ], [value("x", TensorProto.FLOAT, [1, 8]), value("f8", TensorProto.FLOAT8E4M3FN, [1, 8])],
        [value("bf16", TensorProto.BFLOAT16, [1, 8]), value("back", TensorProto.FLOAT, [1, 8]),
         value("e5m2", TensorProto.FLOAT8E5M2, [1, 8]), value("i4", TensorProto.INT4, [1, 8]),
         value("half", TensorProto.FLOAT16, [1, 8])])
    feeds = {"x": x, "f8": f8}
    library, built = _dlc(path, feeds)
    assert [spec.dtype for spec in library.manifest.inputs] == ["float32", "float8_e4m3fn"]
    assert [spec.dtype for spec in library.manifest.outputs] == [
        "bfloat16", "float32", "float8_e5m2", "int4", "float16"]
    got, want = library.run(feeds), _reference(path, feeds)
    for name in want:
        _same(got[name], want[name])
    with pytest.raises(InputError, match="takes float8_e4m3fn"):
        library.run({"x": x, "f8": f8.astype(np.float32)})
    np.savez(tmp_path / "in.npz", **feeds)  # numpy writes ml_dtypes' arrays as raw bytes
    from_file = library.run(read_npz(tmp_path / "in.npz"))
    np.testing.assert_array_equal(from_file["half"], got["half"])


def test_narrow_quantize_and_dequantize_match_the_reference(tmp_path):
    """int4 QuantizeLinear per axis with a zero point, float8 DequantizeLinear, and blocked
    uint8 quantisation (TVM's converters take none of these)."""
    value = helper.make_tensor_value_info
    scale = numpy_helper.from_array(np.array([2.0, 3.0, 4.0], np.float32), "scale")
    zero = helper.make_tensor("zero", TensorProto.INT4, [3], [1, -1, 0])
    block_scale = numpy_helper.from_array(np.array([[1.0, 2.0], [0.5, 4.0], [3.0, 1.5]], np.float32), "bscale")
    block_zero = numpy_helper.from_array(np.array([[1, 2], [3, 4], [5, 6]], np.uint8), "bzero")
    path = _model(tmp_path / "qdq.onnx", [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], axis=0),
        helper.make_node("DequantizeLinear", ["f8", "half_scale"], ["dq"]),
        helper.make_node("QuantizeLinear", ["x", "bscale", "bzero"], ["blocked"], axis=1, block_size=2),
    ], [value("x", TensorProto.FLOAT, [3, 4]), value("f8", TensorProto.FLOAT8E5M2, [5]),
        value("half_scale", TensorProto.FLOAT16, [])],
        [value("q", TensorProto.INT4, [3, 4]), value("dq", TensorProto.FLOAT16, [5]),
         value("blocked", TensorProto.UINT8, [3, 4])],
        [scale, zero, block_scale, block_zero])
    feeds = {
        "x": np.array([[0.0, 2.5, 4.8, 8.6], [-30, -20, 6, 9], [12, 15, -16, 40]], np.float32),
        "f8": np.array([0, 1.5, -3, 57344, np.nan], np.float32).astype(ml_dtypes.float8_e5m2),
        "half_scale": np.array(0.5, np.float16),
    }
    library, _ = _dlc(path, feeds)
    got, want = library.run(feeds), _reference(path, feeds)
    for name in want:
        _same(got[name], want[name])


def test_bfloat16_arithmetic_runs_in_float32_between_decode_and_encode(tmp_path):
    value = helper.make_tensor_value_info
    path = _model(tmp_path / "bf16.onnx", [
        helper.make_node("MatMul", ["a", "b"], ["ab"]),
        helper.make_node("Transpose", ["ab"], ["y"], perm=[1, 0]),
    ], [value("a", TensorProto.BFLOAT16, [2, 3]), value("b", TensorProto.BFLOAT16, [3, 4])],
        [value("y", TensorProto.BFLOAT16, [4, 2])])
    rng = np.random.default_rng(3)
    feeds = {"a": rng.standard_normal((2, 3)).astype(ml_dtypes.bfloat16),
             "b": rng.standard_normal((3, 4)).astype(ml_dtypes.bfloat16)}
    library, _ = _dlc(path, feeds)
    got = library.run(feeds)["y"]
    want = (feeds["a"].astype(np.float32) @ feeds["b"].astype(np.float32)).T.astype(ml_dtypes.bfloat16)
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))
