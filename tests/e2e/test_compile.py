"""Compile tiny models with real TVM, load the libraries, compare with real ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dlc import build, frontend, pipeline
from dlc.errors import BuildError
from dlc.runtime import load_library
from dlc.target import parse_target
from dlc.verify import verify
from tests import models
from tests.conftest import run_dlc

HOST = parse_target("host")


def _compile(path, tmp_path, shapes=None, *, fold=True):
    loaded = frontend.load_model(path, input_shapes=shapes, fold=fold)
    optimized = pipeline.optimize(frontend.import_model(loaded), HOST)
    return build.build(optimized, HOST, output=tmp_path / f"{path.stem}.so")


@pytest.mark.parametrize(
    "name, shapes",
    [
        ("conv_relu_pool", None),
        ("matmul_softmax", None),
        ("computed_reshape", {"x": (2, 4, 6)}),
        ("range_from_shape", {"x": (1, 4, 9)}),
        ("token_embedding", None),
    ],
)
def test_compiles_and_matches_onnxruntime(tiny, tmp_path, name, shapes):
    built = _compile(tiny(name), tmp_path, shapes)
    assert built.library.stat().st_size > 0 and built.kernels >= 1
    report = verify(tiny(name), built.library, seed=3)
    assert report.passed, report
    assert {o.name for o in report.outputs} == {v["name"] for v in built.manifest["outputs"]}


def test_manifest_fields(tiny, tmp_path):
    built = _compile(tiny("matmul_softmax"), tmp_path)
    manifest = json.loads((tmp_path / "matmul_softmax.so.json").read_text())
    assert manifest == built.manifest
    assert manifest["format"] == "dlc-manifest" and manifest["library"] == "matmul_softmax.so"
    assert manifest["inputs"] == [{"name": "x", "shape": [2, 16], "dtype": "float32"}]
    assert [o["name"] for o in manifest["outputs"]] == ["logits", "probs"]
    assert manifest["target"]["config"] == HOST.config and manifest["target"]["key"] == HOST.key
    assert manifest["versions"]["tvm"].startswith("0.27")
    assert len(manifest["model"]["sha256"]) == 64
    assert manifest["build"]["kernels"] == built.kernels
    assert manifest["tuning"]["records_applied"] == 0


def test_unfolded_range_shows_the_root_cause(tiny, tmp_path):
    """Without folding, Range's run-time limit leaves the Sub with no static shape."""
    with pytest.raises(BuildError) as err:
        _compile(tiny("range_from_shape"), tmp_path, {"x": (1, 4, 9)}, fold=False)
    assert "left without a kernel: R.add(x, " in err.value.message and "static shape" in err.value.hint


def test_cli_compile_verify_run(tiny, tmp_path):
    model = tiny("conv_relu_pool")
    library = tmp_path / "out" / "conv.so"
    result = run_dlc("compile", str(model), "-o", str(library), "--dump-ir", str(tmp_path / "ir"))
    assert result.returncode == 0, result.stderr
    assert "verified against ONNX Runtime" in result.stderr and " ok " in result.stdout
    assert sorted(p.name for p in (tmp_path / "ir").iterdir()) == ["01-imported.py", "02-fused.py"]

    inputs = {"x": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    np.savez(tmp_path / "in.npz", **inputs)
    result = run_dlc("run", str(library), "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "out.npz"))
    assert result.returncode == 0, result.stderr
    expected = load_library(library).run(inputs)["y"]
    assert np.array_equal(np.load(tmp_path / "out.npz")["y"], expected)

    result = run_dlc("verify", str(model), str(library), "--inputs", str(tmp_path / "in.npz"))
    assert result.returncode == 0, result.stderr


def test_verify_mismatch_exits_6(tiny, tmp_path):
    library = _compile(tiny("conv_relu_pool"), tmp_path).library
    other = models.conv_relu_pool(tmp_path / "other_weights.onnx", weight_seed=99)
    result = run_dlc("verify", str(other), str(library))
    assert result.returncode == 6, result.stderr
    assert "disagrees with ONNX Runtime on output 'y'" in result.stderr
    assert "MISMATCH" in result.stdout and "Traceback" not in result.stderr


def test_cross_target_builds_without_verifying(tiny, tmp_path):
    """A target this machine cannot run is built, and verification is skipped, not faked."""
    result = run_dlc("compile", str(tiny("conv_relu_pool")), "-t", "skylake-avx512", "-o", str(tmp_path / "a.so"))
    assert result.returncode == 0, result.stderr
    assert "verification skipped: target 'skylake-avx512' cannot run on this machine" in result.stderr
