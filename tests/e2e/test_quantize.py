"""`dlc quantize`: onnxruntime's static QDQ quantisation behind dlc's shapes and errors."""

from __future__ import annotations

import numpy as np
import onnx

from dlc import build, frontend, pipeline
from dlc.quantize import quantize
from dlc.target import parse_target
from dlc.verify import verify
from tests.conftest import run_dlc


def test_quantize_writes_a_qdq_model_that_dlc_compiles_and_verifies(tiny, tmp_path):
    source = tiny("conv_relu_pool")
    result = quantize(source, tmp_path / "int8.onnx", samples=4)
    model = onnx.load(result.path)
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert result.quantized_ops.get("Conv") == 1 and result.samples == 4
    assert all(d.relative < 0.05 for d in result.drift)  # int8 stays near fp32 on this model

    host = parse_target("host")
    optimized = pipeline.optimize(frontend.import_model(frontend.load_model(result.path)), host)
    built = build.build(optimized, host, output=tmp_path / "int8.so")
    assert verify(result.path, built.library).passed  # against ONNX Runtime running the int8 model


def test_calibration_samples_come_from_a_folder_of_npz(tiny, tmp_path):
    source = tiny("conv_relu_pool")
    name = onnx.load(source).graph.input[0].name
    folder = tmp_path / "calibration"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.savez(folder / f"{i}.npz", **{name: rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)})
    done = run_dlc("quantize", str(source), "-o", str(tmp_path / "int8.onnx"), "--calibration", str(folder))
    assert done.returncode == 0, done.stderr
    assert "3 sample(s) from" in done.stderr and (tmp_path / "int8.onnx").exists()
    assert "calibrating on random inputs" not in done.stderr  # real samples were given

    np.savez(folder / "3.npz", other=np.zeros(3, np.float32))
    bad = run_dlc("quantize", str(source), "-o", str(tmp_path / "bad.onnx"), "--calibration", str(folder))
    assert bad.returncode == 2 and f"lacks input '{name}'" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad.onnx").exists()
    missing = run_dlc("quantize", str(source), "--calibration", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "not found" in missing.stderr
