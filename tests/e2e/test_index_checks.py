"""Issue 8: an index from the caller outside [-size, size-1] is an error raised by the
library itself, not an out-of-bounds read; in-range (negative) indices match ONNX Runtime;
constant indices get no check."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

from dlc import build, frontend, pipeline
from dlc.bounds import CHECK_KERNEL
from dlc.errors import InputError
from dlc.runtime import load_library
from dlc.schedule import apply_default_schedules
from dlc.target import parse_target
from dlc.tuning import extract_tasks
from tests.conftest import run_dlc

HOST = parse_target("host")


def _optimize(path):
    return pipeline.optimize(frontend.import_model(frontend.load_model(path)), HOST)


def _check_kernels(mod) -> list[str]:
    return [gvar.name_hint for gvar in mod.functions if gvar.name_hint.startswith(CHECK_KERNEL)]


def _onnxruntime(model, inputs):
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs)))


@pytest.fixture(scope="module")
def gather_lib(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("gather") / "gather.so"
    return build.build(_optimize(tiny("gather_table")), HOST, output=out).library


@pytest.fixture(scope="module")
def index_ops_lib(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("index_ops") / "index_ops.so"
    return build.build(_optimize(tiny("index_ops")), HOST, output=out).library


def test_out_of_range_gather_index_is_an_error_not_a_crash(gather_lib, tmp_path):
    np.savez(tmp_path / "ids.npz", ids=np.full((1, 16), 2_000_000_000, np.int64))
    result = run_dlc("run", str(gather_lib), "--inputs", str(tmp_path / "ids.npz"))
    assert result.returncode == InputError.exit_code, (result.returncode, result.stderr)  # was -11 (SIGSEGV)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0] == (
        "error: 'gather.so' refused the inputs: index out of bounds in Gather: every index in 'ids' "
        "must be in [-1000, 999] (data axis 0 has size 1000)"
    )
    assert lines[1].strip().startswith("hint: ")
    # The check is compiled into the library, so a C/C++ caller gets the same error.
    assert b"index out of bounds in Gather" in gather_lib.read_bytes()


def test_negative_indices_match_onnxruntime_and_one_past_is_refused(tiny, gather_lib):
    ids = np.array([[-1000, -1, 0, 999, -500, 3, -3, 998, -999, 1, 2, 4, -2, 500, 0, -1000]], np.int64)
    library = load_library(gather_lib)
    expected = _onnxruntime(tiny("gather_table"), {"ids": ids})["y"]
    assert np.array_equal(library.run({"ids": ids})["y"], expected)
    for bad in (-1001, 1000):
        with pytest.raises(InputError, match=r"must be in \[-1000, 999\]"):
            library.run({"ids": np.where(np.arange(16) == 7, bad, ids)})


GOOD = {
    "ge_idx": np.array([[0, -1], [4, -5], [2, 3]]),
    "nd_idx": np.array([[-3, -5], [2, 4]]),
    "snd_idx": np.array([[-1], [0]]),
    "se_idx": np.array([[-3, 2, -1, 0, 1]]),
}


def _index_inputs(**changed):
    inputs = {"x": np.arange(15, dtype=np.float32).reshape(3, 5), **GOOD, **changed}
    return {name: np.asarray(value, np.float32 if name == "x" else np.int64) for name, value in inputs.items()}


def test_in_range_indices_of_each_op_match_onnxruntime(tiny, index_ops_lib):
    inputs = _index_inputs()
    ours = load_library(index_ops_lib).run(inputs)
    for name, expected in _onnxruntime(tiny("index_ops"), inputs).items():
        assert np.array_equal(ours[name], expected), name


@pytest.mark.parametrize(
    "name, bad, message",
    [
        ("ge_idx", [[0, 5], [0, 0], [0, 0]],
         "GatherElements: every index in 'ge_idx' must be in [-5, 4] (data axis 1 has size 5)"),
        ("nd_idx", [[0, 0], [0, -6]],
         "GatherND: coordinate 1 of every index in 'nd_idx' must be in [-5, 4] (data axis 1 has size 5)"),
        ("snd_idx", [[0], [3]],
         "ScatterND: coordinate 0 of every index in 'snd_idx' must be in [-3, 2] (data axis 0 has size 3)"),
        ("se_idx", [[0, 0, -4, 0, 0]],
         "ScatterElements: every index in 'se_idx' must be in [-3, 2] (data axis 0 has size 3)"),
    ],
    ids=["GatherElements", "GatherND", "ScatterND", "ScatterElements"],
)
def test_each_index_op_refuses_a_bad_index(index_ops_lib, tmp_path, name, bad, message):
    np.savez(tmp_path / "in.npz", **_index_inputs(**{name: bad}))
    result = run_dlc("run", str(index_ops_lib), "--inputs", str(tmp_path / "in.npz"))
    assert result.returncode == InputError.exit_code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: 'index_ops.so' refused the inputs: index out of bounds in {message}\n")
    assert "hint: " in result.stderr


def test_only_indices_from_inputs_get_a_check(tiny, tmp_path):
    assert len(_check_kernels(_optimize(tiny("gather_table")).mod)) == 1
    assert len(_check_kernels(_optimize(tiny("index_ops")).mod)) == 4

    optimized = _optimize(tiny("constant_indices"))
    assert _check_kernels(optimized.mod) == []
    library = build.build(optimized, HOST, output=tmp_path / "constant.so").library
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    ours = load_library(library).run({"x": x})
    for name, expected in _onnxruntime(tiny("constant_indices"), {"x": x}).items():
        assert np.array_equal(ours[name], expected), name


def test_check_kernel_survives_default_schedules_and_task_extraction(tiny):
    optimized = _optimize(tiny("token_embedding"))
    [name] = _check_kernels(optimized.mod)
    with HOST.to_tvm():
        scheduled = apply_default_schedules(optimized.mod, HOST)
    assert scheduled.failed == 0
    assert scheduled.mod[name].same_as(optimized.mod[name])  # left exactly as written
    tasks = {task.name for task in extract_tasks(optimized, HOST)}
    assert name not in tasks and tasks  # tuning searches the gather, never its check


def test_a_single_scalar_index_is_checked_too(tmp_path):
    """Gather of one row by a rank-0 index (silero VAD does this)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "i"], ["row"], axis=0)], "scalar_gather",
        [helper.make_tensor_value_info("i", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("row", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(np.arange(40, dtype=np.float32).reshape(10, 4), "table")])
    model = tmp_path / "scalar_gather.onnx"
    onnx.save(helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    library = load_library(build.build(_optimize(model), HOST, output=tmp_path / "sg.so").library)
    assert library.run({"i": np.array(-10)})["row"].tolist() == [0, 1, 2, 3]
    with pytest.raises(InputError, match=r"every index in 'i' must be in \[-10, 9\]"):
        library.run({"i": np.array(10)})
