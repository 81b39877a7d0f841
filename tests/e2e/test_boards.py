"""Boards through TVM's RPC, with emulated aarch64 boards (qemu-aarch64) and a real tracker.

Needs ./scripts/bootstrap-boards (qemu-user, the cross g++, the board's root in
~/.cache/dlc/boards), which ./scripts/test runs first. Two emulated servers start once for
the module (~10 s) and serve every test under one key.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from dlc import boards, build, emulator, frontend, pipeline
from dlc.errors import BoardError, BuildError
from dlc.logstore import DEFAULT
from dlc.measure import measure
from dlc.target import parse_target
from dlc.zoo import MODELS
from tests.conftest import assert_fails, run_dlc

A72 = parse_target("cortex-a72")
KEY = "dlc-test-a64"


@pytest.fixture(scope="module")
def board_root():
    missing = [p for p in ("qemu-aarch64", "aarch64-linux-gnu-g++") if shutil.which(p) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run ./scripts/bootstrap-boards (./scripts/test does)")
    return emulator.ensure_root("aarch64")


@pytest.fixture(scope="module")
def tracker():
    from tvm.rpc.tracker import Tracker

    started = Tracker(host="127.0.0.1", port=9290, port_end=9390, silent=True)
    yield f"127.0.0.1:{started.port}"
    started.terminate()


@pytest.fixture
def emulated(board_root, tracker, tmp_path_factory):
    """Two fresh emulated aarch64 boards registered with `tracker` under KEY, per test: a
    session stuck in one test (qemu-user deadlocks a forked session child, rarely) must not
    keep a board from the next."""
    logs = tmp_path_factory.mktemp("boards")
    servers = []
    try:
        for i in range(2):
            servers.append(emulator.EmulatedServer(board_root, port=9400 + 100 * i, key=KEY, tracker=tracker,
                                                   log_file=logs / f"board{i}.log"))
        yield servers
    finally:
        for server in servers:
            server.terminate()


def _flags(tracker: str) -> list[str]:
    return ["--rpc-tracker", tracker, "--rpc-key", KEY]


def test_aarch64_code_uses_neon_fma(tiny, tmp_path):
    asm = tmp_path / "a72.s"
    result = run_dlc("compile", str(tiny("conv_relu_pool")), "--target", "cortex-a72", "-o", str(tmp_path / "a.so"),
                     "--dump-asm", str(asm))
    assert result.returncode == 0, result.stderr
    assert re.search(r"\bfmla\s+v\d+\.4s", asm.read_text())
    assert json.loads((tmp_path / "a.so.json").read_text())["target"]["arch"] == "aarch64"


def test_armv7_cross_compiles(tiny, tmp_path):
    result = run_dlc("compile", str(tiny("conv_relu_pool")), "--target", "cortex-a7", "-o", str(tmp_path / "a7.so"),
                     "--dump-asm", str(tmp_path / "a7.s"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a7.so").read_bytes()[:5] == b"\x7fELF\x01"  # 32-bit ELF
    assert re.search(r"\bvmla\.f32|\bvfma\.f32|\bvmul\.f32\s+q", (tmp_path / "a7.s").read_text())


def test_cross_compiler_override_on_the_cli(tiny, tmp_path):
    model = tiny("matmul_softmax")
    result = run_dlc("compile", str(model), "--target", "cortex-a72", "--cross-compiler", "no-such-g++",
                     "-o", str(tmp_path / "m.so"))
    assert_fails(result, BuildError.exit_code, "cross compiler 'no-such-g++'", "apt-get install g++-aarch64-linux-gnu")


def test_nudenet_verified_on_an_emulated_board(emulated, tracker, zoo_model, tmp_path):
    model = zoo_model("nudenet-320n")
    library = tmp_path / "nudenet-a72.so"
    shape = "images:" + "x".join(map(str, MODELS["nudenet-320n"].input_shapes["images"]))
    compiled = run_dlc("compile", str(model), "--target", "cortex-a72", "--input-shape", shape, "-o", str(library),
                       "--no-verify")
    assert compiled.returncode == 0, compiled.stderr
    result = run_dlc("verify", str(model), str(library), *_flags(tracker))
    assert result.returncode == 0, result.stderr
    assert re.search(r"output0 .* 0/46200 .* ok", result.stdout), result.stdout


def test_tune_measures_on_both_boards_and_the_records_apply(emulated, tracker, tiny, tmp_path):
    before = [server.sessions() for server in emulated]
    logs = tmp_path / "logs"
    result = run_dlc("tune", str(tiny("conv_relu_pool")), "--target", "cortex-a72", *_flags(tracker),
                     "--trials", "16", "--logs", str(logs), "-o", str(tmp_path / "tuned.so"))
    assert result.returncode == 0, result.stderr
    assert "16 trials in" in result.stdout and "library on key" in result.stderr
    assert all(server.sessions() > b for server, b in zip(emulated, before)), [s.sessions() for s in emulated]
    records = logs / A72.key / "records.jsonl"
    searched = [json.loads(line) for line in records.read_text().splitlines()]
    searched = [line for line in searched if line["candidate"] != DEFAULT]
    assert len(searched) == 16 and sum(bool(line["run_secs"]) for line in searched) >= 12, searched

    # Without the default baselines every recorded kernel takes its record; the result
    # still matches ORT on the board.
    records.write_text("".join(json.dumps(line) + "\n" for line in searched))
    optimized = pipeline.optimize(frontend.import_model(frontend.load_model(tiny("conv_relu_pool"))), A72)
    built = build.build(optimized, A72, output=tmp_path / "applied.so", tuning_logs=logs)
    assert built.tuning.tasks_with_records == built.tuning.tasks_recorded >= 1
    assert built.tuning.unusable_records == 0
    verified = run_dlc("verify", str(tiny("conv_relu_pool")), str(built.library), *_flags(tracker))
    assert verified.returncode == 0, verified.stderr


def test_run_on_one_server_and_a_board_of_the_wrong_architecture(tiny, tmp_path):
    """`--rpc HOST:PORT` reaches one server directly (an x86 one here); an aarch64 library
    there is refused with the reason, not a crash."""
    from tvm import rpc

    server = rpc.Server(host="127.0.0.1", port=9600, port_end=9700, silent=True)
    try:
        address = f"127.0.0.1:{server.port}"
        host_lib, arm_lib = tmp_path / "host.so", tmp_path / "arm.so"
        for target, library in (("host", host_lib), ("cortex-a72", arm_lib)):
            done = run_dlc("compile", str(tiny("matmul_softmax")), "--target", target, "-o", str(library),
                           "--no-verify")
            assert done.returncode == 0, done.stderr
        ran = run_dlc("run", str(host_lib), "--rpc", address, "--outputs", str(tmp_path / "out.npz"))
        assert ran.returncode == 0, ran.stderr
        assert set(np.load(tmp_path / "out.npz").files) == {"logits", "probs"}
        wrong = run_dlc("verify", str(tiny("matmul_softmax")), str(arm_lib), "--rpc", address)
        assert_fails(wrong, BoardError.exit_code, "cannot load 'arm.so', built for aarch64",
                     "another architecture")
    finally:
        server.terminate()


def test_a_board_that_disappears_is_a_failed_trial(board_root, tracker):
    """A board that goes away after the pre-flight costs its trials a timeout each, never a hang."""
    import time

    key = "dlc-test-vanishing"
    server = emulator.EmulatedServer(board_root, port=9700, key=key, tracker=tracker)
    try:
        spec = boards.BoardSpec.from_flags(rpc=None, tracker=tracker, key=key)
        assert boards.preflight(A72, spec) == 1
    finally:
        server.terminate()
    import tvm
    from tvm import te

    a = te.placeholder((16,), name="a")
    mod = tvm.IRModule({"main": te.create_prim_func([a, te.compute((16,), lambda i: a[i] + 1.0)])})
    from dlc.measure import pooled_builder

    builder = pooled_builder(f_export=boards.export_function(A72))
    runner = boards.board_runner(spec, workers=1, timeout_sec=10)
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    started = time.perf_counter()
    try:
        (outcome,) = measure(builder, runner, A72.to_tvm(), [(mod, ArgInfo.from_entry_func(mod))])
    finally:
        for worker in (builder, runner):
            if worker.pool is not None:
                worker.pool.shutdown()
    assert outcome[0] is None and outcome[1].startswith("run: "), outcome
    assert time.perf_counter() - started < 60


def test_no_board_under_the_key(tracker, tiny, tmp_path):
    library = tmp_path / "a.so"
    assert run_dlc("compile", str(tiny("matmul_softmax")), "--target", "cortex-a72", "-o", str(library)).returncode == 0
    result = run_dlc("verify", str(tiny("matmul_softmax")), str(library), "--rpc-tracker", tracker,
                     "--rpc-key", "nobody")
    assert_fails(result, BoardError.exit_code, "no board is registered under key 'nobody'", "dlc board emulate")
