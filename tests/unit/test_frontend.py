from __future__ import annotations

import pytest

from dlc import frontend
from dlc.errors import InputError, ModelImportError


@pytest.mark.parametrize(
    "text, expected",
    [
        ("images:1x3x320x320", ("images", (1, 3, 320, 320))),
        ("images:[1,3,320,320]", ("images", (1, 3, 320, 320))),
        ("images:[1, 3, 320, 320]", ("images", (1, 3, 320, 320))),
        ("input:0:1x4", ("input:0", (1, 4))),  # TF-exported names hold ':'
        ("x:7", ("x", (7,))),
        ("x:1x0x3", ("x", (1, 0, 3))),  # 0 is an empty axis, a static size
    ],
)
def test_parse_input_shape(text, expected):
    assert frontend.parse_input_shape(text) == expected


@pytest.mark.parametrize("text", ["images", ":1x3", "x:1xax3", "x:", "x:[1,,3]", "x:-1x3", "x:1x2.5"])
def test_parse_input_shape_rejects(text):
    with pytest.raises(InputError) as err:
        frontend.parse_input_shape(text)
    assert repr(text) in err.value.message
    assert "NAME:1x3x320x320" in err.value.hint


def test_a_declared_zero_dim_is_static(tiny):
    loaded = frontend.load_model(tiny("empty_like"))
    assert [spec.shape for spec in loaded.inputs] == [(2, 3), (0,)]


def test_oversized_inputs_are_refused_before_building(tiny):
    with pytest.raises(InputError, match=r"input 'x' \(2000000000x4x6 float32\) would take 178.8 GiB"):
        frontend.load_model(tiny("computed_reshape"), input_shapes={"x": (2_000_000_000, 4, 6)})
    with pytest.raises(InputError, match="dimension over 2\\^31-1"):
        frontend.load_model(tiny("computed_reshape"), input_shapes={"x": (2**31, 4, 6)})


def test_dynamic_input_without_shape_names_input_axis_and_flag(tiny):
    with pytest.raises(InputError) as err:
        frontend.load_model(tiny("computed_reshape"))
    assert err.value.message == "input 'x' has a dynamic dimension at axis 0 ('batch')"
    assert err.value.hint == "pass --input-shape x:1x4x6"


def test_folding_removes_shape_arithmetic_and_keeps_names(tiny):
    loaded = frontend.load_model(tiny("computed_reshape"), input_shapes={"x": (2, 4, 6)})
    ops = [node.op_type for node in loaded.model.graph.node]
    assert "Shape" not in ops and "Concat" not in ops
    assert loaded.nodes_after_folding < loaded.nodes_before_folding == 5
    assert loaded.output_names == ("y",)
    assert loaded.inputs == (frontend.TensorSpec("x", (2, 4, 6), "float32"),)


def test_import_gives_static_output_specs(tiny):
    imported = frontend.import_model(frontend.load_model(tiny("computed_reshape"), input_shapes={"x": (3, 4, 6)}))
    assert imported.outputs == (frontend.TensorSpec("y", (3, 24), "float32"),)


def test_unknown_input_name(tiny):
    with pytest.raises(InputError) as err:
        frontend.load_model(tiny("conv_relu_pool"), input_shapes={"image": (1, 3, 16, 16)})
    assert "'image'" in err.value.message and err.value.hint == "the model's inputs are: x"


def test_shape_of_wrong_rank(tiny):
    with pytest.raises(InputError, match="gives 'x' 2 dimensions; the model declares 4"):
        frontend.load_model(tiny("conv_relu_pool"), input_shapes={"x": (1, 3)})


def test_shape_that_contradicts_a_fixed_dim(tiny):
    with pytest.raises(InputError, match="sets axis 2 of 'x' to 32, but the model fixes it at 16"):
        frontend.load_model(tiny("conv_relu_pool"), input_shapes={"x": (1, 3, 32, 16)})


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        frontend.load_model(tmp_path / "nope.onnx")


def test_not_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n" * 10)
    with pytest.raises(ModelImportError) as err:
        frontend.load_model(path)
    assert "not" in err.value.message and "re-export" in err.value.hint


def test_truncated(tiny, tmp_path):
    data = tiny("conv_relu_pool").read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelImportError, match="truncated.onnx"):
        frontend.load_model(path)


def test_unsupported_ops_listed_with_counts_and_first_nodes(tiny):
    with pytest.raises(ModelImportError) as err:
        frontend.load_model(tiny("unsupported_ops"))
    message = err.value.message
    assert "2 operator type(s)" in message
    assert "com.example.FancyOp x2 (first: fancy_1, fancy_2)" in message
    assert "StringNormalizer x1 (first: normalise)" in message
    assert "Relu" not in message


def test_inspect(tiny):
    info = frontend.inspect_model(tiny("computed_reshape"))
    assert info.inputs == (frontend.TensorSpec("x", ("batch", 4, 6), "float32"),)
    assert info.op_counts == {"Shape": 1, "Slice": 1, "Concat": 1, "Reshape": 1, "Relu": 1}
    assert info.unsupported_ops == {} and info.opset == 17
