"""dlc's own ONNX converters (dlc.onnx_ops) against ONNX Runtime on small onnx.helper models,
and the real model that needed them (silero VAD op15: LSTM)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dlc import build, frontend, pipeline
from dlc.runtime import load_library
from dlc.target import parse_target
from dlc.zoo import MODELS
from tests.conftest import run_dlc
from tests.models import save_graph as _save

HOST = parse_target("host")




def _dlc_and_ort(path: Path, feeds: dict[str, np.ndarray]) -> tuple[dict, dict]:
    optimized = pipeline.optimize(frontend.import_model(frontend.load_model(path)), HOST)
    library = build.build(optimized, HOST, output=path.with_suffix(".so")).library
    got = load_library(library).run(feeds)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    return got, want


def _assert_close(got: dict, want: dict, atol: float = 1e-5) -> None:
    assert set(got) == set(want)
    for name in want:
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=atol, err_msg=name)


def _recurrent(path: Path, op: str, gates: int, *, direction: str, seq: int = 5, batch: int = 3,
               size: int = 4, hidden: int = 6, extra_inputs: int = 0, **attrs) -> Path:
    """X, W, R, B as the model's inputs/initializers, sequence_lens as an input."""
    rng = np.random.default_rng(7)
    dirs = 2 if direction == "bidirectional" else 1
    w = rng.standard_normal((dirs, gates * hidden, size)).astype(np.float32) * 0.5
    r = rng.standard_normal((dirs, gates * hidden, hidden)).astype(np.float32) * 0.5
    b = rng.standard_normal((dirs, 2 * gates * hidden)).astype(np.float32) * 0.5
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R"), numpy_helper.from_array(b, "B")]
    node_inputs = ["X", "W", "R", "B", "lens", "h0"]
    if op == "LSTM":
        c0 = rng.standard_normal((dirs, batch, hidden)).astype(np.float32)
        p = rng.standard_normal((dirs, 3 * hidden)).astype(np.float32) * 0.5
        inits += [numpy_helper.from_array(c0, "c0"), numpy_helper.from_array(p, "P")]
        node_inputs += ["c0", "P"]
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, node_inputs, outputs, hidden_size=hidden, direction=direction, **attrs)
    value = helper.make_tensor_value_info
    return _save(
        path, [node],
        [value("X", TensorProto.FLOAT, [seq, batch, size]), value("lens", TensorProto.INT32, [batch]),
         value("h0", TensorProto.FLOAT, [dirs, batch, hidden])],
        [value("Y", TensorProto.FLOAT, [seq, dirs, batch, hidden])]
        + [value(name, TensorProto.FLOAT, [dirs, batch, hidden]) for name in outputs[1:]],
        inits,
    )


def _recurrent_feeds(seq=5, batch=3, size=4, hidden=6, dirs=1, lens=(5, 2, 4)) -> dict:
    rng = np.random.default_rng(11)
    return {
        "X": rng.standard_normal((seq, batch, size)).astype(np.float32),
        "lens": np.array(lens, dtype=np.int32),
        "h0": rng.standard_normal((dirs, batch, hidden)).astype(np.float32),
    }


@pytest.mark.parametrize("direction", [  # bidirectional runs both directions; the others: -m slow
    pytest.param("forward", marks=pytest.mark.slow), pytest.param("reverse", marks=pytest.mark.slow),
    "bidirectional",
])
def test_lstm_with_peepholes_and_ragged_lengths(tmp_path, direction):
    """Past an entry's length its state holds and its outputs are zero (ORT's semantics)."""
    path = _recurrent(tmp_path / f"lstm_{direction}.onnx", "LSTM", 4, direction=direction)
    got, want = _dlc_and_ort(path, _recurrent_feeds(dirs=2 if direction == "bidirectional" else 1))
    _assert_close(got, want)


@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_gru_both_reset_forms(tmp_path, linear_before_reset):
    path = _recurrent(tmp_path / f"gru_{linear_before_reset}.onnx", "GRU", 3, direction="bidirectional",
                      linear_before_reset=linear_before_reset)
    got, want = _dlc_and_ort(path, _recurrent_feeds(dirs=2))
    _assert_close(got, want)


def test_rnn_with_clip_and_own_activation(tmp_path):
    path = _recurrent(tmp_path / "rnn.onnx", "RNN", 1, direction="forward", clip=0.8,
                      activations=["Relu"])
    got, want = _dlc_and_ort(path, _recurrent_feeds(lens=(5, 5, 3)))
    _assert_close(got, want)


def test_silero_vad_op15_compiles_verifies_and_streams(zoo_model, tmp_path):
    """The op15 model's LSTM (after its Ifs fold), state fed back chunk by chunk as a caller
    streams audio, agrees with ONNX Runtime on every chunk; `sr` is the int64 scalar."""
    model = zoo_model("silero-vad-op15")
    args = ["compile", str(model), "-o", str(tmp_path / "vad.so"), "--input-value", "sr=16000"]
    for name, shape in MODELS["silero-vad-op15"].input_shapes.items():
        args += ["--input-shape", f"{name}:{'x'.join(map(str, shape))}"]
    result = run_dlc(*args)
    assert result.returncode == 0, result.stderr
    assert "verified against ONNX Runtime" in result.stderr and "MISMATCH" not in result.stdout

    library = load_library(tmp_path / "vad.so")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    t = np.arange(4 * 512) / 16000
    audio = (0.5 * np.sin(2 * np.pi * 220 * t) * (t > 0.05)).astype(np.float32)  # silence, then a tone
    ours = theirs = np.zeros((2, 1, 128), np.float32)
    sr = np.array(16000, dtype=np.int64)
    for chunk in audio.reshape(4, 1, 512):
        got = library.run({"input": chunk, "state": ours, "sr": sr})
        prob, theirs = session.run(None, {"input": chunk, "state": theirs, "sr": sr})
        np.testing.assert_allclose(got["output"], prob, atol=1e-5)
        np.testing.assert_allclose(got["stateN"], theirs, atol=1e-5)
        ours = got["stateN"]


def test_layer_normalization_mean_and_inv_std_dev_outputs(tmp_path):
    value = helper.make_tensor_value_info
    rng = np.random.default_rng(3)
    path = _save(
        tmp_path / "ln.onnx",
        [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y", "mean", "inv"], axis=1, epsilon=1e-3)],
        [value("x", TensorProto.FLOAT, [2, 3, 4])],
        [value("y", TensorProto.FLOAT, [2, 3, 4]), value("mean", TensorProto.FLOAT, [2, 1, 1]),
         value("inv", TensorProto.FLOAT, [2, 1, 1])],
        [numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "g"),
         numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "b")],
    )
    got, want = _dlc_and_ort(path, {"x": rng.standard_normal((2, 3, 4)).astype(np.float32)})
    _assert_close(got, want)


def test_standard_attention_3d_grouped_query_causal_with_cache(tmp_path):
    """ONNX's own Attention (not the com.microsoft one TVM converts under the same name):
    3D inputs split into 4 query / 2 key-value heads, a KV cache, a causal frontier offset by
    the cache length and a boolean mask, as a decoder step runs it."""
    value = helper.make_tensor_value_info
    batch, q_len, past, heads, kv_heads, size = 2, 3, 4, 4, 2, 8
    node = helper.make_node(
        "Attention", ["q", "k", "v", "mask", "past_k", "past_v"], ["y", "present_k", "present_v"],
        q_num_heads=heads, kv_num_heads=kv_heads, is_causal=1,
    )
    path = _save(
        tmp_path / "attention.onnx", [node],
        [value("q", TensorProto.FLOAT, [batch, q_len, heads * size]),
         value("k", TensorProto.FLOAT, [batch, q_len, kv_heads * size]),
         value("v", TensorProto.FLOAT, [batch, q_len, kv_heads * size]),
         value("mask", TensorProto.BOOL, [q_len, past + q_len]),
         value("past_k", TensorProto.FLOAT, [batch, kv_heads, past, size]),
         value("past_v", TensorProto.FLOAT, [batch, kv_heads, past, size])],
        [value("y", TensorProto.FLOAT, [batch, q_len, heads * size]),
         value("present_k", TensorProto.FLOAT, [batch, kv_heads, past + q_len, size]),
         value("present_v", TensorProto.FLOAT, [batch, kv_heads, past + q_len, size])],
        opset=23,
    )
    rng = np.random.default_rng(5)
    mask = rng.random((q_len, past + q_len)) > 0.3
    mask[:, 0] = True  # every query row keeps one key
    feeds = {
        "q": rng.standard_normal((batch, q_len, heads * size)).astype(np.float32),
        "k": rng.standard_normal((batch, q_len, kv_heads * size)).astype(np.float32),
        "v": rng.standard_normal((batch, q_len, kv_heads * size)).astype(np.float32),
        "mask": mask,
        "past_k": rng.standard_normal((batch, kv_heads, past, size)).astype(np.float32),
        "past_v": rng.standard_normal((batch, kv_heads, past, size)).astype(np.float32),
    }
    got, want = _dlc_and_ort(path, feeds)
    _assert_close(got, want)


@pytest.mark.parametrize("case", ["antialias_downsample", "axes_not_larger", "crop_extrapolate"])
def test_resize_modes_tvm_gets_wrong(tmp_path, case):
    """Antialiased downsampling by a scale that is not out/in (0.6 of 7 rows is 4.2: 4 rows,
    mapped with 0.6, not 4/7), `axes` with keep_aspect_ratio_policy, tf_crop_and_resize's
    extrapolation: dlc's per-axis matrices, where TVM's kernel is wrong or refuses."""
    value = helper.make_tensor_value_info
    floats = lambda name, v: numpy_helper.from_array(np.asarray(v, np.float32), name)  # noqa: E731
    empty = floats("roi", [])
    if case == "antialias_downsample":
        node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="cubic", antialias=1)
        inits, out = [empty, floats("scales", [1, 1, 0.6, 0.6])], [1, 2, 4, 6]
    elif case == "axes_not_larger":
        node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear", axes=[3, 2],
                                keep_aspect_ratio_policy="not_larger")
        inits, out = [numpy_helper.from_array(np.array([5, 9], np.int64), "sizes")], [1, 2, 5, 5]
    else:
        node = helper.make_node("Resize", ["x", "roi", "", "sizes"], ["y"], mode="linear",
                                coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=10.0)
        inits = [floats("roi", [0, 0, -0.2, 0.4, 1, 1, 0.6, 1.3]),
                 numpy_helper.from_array(np.array([1, 2, 5, 7], np.int64), "sizes")]
        out = [1, 2, 5, 7]
    path = _save(tmp_path / f"resize_{case}.onnx", [node], [value("x", TensorProto.FLOAT, [1, 2, 7, 11])],
                 [value("y", TensorProto.FLOAT, out)], inits, opset=19)
    x = np.random.default_rng(9).standard_normal((1, 2, 7, 11)).astype(np.float32)
    got, want = _dlc_and_ort(path, {"x": x})
    _assert_close(got, want, atol=1e-4)


def test_a_plain_upsample_with_batch_one_stays_tvms_resize_kernel(tmp_path):
    """YOLOv8's 2x nearest upsample (batch 1) goes to TVM's resize kernel, not dlc's matrices:
    the matrices cost nudenet 8 more kernels and 3% of its latency when the batch of 1 was
    taken for a size-1 output."""
    value = helper.make_tensor_value_info
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest", nearest_mode="floor",
                            coordinate_transformation_mode="asymmetric")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    path = _save(tmp_path / "upsample.onnx", [node], [value("x", TensorProto.FLOAT, [1, 4, 5, 6])],
                 [value("y", TensorProto.FLOAT, [1, 4, 10, 12])], [scales], opset=17)
    imported = frontend.import_model(frontend.load_model(path))
    assert "resize2d" in imported.mod.script() and "matmul" not in imported.mod.script()
    x = np.random.default_rng(3).standard_normal((1, 4, 5, 6)).astype(np.float32)
    got, want = _dlc_and_ort(path, {"x": x})
    _assert_close(got, want)


def test_qlinear_conv_and_matmul(tmp_path):
    """An ORT-style QOperator graph: QLinearConv (uint8 activations, int8 per-channel weights,
    int32 bias, padding and stride), then QLinearMatMul; bit-exact against ORT."""
    rng = np.random.default_rng(13)
    value = helper.make_tensor_value_info
    arr = numpy_helper.from_array
    w = rng.integers(-60, 60, (4, 3, 3, 3), dtype=np.int8)
    m = rng.integers(0, 255, (6, 7), dtype=np.uint8)
    inits = [
        arr(np.float32(0.02), "xs"), arr(np.uint8(120), "xz"), arr(w, "w"),
        arr(np.array([0.01, 0.02, 0.015, 0.03], np.float32), "ws"), arr(np.zeros(4, np.int8), "wz"),
        arr(np.float32(0.05), "ys"), arr(np.uint8(128), "yz"),
        arr(rng.integers(-500, 500, 4, dtype=np.int32), "b"),
        arr(m, "m"), arr(np.float32(0.03), "ms"), arr(np.uint8(127), "mz"),
        arr(np.float32(0.2), "zs"), arr(np.uint8(100), "zz"),
    ]
    nodes = [
        helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["c"],
                         pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("QLinearMatMul", ["c", "ys", "yz", "m", "ms", "mz", "zs", "zz"], ["y"]),
    ]
    path = _save(tmp_path / "qop.onnx", nodes, [value("x", TensorProto.UINT8, [1, 3, 9, 11])],
                 [value("y", TensorProto.UINT8, [1, 4, 5, 7])], inits, opset=13)
    got, want = _dlc_and_ort(path, {"x": rng.integers(0, 255, (1, 3, 9, 11), dtype=np.uint8)})
    assert got["y"].dtype == np.uint8
    np.testing.assert_array_equal(got["y"], want["y"])


def test_smaller_converters_against_ort(tmp_path):
    """One opset-23 graph with an output per converter: RMSNormalization over every axis,
    interleaved RotaryEmbedding with position_ids, float ** int64 Pow, LpNormalization,
    Celu, ReduceMax on bool, OneHot with its values from a tensor, ReverseSequence with
    ragged lengths, a Constant written as value_floats."""
    value = helper.make_tensor_value_info
    arr = numpy_helper.from_array
    rng = np.random.default_rng(17)
    batch, seq, heads, head = 1, 3, 2, 8
    nodes = [
        helper.make_node("RMSNormalization", ["x", "g"], ["rms"], axis=0),
        helper.make_node("RotaryEmbedding", ["q", "cos", "sin", "pos"], ["rot"], interleaved=1),
        helper.make_node("Pow", ["x", "e"], ["pow"]),
        helper.make_node("LpNormalization", ["x"], ["lp"], axis=1, p=1),
        helper.make_node("Celu", ["x"], ["celu"], alpha=0.7),
        helper.make_node("ReduceMax", ["flags", "axes"], ["any"], keepdims=0),
        helper.make_node("OneHot", ["labels", "depth", "onoff"], ["hot"], axis=0),
        helper.make_node("ReverseSequence", ["steps", "lens"], ["rev"], batch_axis=0, time_axis=1),
        helper.make_node("Constant", [], ["c"], value_floats=[0.5, -1.5]),
    ]
    inits = [
        arr(rng.standard_normal((2, 5)).astype(np.float32), "g"),
        arr(rng.standard_normal((6, head // 2)).astype(np.float32), "cos"),
        arr(rng.standard_normal((6, head // 2)).astype(np.float32), "sin"),
        arr(np.array([[4, 0, 2]], np.int64), "pos"),
        arr(np.array(3, np.int64), "e"), arr(np.array([1], np.int64), "axes"),
        arr(np.array([4], np.int64), "depth"),
    ]
    path = _save(
        tmp_path / "smaller.onnx", nodes,
        [value("x", TensorProto.FLOAT, [2, 5]), value("q", TensorProto.FLOAT, [batch, heads, seq, head]),
         value("flags", TensorProto.BOOL, [3, 4]), value("labels", TensorProto.INT64, [5]),
         value("onoff", TensorProto.FLOAT, [2]), value("steps", TensorProto.FLOAT, [3, 4, 2]),
         value("lens", TensorProto.INT64, [3])],
        [value("rms", TensorProto.FLOAT, [2, 5]), value("rot", TensorProto.FLOAT, [batch, heads, seq, head]),
         value("pow", TensorProto.FLOAT, [2, 5]), value("lp", TensorProto.FLOAT, [2, 5]),
         value("celu", TensorProto.FLOAT, [2, 5]), value("any", TensorProto.BOOL, [3]),
         value("hot", TensorProto.FLOAT, [4, 5]), value("rev", TensorProto.FLOAT, [3, 4, 2]),
         value("c", TensorProto.FLOAT, [2])],
        inits, opset=23,
    )
    feeds = {
        "x": rng.standard_normal((2, 5)).astype(np.float32),
        "q": rng.standard_normal((batch, heads, seq, head)).astype(np.float32),
        "flags": rng.random((3, 4)) > 0.8,
        "labels": np.array([0, 3, -1, 7, 2], np.int64),  # -1 wraps to 3; 7 matches nothing
        "onoff": np.array([-2.0, 5.0], np.float32),
        "steps": rng.standard_normal((3, 4, 2)).astype(np.float32),
        "lens": np.array([4, 1, 3], np.int64),
    }
    got, want = _dlc_and_ort(path, feeds)
    _assert_close(got, want)


@pytest.mark.parametrize("axes", [[1], [-1]])
def test_reduce_with_run_time_axes_picks_the_declared_shapes_candidate(tmp_path, axes):
    """ReduceSum's axes as a graph input: (3, 2, 2) -> (3, 2) may reduce axis 1 or axis 2;
    both are compiled and the run-time axes choose (CumSum's axis: any of the three). Axes
    the declared shape does not allow fail the call; ReduceMax over an empty axis is -inf, as
    ONNX's reference says."""
    from dlc.errors import DlcError

    value = helper.make_tensor_value_info
    path = _save(tmp_path / "reduce_axes.onnx", [
        helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0),
        helper.make_node("ReduceL2", ["x", "last"], ["l2_"], keepdims=1),
        helper.make_node("Identity", ["l2_"], ["l2"]),
        helper.make_node("ReduceMax", ["empty", "axes_empty"], ["m"], keepdims=1),
        helper.make_node("CumSum", ["x", "axis"], ["cumsum"], reverse=1),
    ], [value("x", TensorProto.FLOAT, [3, 2, 2]), value("axes", TensorProto.INT64, [1]),
        value("axis", TensorProto.INT32, []),
        value("last", TensorProto.INT64, [1]), value("empty", TensorProto.FLOAT, [2, 0, 3]), value("axes_empty", TensorProto.INT64, [1])],
        [value("y", TensorProto.FLOAT, [3, 2]), value("l2", TensorProto.FLOAT, [3, 2, 1]),
         value("m", TensorProto.FLOAT, [2, 1, 3]), value("cumsum", TensorProto.FLOAT, [3, 2, 2])], opset=18)
    rng = np.random.default_rng(5)
    feeds = {"x": rng.standard_normal((3, 2, 2)).astype(np.float32), "axes": np.array(axes, np.int64),
             "last": np.array([-1], np.int64), "axis": np.array(axes[0], np.int32), "empty": np.zeros((2, 0, 3), np.float32), "axes_empty": np.array([1], np.int64)}
    got, want = _dlc_and_ort(path, feeds)
    _assert_close(got, want)
    assert np.isneginf(got["m"]).all()
    library = load_library(path.with_suffix(".so"))
    with pytest.raises(DlcError, match=r"ReduceSum: the axes input must be one of \[\[1\], \[2\]\]"):
        library.run({**feeds, "axes": np.array([0], np.int64)})


def test_shape_inputs_given_at_run_time_are_checked_against_the_declared_shapes(tmp_path):
    """TopK's k, Reshape's shape, Split's and Resize's sizes as graph inputs: compiled for the values
    the declared output shapes imply, and refused at run time when they differ. A zero-size
    Split piece compiles (TVM's split needs strictly increasing indices)."""
    from dlc.errors import DlcError

    value = helper.make_tensor_value_info
    path = _save(tmp_path / "shape_inputs.onnx", [
        helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=1),
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("Split", ["x", "sizes"], ["a", "b", "c"], axis=1),
        helper.make_node("Resize", ["x", "", "", "resize_to"], ["resized"], mode="linear"),
    ], [value("x", TensorProto.FLOAT, [2, 6]), value("k", TensorProto.INT64, [1]),
        value("shape", TensorProto.INT64, [2]), value("sizes", TensorProto.INT64, [3]),
        value("resize_to", TensorProto.INT64, [2])],
        [value("values", TensorProto.FLOAT, [2, 3]), value("indices", TensorProto.INT64, [2, 3]),
         value("flat", TensorProto.FLOAT, [3, 4]), value("a", TensorProto.FLOAT, [2, 0]),
         value("b", TensorProto.FLOAT, [2, 4]), value("c", TensorProto.FLOAT, [2, 2]),
         value("resized", TensorProto.FLOAT, [4, 9])], opset=18)
    rng = np.random.default_rng(9)
    feeds = {"x": rng.standard_normal((2, 6)).astype(np.float32), "k": np.array([3], np.int64),
             "shape": np.array([-1, 4], np.int64), "sizes": np.array([0, 4, 2], np.int64),
             "resize_to": np.array([4, 9], np.int64)}
    got, want = _dlc_and_ort(path, feeds)
    _assert_close(got, want)
    library = load_library(path.with_suffix(".so"))
    with pytest.raises(DlcError, match=r"TopK: input 'k' must be \[3\]"):
        library.run({**feeds, "k": np.array([2], np.int64)})
    with pytest.raises(DlcError, match=r"Reshape: input 'shape' must be \[3, 4\]"):
        library.run({**feeds, "shape": np.array([4, -1], np.int64)})


def test_sinh_cosh_isinf_dropout_and_bitcast_against_ort(tmp_path):
    value = helper.make_tensor_value_info
    path = _save(tmp_path / "misc.onnx", [
        helper.make_node("Sinh", ["x"], ["sinh"]),
        helper.make_node("Cosh", ["x"], ["cosh"]),
        helper.make_node("IsInf", ["x"], ["neg_inf"], detect_positive=0),
        helper.make_node("Dropout", ["x"], ["kept", "mask"]),
        helper.make_node("BitCast", ["x"], ["bits"], to=TensorProto.INT32),
    ], [value("x", TensorProto.FLOAT, [2, 3])],
        [value("sinh", TensorProto.FLOAT, [2, 3]), value("cosh", TensorProto.FLOAT, [2, 3]),
         value("neg_inf", TensorProto.BOOL, [2, 3]), value("kept", TensorProto.FLOAT, [2, 3]),
         value("mask", TensorProto.BOOL, [2, 3]), value("bits", TensorProto.INT32, [2, 3])], opset=26)
    feeds = {"x": np.array([[0.5, -1.25, np.inf], [-np.inf, 2.0, -0.0]], np.float32)}
    got, want = _dlc_and_ort(path, feeds)
    for name in ("neg_inf", "mask", "bits"):
        assert got[name].dtype == want[name].dtype and (got[name] == want[name]).all(), name
    _assert_close({k: got[k] for k in ("sinh", "cosh", "kept")}, {k: want[k] for k in ("sinh", "cosh", "kept")})
