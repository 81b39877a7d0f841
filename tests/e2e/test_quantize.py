"""`dlc quantize`: onnxruntime's static QDQ quantisation behind dlc's shapes and errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from dlc import build, frontend, pipeline
from dlc.build import manifest_path
from dlc.int8 import has_vnni
from dlc.int8_ort import ort_softmax_table
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


def _build(model, target_text, tmp_path, name):
    target = parse_target(target_text)
    optimized = pipeline.optimize(frontend.import_model(frontend.load_model(model)), target)
    return build.build(optimized, target, output=tmp_path / f"{name}.so")


@pytest.mark.parametrize("target_text", ["host", "llvm -mcpu=haswell"])
def test_int8_model_runs_integer_kernels_bit_exact_with_onnx_runtime(tiny, tmp_path, target_text):
    """Every conv, SiLU, Add, Concat, AveragePool, Gemm and both Softmaxes of the QDQ model
    agree with ONNX Runtime's int8 kernels exactly (rtol = atol = 0), with VNNI (host here,
    when it has it) and without (AVX2: the exact int16 conv)."""
    result = quantize(tiny("int8_block"), tmp_path / "int8.onnx", samples=4)
    assert {"Conv", "Sigmoid", "Mul", "Add", "Concat", "Softmax", "AveragePool", "Gemm"} <= set(result.quantized_ops)
    built = _build(result.path, target_text, tmp_path, "int8")
    for seed in (0, 1):
        report = verify(result.path, built.library, rtol=0.0, atol=0.0, seed=seed)
        assert report.passed, [(c.name, c.mismatches, c.max_abs_error) for c in report.outputs]
    kernels = json.loads(manifest_path(built.library).read_text())["kernels"]
    vnni = sum("u8s8" in name for name in kernels)
    assert vnni == (3 if target_text == "host" and has_vnni(parse_target("host")) else 0)


def test_fp32_model_does_not_meet_the_int8_passes(tiny, tmp_path):
    built = _build(tiny("int8_block"), "host", tmp_path, "fp32")
    kernels = json.loads(manifest_path(built.library).read_text())["kernels"]
    assert not any("u8s8" in name or "uint8" in name for name in kernels)


def test_softmax_table_is_onnx_runtimes():
    """contrib_ops/cpu/quantization/qlinear_softmax.cc: entry 255 is exp(shift * scale), with
    shift * scale = log(FLT_MAX / length) - 5, so a row of `length` entries cannot overflow."""
    table = ort_softmax_table(0.05, 16)
    assert table.dtype == np.float32 and table.shape == (256,)
    assert np.isclose(np.log(table[255]), np.log(np.finfo(np.float32).max / 16) - 5, rtol=1e-6)
    assert np.all(np.diff(table) > 0) and np.isfinite(table.sum(dtype=np.float32) * 16)


@pytest.mark.slow
def test_tuning_an_int8_model_keeps_it_bit_exact(tiny, tmp_path):
    """MetaSchedule searches the int8 kernels too (the VNNI one keeps its default when the
    search finds nothing better); the tuned build still equals ONNX Runtime."""
    result = quantize(tiny("int8_block"), tmp_path / "int8.onnx", samples=2)
    done = run_dlc("tune", str(result.path), "--trials", "24", "--logs", str(tmp_path / "logs"))
    assert done.returncode == 0, done.stderr
    built = run_dlc("compile", str(result.path), "--tuning-logs", str(tmp_path / "logs"), "-o",
                    str(tmp_path / "tuned.so"), "--rtol", "0", "--atol", "0")
    assert built.returncode == 0 and "MISMATCH" not in built.stdout, built.stderr
