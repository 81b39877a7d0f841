"""`dlc verify --bisect` names the node whose conversion is wrong: here a test-only Sigmoid
converter, put over TVM's through dlc.onnx_ops, that is off by 0.25."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from dlc import onnx_ops
from dlc.bisect import bisect
from dlc.cli import cli
from dlc.target import parse_target


class _WrongSigmoid(OnnxOpConverter):
    @classmethod
    def _impl_v13(cls, bb, inputs, attr, params):
        return relax.op.add(relax.op.sigmoid(inputs[0]), relax.const(0.25, "float32"))


@pytest.fixture
def wrong_sigmoid(monkeypatch):
    monkeypatch.setitem(onnx_ops.CONVERTERS, "Sigmoid", _WrongSigmoid)


@pytest.fixture
def model(tmp_path):
    """x -> MatMul -> Relu -> Sigmoid ('gate') -> Mul(x) -> ReduceSum -> y"""
    value = helper.make_tensor_value_info
    w = np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
        helper.make_node("Relu", ["h"], ["r"], name="act"),
        helper.make_node("Sigmoid", ["r"], ["g"], name="gate"),
        helper.make_node("Mul", ["g", "x"], ["m"], name="scale"),
        helper.make_node("ReduceSum", ["m", "axes"], ["y"], name="total", keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "bisect", [value("x", TensorProto.FLOAT, [4, 8])], [value("y", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1], np.int64), "axes")],
    )
    path = tmp_path / "bisect.onnx"
    onnx.save(helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_bisect_names_the_wrong_node(model, wrong_sigmoid):
    report = bisect(model, parse_target("host"))
    assert report.first is not None
    assert (report.first.name, report.first.op_type) == ("gate", "Sigmoid")
    assert report.first.output.name == "g" and not report.first.output.agrees
    assert [(i.name, i.agrees) for i in report.first.inputs] == [("r", True)]
    assert report.first.output.comparison.max_abs_error == pytest.approx(0.25, abs=1e-6)


def test_bisect_finds_nothing_when_dlc_agrees(model):
    report = bisect(model, parse_target("host"))
    assert report.first is None and report.tensors_compared == 5


def test_verify_bisect_on_the_command_line(model, wrong_sigmoid, tmp_path):
    runner = CliRunner()
    library = tmp_path / "m.so"
    built = runner.invoke(cli, ["compile", str(model), "-o", str(library), "--no-verify"])
    assert built.exit_code == 0, built.output
    result = runner.invoke(cli, ["verify", str(model), str(library), "--bisect"])
    assert result.exit_code == 6, result.output
    assert "first divergence: node 'gate' (Sigmoid), #3 of 5 in topological order" in result.output
    assert "input  'r' (from act): agrees" in result.output
    assert "--bisect` names the first ONNX node that diverges" in result.output
