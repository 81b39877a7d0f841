"""The bad-input suite: each kind of bad input through the real `dlc` command gets one
`error:` line, one `hint:` line, its documented exit code, no traceback, and leaves nothing
half-written. (tests/unit/test_cli.py holds the kinds that need no built library.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests import models
from tests.conftest import assert_fails, run_dlc

FLAGS = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
X86_LINUX = "avx2" in FLAGS


def _no_outputs(folder: Path) -> None:
    left = [p.name for p in folder.iterdir() if p.suffix in (".so", ".json") or p.name.startswith(".dlc-build")]
    assert not left, left


@pytest.fixture(scope="module")
def library(tiny, tmp_path_factory) -> Path:
    """conv_relu_pool compiled for this machine, with its manifest."""
    out = tmp_path_factory.mktemp("lib") / "crp.so"
    result = run_dlc("compile", str(tiny("conv_relu_pool")), "-o", str(out), "--no-verify")
    assert result.returncode == 0, result.stderr
    return out


def _copy_library(library: Path, folder: Path) -> Path:
    shutil.copy(library, folder / library.name)
    shutil.copy(library.with_name(library.name + ".json"), folder / (library.name + ".json"))
    return folder / library.name


def _edit_manifest(library: Path, edit) -> None:
    path = library.with_name(library.name + ".json")
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# ------------------------------------------------------------------ model files


def test_directory_instead_of_a_model(tmp_path):
    for command in ("compile", "inspect", "tune"):
        assert_fails(run_dlc(command, str(tmp_path)), 2, "is a directory, not an ONNX file", "pass the .onnx file")


def test_empty_file(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    assert_fails(run_dlc("compile", str(tmp_path / "empty.onnx"), "-o", str(tmp_path / "e.so")), 3,
                 "is not an ONNX model (no graph in it)", "re-export or re-download")
    _no_outputs(tmp_path)


def test_random_bytes(tmp_path):
    (tmp_path / "noise.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    assert_fails(run_dlc("inspect", str(tmp_path / "noise.onnx")), 3, "noise.onnx", "re-export or re-download")


def test_a_protobuf_that_is_not_a_model(tmp_path):
    path = tmp_path / "tensor.onnx"
    path.write_bytes(numpy_helper.from_array(np.ones((8, 8), np.float32), "t").SerializeToString())
    assert_fails(run_dlc("compile", str(path)), 3, "tensor.onnx", "not ONNX")


def test_opset_too_new(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    newest = onnx.defs.onnx_opset_version()
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", newest + 2)])
    onnx.save(model, str(tmp_path / "future.onnx"))
    assert_fails(run_dlc("compile", str(tmp_path / "future.onnx")), 3, f"uses ONNX opset {newest + 2}",
                 f"opset {newest} or lower")


def test_custom_domain_operator(tiny):
    assert_fails(run_dlc("tune", str(tiny("unsupported_ops")), "--list-tasks"), 3, "com.example.FancyOp", "re-export")


# ------------------------------------------------------------------ shapes


@pytest.mark.parametrize("shape, message, hint", [
    ("x:1x4", "gives 'x' 2 dimensions; the model declares 3", "x:NxNxN"),  # wrong rank
    ("x:-1x4x6", "must be whole numbers", "NAME:1x3x320x320"),  # negative
    ("x:2000000000x4x6", "would take 178.8 GiB", "smaller --input-shape"),  # exhausts memory
    ("x:4294967296x4x6", "dimension over 2^31-1", "smaller --input-shape"),
])
def test_bad_shapes(tiny, tmp_path, shape, message, hint):
    assert_fails(run_dlc("compile", str(tiny("computed_reshape")), "--input-shape", shape, "-o", str(tmp_path / "m.so")),
                 2, message, hint)
    _no_outputs(tmp_path)


def test_zero_dims_are_static_sizes(tiny, tmp_path):
    result = run_dlc("compile", str(tiny("empty_like")), "-o", str(tmp_path / "empty.so"))
    assert result.returncode == 0, result.stderr
    assert "0/6" in result.stdout + result.stderr  # verified: 6 elements, none off


# ------------------------------------------------------------------ usage


def test_usage_errors_follow_the_same_form():
    assert_fails(run_dlc("targets", "--bogus"), 2, "No such option '--bogus'", "dlc targets --help")
    assert_fails(run_dlc("compil"), 2, "No such command 'compil'", "dlc --help")


# ------------------------------------------------------------------ outputs


def test_output_directory_missing(tiny, tmp_path):
    assert_fails(run_dlc("compile", str(tiny("conv_relu_pool")), "-o", str(tmp_path / "no" / "m.so")), 2,
                 "does not exist", "mkdir -p")
    assert not (tmp_path / "no").exists()


def test_output_not_writable(tiny):
    # /proc refuses new files even to root, which a chmod'ed folder would not.
    assert_fails(run_dlc("compile", str(tiny("conv_relu_pool")), "-o", "/proc/dlc-test.so"), 2,
                 "cannot write to '/proc'", "writable -o PATH")


def test_output_is_a_directory(tiny, tmp_path):
    assert_fails(run_dlc("compile", str(tiny("conv_relu_pool")), "-o", str(tmp_path)), 2, "is a directory", "-o model.so")


def test_names_with_spaces_and_non_ascii(tiny, tmp_path):
    folder = tmp_path / "my models é"
    folder.mkdir()
    model = shutil.copy(tiny("conv_relu_pool"), folder / "mödel v2.onnx")
    result = run_dlc("compile", str(model), "-o", str(folder / "out put ü.so"))
    assert result.returncode == 0, result.stderr
    assert (folder / "out put ü.so").is_file() and (folder / "out put ü.so.json").is_file()
    assert run_dlc("run", str(folder / "out put ü.so")).returncode == 0


def test_interrupted_compile_leaves_nothing_behind(tiny, tmp_path):
    model = models.deep_convs(tmp_path / "deep.onnx")  # builds for seconds
    process = subprocess.Popen([sys.executable, "-m", "dlc", "compile", str(model), "-o", str(tmp_path / "deep.so")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = ""
    while "fused kernels" not in seen and process.poll() is None:
        seen += process.stderr.readline()
    time.sleep(0.5)  # into the build
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "error: interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep.onnx"]


# ------------------------------------------------------------------ libraries and their inputs


def test_manifest_that_is_not_json(library, tmp_path):
    copy = _copy_library(library, tmp_path)
    copy.with_name(copy.name + ".json").write_text("{ not json")
    assert_fails(run_dlc("run", str(copy)), 2, "is not a dlc manifest", "rebuild")


def test_manifest_edited_to_another_architecture(library, tmp_path):
    copy = _copy_library(library, tmp_path)
    _edit_manifest(copy, lambda m: m["target"].update(arch="aarch64", isa_features=["neon"]))
    assert_fails(run_dlc("run", str(copy)), 2, "it is aarch64 code and this machine is", "--target host")


@pytest.mark.skipif(not X86_LINUX, reason="x86 feature flags")
def test_library_for_features_this_cpu_lacks(tiny, tmp_path):
    """Refused before loading (a SIGILL otherwise), on a machine that lacks AVX-512 or says so."""
    built = run_dlc("compile", str(tiny("conv_relu_pool")), "-t", "skylake-avx512", "-o",
                    str(tmp_path / "avx512.so"), "--no-verify")
    assert built.returncode == 0, built.stderr
    flags = [f for f in FLAGS.split("flags", 1)[1].split("\n", 1)[0].strip(": \t").split() if not f.startswith("avx512")]
    env = {**os.environ, "DLC_HOST_FEATURES": ",".join(flags)}
    for args in (["run", str(tmp_path / "avx512.so")], ["verify", str(tiny("conv_relu_pool")), str(tmp_path / "avx512.so")]):
        result = subprocess.run([sys.executable, "-m", "dlc", *args], capture_output=True, text=True, env=env)
        assert_fails(result, 2, "was built for target 'skylake-avx512' and cannot run on this machine: this CPU lacks "
                     "avx512bw, avx512cd, avx512dq, avx512f, avx512vl", "rebuild it with --target host")
    tune = subprocess.run([sys.executable, "-m", "dlc", "tune", str(tiny("conv_relu_pool")), "-t", "skylake-avx512",
                           "--logs", str(tmp_path / "logs")], capture_output=True, text=True, env=env)
    assert_fails(tune, 2, "cannot run on this machine (this CPU lacks avx512", "`dlc targets` says which")
    assert not (tmp_path / "logs").exists()


def test_run_inputs_missing_wrong_dtype_wrong_shape_unknown(library, tmp_path):
    cases = {
        "missing": ({}, "has no array for input(s) 'x'", "--input-value"),
        "dtype": ({"x": np.ones((1, 3, 16, 16), np.complex64)}, "input 'x' is complex64; the library takes float32",
                  "astype"),
        "shape": ({"x": np.ones((1, 3, 8, 8), np.float32)}, "input 'x' has shape [1, 3, 8, 8]", "--input-shape"),
        "unknown": ({"x": np.ones((1, 3, 16, 16), np.float32), "y": np.ones(3)}, "no input named 'y'", "x [1, 3, 16, 16]"),
    }
    for name, (arrays, message, hint) in cases.items():
        npz = tmp_path / f"{name}.npz"
        np.savez(npz, **arrays)
        assert_fails(run_dlc("run", str(library), "--inputs", str(npz)), 2, message, hint)
    assert_fails(run_dlc("run", str(library), "--inputs", str(tmp_path / "none.npz")), 2, "not found", "numpy.savez")
    assert_fails(run_dlc("run", str(library), "--input-value", "x"), 2, "bad --input-value 'x'", "NAME=NUMBER")


def test_verify_against_another_model(library, tiny):
    assert_fails(run_dlc("verify", str(tiny("matmul_softmax")), str(library)), 2,
                 "was compiled from 'conv_relu_pool.onnx', not from 'matmul_softmax.onnx'", "the ONNX file it was compiled from")


def test_corrupt_tuning_log_header(tiny, tmp_path):
    from dlc.target import parse_target

    folder = tmp_path / "logs" / parse_target("host").key
    folder.mkdir(parents=True)
    (folder / "target.json").write_text("garbage")
    (folder / "records.jsonl").write_text('{"hash": "h"}\n')
    assert_fails(run_dlc("compile", str(tiny("conv_relu_pool")), "--tuning-logs", str(tmp_path / "logs"), "-o",
                         str(tmp_path / "m.so")), 7, "is not a dlc tuning-log header", "move the folder away")
    assert (folder / "records.jsonl").read_text() == '{"hash": "h"}\n'  # never rewritten


# ------------------------------------------------------------------ scalar inputs


def test_scalar_input_with_a_value_that_matters(tiny, tmp_path):
    """silero VAD's `sr` in small: rank 0 is kept, and --input-value sets it."""
    model = tiny("scalar_input")
    result = run_dlc("compile", str(model), "-o", str(tmp_path / "s.so"), "--input-value", "sr=16000")
    assert result.returncode == 0, result.stderr
    assert run_dlc("verify", str(model), str(tmp_path / "s.so")).returncode == 0  # random sr
    out = run_dlc("run", str(tmp_path / "s.so"), "--input-value", "sr=16000", "--outputs", str(tmp_path / "o.npz"))
    assert out.returncode == 0, out.stderr
    assert_fails(run_dlc("run", str(tmp_path / "s.so"), "--input-value", "sr=16000.5"), 2, "int64, so 16000.5 does not fit",
                 "whole number")
