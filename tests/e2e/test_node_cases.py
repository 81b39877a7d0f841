"""ONNX's own node test cases that dlc's layout pass used to break (issue 8, point 6).

Before the fix, `relax.transform.ConvertLayout` ran on every model: it raised on 61
conv-less node cases that TVM imports and runs ("Invalid SLayout: can't find S" on the
importer's relax.stack for variadic Max/Min/Sum/Mean and the expansions that use them,
"Expected nested to match tuple" on Dropout, "NLayoutEqual ... unknown" on Unique) and
killed the process with SIGFPE on the three expanded DynamicQuantizeLinear cases
(relax.stack of scalars). Each case runs through dlc's stages (load, import, optimize,
build, load_library) and is compared with the outputs the case itself ships: the cases
use IR versions onnxruntime 1.31 refuses. The cases are generated in-process from the
onnx wheel (`collect_testcases`), not read from disk.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dlc import build, frontend, pipeline
from dlc.runtime import load_library
from dlc.target import parse_target
from dlc.verify import verify
from tests.conftest import REPO

HOST = parse_target("host")

INVALID_SLAYOUT = [  # relax.stack: variadic Max/Min/Sum/Mean, and expansions built from them
    "test_gelu_tanh_1_expanded", "test_gelu_tanh_2_expanded", "test_gelu_default_1_expanded",
    "test_gelu_default_2_expanded", "test_hardsigmoid_example_expanded_ver18",
    "test_hardsigmoid_expanded_ver18", "test_hardsigmoid_default_expanded_ver18",
    "test_max_example", "test_max_one_input", "test_max_two_inputs", "test_max_int8", "test_max_int16",
    "test_max_int32", "test_max_int64", "test_max_uint8", "test_max_uint16", "test_max_uint32",
    "test_max_uint64", "test_max_float16", "test_max_float32", "test_max_float64",
    "test_mean_example", "test_mean_one_input", "test_mean_two_inputs",
    "test_min_example", "test_min_one_input", "test_min_two_inputs", "test_min_int8", "test_min_int16",
    "test_min_int32", "test_min_int64", "test_min_uint8", "test_min_uint16", "test_min_uint32",
    "test_min_uint64", "test_min_float16", "test_min_float32", "test_min_float64",
    "test_relu_expanded_ver18", "test_sum_example", "test_sum_one_input", "test_sum_two_inputs",
]
EXPECTED_NESTED = [  # Dropout's tuple result
    "test_dropout_default", "test_dropout_default_ratio", "test_dropout_default_mask",
    "test_dropout_default_mask_ratio", "test_training_dropout_default",
    "test_training_dropout_default_mask", "test_training_dropout", "test_training_dropout_mask",
    "test_training_dropout_zero_ratio", "test_training_dropout_zero_ratio_mask",
    "test_dropout_default_old", "test_dropout_random_old",
]
UNKNOWN_LAYOUT = [  # Unique: "Cannot convert when exactly one of the layouts is unknown"
    "test_unique_sorted_without_axis", "test_unique_not_sorted_without_axis",
    "test_unique_sorted_with_axis", "test_unique_sorted_with_axis_3d",
    "test_unique_sorted_with_negative_axis", "test_unique_length_1",
    "test_unique_bfloat16_sorted_without_axis",
]
SIGFPE = [  # relax.stack of two scalars: a division by zero inside ConvertLayout
    "test_dynamicquantizelinear_expanded", "test_dynamicquantizelinear_max_adjusted_expanded",
    "test_dynamicquantizelinear_min_adjusted_expanded",
]
RAISED = INVALID_SLAYOUT + EXPECTED_NESTED + UNKNOWN_LAYOUT  # the 61

# Every failure kind, fast enough for the default run (the rest: -m slow).
REPRESENTATIVE = [
    "test_max_example", "test_min_two_inputs", "test_sum_one_input", "test_mean_two_inputs",
    "test_max_uint8", "test_min_float16", "test_gelu_tanh_1_expanded",
    "test_hardsigmoid_expanded_ver18", "test_relu_expanded_ver18",
    "test_dropout_default", "test_dropout_default_old", "test_dropout_random_old",
    "test_unique_sorted_without_axis", "test_unique_sorted_with_axis_3d", "test_unique_length_1",
]

# Wrong answers from TVM's Dropout converter, not from the layout pass: the stages must
# run, then the comparison is an expected failure.
_IDENTITY = "TVM imports training-mode Dropout as the identity (ONNX expects a random mask)"
_MASK = "TVM's Dropout returns its mask as float32, not bool"
KNOWN_WRONG = {
    "test_training_dropout_default": _IDENTITY, "test_training_dropout_default_mask": _IDENTITY,
    "test_training_dropout": _IDENTITY, "test_training_dropout_mask": _IDENTITY,
    "test_dropout_default_mask": _MASK, "test_dropout_default_mask_ratio": _MASK,
    "test_training_dropout_zero_ratio_mask": _MASK,
}


@pytest.fixture(scope="session")
def node_cases():
    from onnx.backend.test.case import node

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # the reference implementations warn (1/0 etc.)
        return {case.name: case for case in node.collect_testcases(None)}


def _feeds(model: onnx.ModelProto, values) -> dict[str, np.ndarray]:
    initialized = {init.name for init in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in initialized]
    return {name: np.asarray(value) for name, value in zip(names, values)}


def _run_through_dlc(model_path: Path, inputs: dict, expected: dict, rtol: float, atol: float) -> str:
    """dlc's stages on one model, compared with `expected`; returns the layout it chose."""
    optimized = pipeline.optimize(frontend.import_model(frontend.load_model(model_path)), HOST)
    built = build.build(optimized, HOST, output=model_path.with_suffix(".so"))
    outputs = load_library(built.library).run(inputs)
    for name, want in expected.items():
        got = outputs[name]
        assert (got.dtype, got.shape) == (want.dtype, want.shape), name
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)
    return optimized.layout


def _save_case(case, tmp_path: Path) -> tuple[Path, dict, dict]:
    inputs, outputs = case.data_sets[0]
    path = tmp_path / f"{case.name}.onnx"
    onnx.save(case.model, str(path))
    expected = {o.name: np.asarray(v) for o, v in zip(case.model.graph.output, outputs)}
    return path, _feeds(case.model, inputs), expected


def _check_in_process(case, tmp_path: Path) -> None:
    path, inputs, expected = _save_case(case, tmp_path)
    try:
        layout = _run_through_dlc(path, inputs, expected, case.rtol, case.atol)
    except AssertionError:
        if case.name in KNOWN_WRONG:
            pytest.xfail(KNOWN_WRONG[case.name])
        raise
    assert layout == "model's own (no conv2d to gain from)"


def _check_in_subprocess(case, tmp_path: Path) -> None:
    """A SIGFPE would take pytest down with it: run the stages in a child."""
    path, inputs, expected = _save_case(case, tmp_path)
    np.savez(tmp_path / "inputs.npz", **inputs)
    np.savez(tmp_path / "expected.npz", **expected)
    child = "import sys; from tests.e2e.test_node_cases import _child; _child(*sys.argv[1:])"
    result = subprocess.run(
        [sys.executable, "-c", child, str(path), str(case.rtol), str(case.atol)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"exit code {result.returncode}:\n{result.stderr[-3000:]}"
    assert result.stdout.strip() == "layout: model's own (no conv2d to gain from)"


def _child(model_path: str, rtol: str, atol: str) -> None:
    path = Path(model_path)
    with np.load(path.parent / "inputs.npz") as f:
        inputs = {k: f[k] for k in f.files}
    with np.load(path.parent / "expected.npz") as f:
        expected = {k: f[k] for k in f.files}
    print("layout:", _run_through_dlc(path, inputs, expected, float(rtol), float(atol)))


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_node_case_without_conv(node_cases, tmp_path, name):
    _check_in_process(node_cases[name], tmp_path)


def test_dynamic_quantize_linear_expanded_does_not_crash(node_cases, tmp_path):
    _check_in_subprocess(node_cases["test_dynamicquantizelinear_expanded"], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", RAISED + SIGFPE)
def test_every_node_case_the_layout_pass_broke(node_cases, tmp_path, name):
    if name in SIGFPE:
        _check_in_subprocess(node_cases[name], tmp_path)
    else:
        _check_in_process(node_cases[name], tmp_path)


# ------------------------------------------------------------- the layout decision itself


def _save(nodes, inputs, outputs, initializers, path: Path) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializers)
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _conv_then(path: Path, *nodes, outputs=()) -> Path:
    """x -> Conv(3->4, 3x3) -> c, then `nodes`; outputs y plus `outputs`."""
    weight = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    return _save(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), *nodes],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8]), *outputs],
        [numpy_helper.from_array(weight, "w")],
        path,
    )


def _optimize(path: Path, *, fold: bool = True) -> pipeline.OptimizedModel:
    return pipeline.optimize(frontend.import_model(frontend.load_model(path, fold=fold)), HOST)


def test_conv_less_model_is_not_converted(node_cases, tmp_path, caplog):
    """ConvertLayout raises on this graph: no warning means it never ran."""
    path, _, _ = _save_case(node_cases["test_max_example"], tmp_path)
    with caplog.at_level(logging.WARNING, logger="dlc.pipeline"):
        optimized = _optimize(path)
    assert optimized.layout == "model's own (no conv2d to gain from)"
    assert [r.getMessage() for r in caplog.records] == []


def test_conv_model_goes_channels_last(tmp_path, caplog):
    path = _conv_then(tmp_path / "conv_relu.onnx", helper.make_node("Relu", ["c"], ["y"]))
    with caplog.at_level(logging.WARNING, logger="dlc.pipeline"):
        optimized = _optimize(path)
    assert optimized.layout == "NHWC" and [r.getMessage() for r in caplog.records] == []
    # The input comes in NCHW and is transposed once, to (1, 8, 8, 3), for the NHWC conv.
    assert "T.Buffer((T.int64(1), T.int64(8), T.int64(8), T.int64(3))" in optimized.mod.script()
    built = build.build(optimized, HOST, output=tmp_path / "m.so")
    assert verify(path, built.library, seed=3).passed


def test_conv_model_keeps_its_layout_when_conversion_fails(tmp_path, caplog):
    """Dropout's layout rule raises after a conv; the model builds in its own layout."""
    path = _conv_then(tmp_path / "conv_dropout.onnx", helper.make_node("Dropout", ["c"], ["y"]))
    with caplog.at_level(logging.WARNING, logger="dlc.pipeline"):
        optimized = _optimize(path, fold=False)  # onnxruntime's folding would drop the Dropout
    assert optimized.layout.startswith("model's own (channels-last failed: ")
    assert any("keeping the model's layout" in r.getMessage() for r in caplog.records)
    built = build.build(optimized, HOST, output=tmp_path / "m.so")
    assert verify(path, built.library, seed=3).passed


def test_conv_model_with_scalar_max_does_not_crash(tmp_path):
    """Max of two scalars (relax.stack of rank-0 tensors) beside a conv: SIGFPE if converted."""
    path = _conv_then(
        tmp_path / "conv_scalar_max.onnx",
        helper.make_node("Relu", ["c"], ["y"]),
        helper.make_node("ReduceMax", ["x"], ["hi"], keepdims=0),
        helper.make_node("ReduceMin", ["x"], ["lo"], keepdims=0),
        helper.make_node("Max", ["hi", "lo"], ["m"]),
        outputs=[helper.make_tensor_value_info("m", TensorProto.FLOAT, [])],
    )
    script = (
        "import sys; from pathlib import Path; from dlc import build; from dlc.verify import verify; "
        "from tests.e2e.test_node_cases import HOST, _optimize; "
        "p = Path(sys.argv[1]); o = _optimize(p); "
        "print(o.layout, verify(p, build.build(o, HOST, output=p.with_suffix('.so')).library, seed=3).passed)"
    )
    result = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"exit code {result.returncode}:\n{result.stderr[-3000:]}"
    assert result.stdout.strip() == "model's own (ConvertLayout cannot handle relax.stack) True"
