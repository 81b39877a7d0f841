"""The real `dlc` command on bad input: exit code, message and hint, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.conftest import assert_fails, run_dlc

COMMANDS = ["compile", "verify", "run", "inspect", "targets", "bench", "profile", "report",
            "board", "board emulate", "board tracker", "board list", "board setup"]


@pytest.mark.parametrize("command", [[], *[c.split() for c in COMMANDS]])
def test_help(command):
    result = run_dlc(*command, "--help")
    assert result.returncode == 0 and "Usage: dlc" in result.stdout


def test_help_is_instant():
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dlc", "--help"], check=True, capture_output=True)
    assert time.perf_counter() - started < 1.0
    probe = "import sys, dlc.cli; assert 'tvm' not in sys.modules and 'onnx' not in sys.modules"
    subprocess.run([sys.executable, "-c", probe], check=True)


def test_missing_file(tmp_path):
    assert_fails(run_dlc("compile", str(tmp_path / "missing.onnx")), 2, "missing.onnx' not found", "check the path")


def test_not_onnx(tmp_path):
    path = tmp_path / "photo.onnx"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    assert_fails(run_dlc("compile", str(path)), 3, "photo.onnx", "re-export or re-download")


def test_truncated(tiny, tmp_path):
    path = tmp_path / "cut.onnx"
    path.write_bytes(tiny("conv_relu_pool").read_bytes()[:300])
    assert_fails(run_dlc("compile", str(path)), 3, "cut.onnx", "truncated")


def test_unsupported_operator(tiny):
    result = run_dlc("compile", str(tiny("unsupported_ops")))
    assert_fails(result, 3, "com.example.FancyOp x2 (first: fancy_1, fancy_2); StringNormalizer x1", "re-export")


def test_dynamic_input_without_shape(tiny):
    assert_fails(
        run_dlc("compile", str(tiny("computed_reshape"))),
        2,
        "input 'x' has a dynamic dimension at axis 0 ('batch')",
        "pass --input-shape x:1x4x6",
    )


@pytest.mark.parametrize(
    "target, message, hint",
    [
        ("llvm -mcpu", "option '-mcpu' in target 'llvm -mcpu' has no value", "-mcpu=VALUE"),
        ("llvm -foo=bar", "-foo", "-mcpu"),
        ('{"kind": "llvm", ', "JSON", ""),
        ("cuda", "'cuda'", "llvm"),
        ('{"kind": "llvm", "num-cores": "two"}', "expects an integer, got 'two'", "-num-cores=4"),
        ('["llvm"]', "must be a JSON object", "kind"),
        ("llvm -mcpu=skylake -mcpu=znver3", "given twice", "keep one"),
        ("llvm -mcpu=", "has no value", "-mcpu=VALUE"),
    ],
)
def test_malformed_target(tiny, target, message, hint):
    assert_fails(run_dlc("compile", str(tiny("conv_relu_pool")), "--target", target), 2, message, hint)


def test_unknown_preset(tiny):
    assert_fails(
        run_dlc("compile", str(tiny("conv_relu_pool")), "--target", "skylak"),
        2,
        "unknown target 'skylak'; did you mean 'skylake'?",
        "cortex-a72",
    )


@pytest.mark.parametrize("shape", ["x", "x:1x3xhx16", "x:[1,3,16"])
def test_bad_input_shape(tiny, shape):
    assert_fails(run_dlc("compile", str(tiny("conv_relu_pool")), "--input-shape", shape), 2, repr(shape), "NAME:1x3x320x320")


def test_input_shape_for_unknown_input(tiny):
    assert_fails(
        run_dlc("compile", str(tiny("conv_relu_pool")), "--input-shape", "img:1x3x16x16"),
        2,
        "--input-shape names 'img'",
        "the model's inputs are: x",
    )


def test_run_without_manifest(tmp_path):
    library = tmp_path / "lib.so"
    library.write_bytes(b"")
    assert_fails(run_dlc("run", str(library)), 2, "no manifest 'lib.so.json'", "keep the .json")


def test_debug_shows_the_traceback(tmp_path):
    result = run_dlc("--debug", "compile", str(tmp_path / "missing.onnx"))
    assert result.returncode == 2 and "Traceback" in result.stderr and "error: model file" in result.stderr


def test_targets_lists_presets():
    result = run_dlc("targets")
    assert result.returncode == 0
    for name in ("host", "skylake", "skylake-avx512", "znver3", "cortex-a72", "cortex-a53", "cortex-a7"):
        assert f" {name} " in result.stdout


def test_inspect(tiny):
    result = run_dlc("inspect", str(tiny("unsupported_ops")))
    assert result.returncode == 0
    assert "com.example.FancyOp x2" in result.stdout and "StringNormalizer x1" in result.stdout


def test_tune_bad_time_budget(tiny):
    assert_fails(run_dlc("tune", str(tiny("conv_relu_pool")), "--time-budget", "20 minutes"), 2, "bad duration '20 minutes'", "20m")


def test_tune_unknown_task(tiny, tmp_path):
    result = run_dlc("tune", str(tiny("conv_relu_pool")), "--tasks", "nope", "--logs", str(tmp_path / "logs"))
    assert_fails(result, 4, "no task named 'nope'", "--list-tasks")
    assert not (tmp_path / "logs").exists()


def test_tune_refuses_a_target_it_cannot_measure(tiny, tmp_path):
    result = run_dlc("tune", str(tiny("conv_relu_pool")), "-t", "cortex-a72", "--logs", str(tmp_path / "logs"))
    assert_fails(result, 2, "target 'cortex-a72' cannot run on this machine", "RPC")


def test_tune_list_tasks(tiny, tmp_path):
    result = run_dlc("tune", str(tiny("conv_relu_pool")), "--list-tasks", "--logs", str(tmp_path / "logs"))
    assert result.returncode == 0, result.stderr
    assert "fused_conv2d" in result.stdout and "FLOPs share" in result.stdout


def test_compile_with_missing_tuning_logs(tiny, tmp_path):
    result = run_dlc("compile", str(tiny("conv_relu_pool")), "--tuning-logs", str(tmp_path / "none"), "-o", str(tmp_path / "a.so"))
    assert_fails(result, 2, "tuning-log directory", "dlc tune")
