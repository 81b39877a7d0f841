"""Compile tiny models with real TVM, load the libraries, compare with real ONNX Runtime."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from dlc import build, frontend, pipeline
from dlc.errors import BuildError
from dlc.runtime import load_library
from dlc.target import parse_target
from dlc.verify import verify
from tests.conftest import run_dlc

HOST = parse_target("host")
# EVEX encodings (AVX-512 only): registers 16-31, mask registers, embedded broadcasts.
EVEX = re.compile(r"%[xyz]mm(1[6-9]|2\d|3[01])\b|%zmm\d|%k[0-7]\b|\{1to\d+\}")
CPU_FLAGS = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])


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
    assert manifest["target"]["arch"] == HOST.arch and manifest["target"]["isa_features"] == HOST.isa_features()
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
    library.parent.mkdir()  # -o never creates folders: a typo in it is an error, not a new tree
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
    # fast_exp's rounding (~1e-7) differs from ONNX Runtime's: a mismatch at zero tolerance.
    library = _compile(tiny("conv_silu_softmax"), tmp_path).library
    result = run_dlc("verify", str(tiny("conv_silu_softmax")), str(library), "--rtol", "0", "--atol", "0")
    assert result.returncode == 6, result.stderr
    assert "disagrees with ONNX Runtime on output" in result.stderr
    assert "MISMATCH" in result.stdout and "Traceback" not in result.stderr


def test_cross_target_builds_without_verifying(tiny, tmp_path):
    """A target this machine cannot run is built, and verification is skipped, not faked."""
    avx512_hidden = ",".join(f for f in CPU_FLAGS if not f.startswith("avx512"))
    result = subprocess.run([sys.executable, "-m", "dlc", "compile", str(tiny("conv_relu_pool")), "-t", "skylake-avx512",
                             "-o", str(tmp_path / "a.so")], capture_output=True, text=True,
                            env={**os.environ, "DLC_HOST_FEATURES": avx512_hidden})
    assert result.returncode == 0, result.stderr
    assert ("verification skipped: target 'skylake-avx512' cannot run on this machine (this CPU lacks "
            "avx512bw, avx512cd, avx512dq, avx512f, avx512vl)") in result.stderr



@pytest.mark.skipif("avx2" not in CPU_FLAGS, reason="needs an x86-64 Linux CPU with AVX2")
def test_host_on_a_zen4_vm_that_hides_avx512_gets_no_avx512_code(tiny, tmp_path):
    """The machine of issue 8: LLVM names the CPU znver4, the hypervisor hides AVX-512."""
    env = {**os.environ, "DLC_HOST_CPU": "znver4",
           "DLC_HOST_FEATURES": ",".join(f for f in CPU_FLAGS if not f.startswith("avx512"))}
    asm = tmp_path / "host.s"
    result = subprocess.run([sys.executable, "-m", "dlc", "compile", str(tiny("conv_relu_pool")), "-o",
                             str(tmp_path / "host.so"), "--dump-asm", str(asm)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr  # and verified: it ran here
    assert "-mattr=-avx512bf16,-avx512bitalg,-avx512bw" in result.stderr
    text = asm.read_text()
    assert "vfmadd" in text and "%ymm" in text and not EVEX.search(text)
    manifest = json.loads((tmp_path / "host.so.json").read_text())
    assert "avx2" in manifest["target"]["isa_features"]
    assert not [f for f in manifest["target"]["isa_features"] if f.startswith("avx512")]
    listing = subprocess.run([sys.executable, "-m", "dlc", "targets"], capture_output=True, text=True, env=env).stdout
    assert re.search(r"skylake-avx512\s+│\s+no", listing), listing
