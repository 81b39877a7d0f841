"""Real MetaSchedule tuning on a tiny model: records written, applied, resumable, failures counted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from dlc import build, frontend, pipeline, tuning
from dlc.logstore import DEFAULT, Trial, open_store
from dlc.target import parse_target
from dlc.verify import verify
from tests.conftest import run_dlc

HOST = parse_target("host")


@pytest.fixture(scope="module")
def optimized(tiny):
    return pipeline.optimize(frontend.import_model(frontend.load_model(tiny("conv_relu_pool"))), HOST)


def _lines(logs):
    return [json.loads(line) for line in (logs / HOST.key / "records.jsonl").read_text().splitlines()]


def test_tune_writes_records_and_the_build_applies_them(tiny, tmp_path, optimized):
    logs = tmp_path / "logs"
    result = run_dlc("tune", str(tiny("conv_relu_pool")), "--trials", "16", "--logs", str(logs),
                     "-o", str(tmp_path / "tuned.so"), "--no-bench")
    assert result.returncode == 0, result.stderr
    assert "16 trials in" in result.stdout and "verified against ONNX Runtime" in result.stderr
    lines = _lines(logs)
    searched = [line for line in lines if line["candidate"] != DEFAULT]
    assert len(searched) == 16 and all(line["run_secs"] or line["error"] for line in searched)
    assert {line["hash"] for line in searched} <= {json.loads(w)["hash"] for w in (logs / HOST.key / "workloads.jsonl").read_text().splitlines()}

    # Logs shared without default-schedule baselines: every recorded kernel takes its record.
    records = logs / HOST.key / "records.jsonl"
    records.write_text("".join(json.dumps(line) + "\n" for line in searched))
    built = build.build(optimized, HOST, output=tmp_path / "applied.so", tuning_logs=logs)
    assert built.tuning.tasks_with_records == built.tuning.tasks_recorded >= 1
    assert built.tuning.flops_share > 0.5  # the conv holds nearly all the FLOPs
    assert built.manifest["tuning"]["records_applied"] == built.tuning.tasks_with_records
    assert verify(tiny("conv_relu_pool"), built.library).passed


def test_failed_candidates_are_counted_with_their_reason(tmp_path, optimized):
    real = tuning.pooled_builder()
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class EveryOtherFails(ms.builder.PyBuilder):
        def build(self, build_inputs):
            results = list(real.build(build_inputs))
            return [ms.builder.BuilderResult(None, "injected: bad candidate") if i % 2 else r for i, r in enumerate(results)]

    result = tuning.tune(optimized, HOST, logs=tmp_path, trials=8, trials_per_batch=8, builder=EveryOtherFails())
    conv = next(o for o in result.tasks if o.trials_run)
    assert result.trials_run == 8 and conv.build_errors == 4 and conv.run_errors == 0
    assert "build: injected: bad candidate" in conv.error_reasons
    errors = [line["error"] for line in _lines(tmp_path) if line["candidate"] != DEFAULT]
    assert errors.count("build: injected: bad candidate") == 4 and len(errors) == 8
    assert conv.best_us is not None  # the four good ones were measured


def test_killed_run_resumes_without_repeating_trials(tiny, tmp_path):
    logs = tmp_path / "logs"
    command = [sys.executable, "-m", "dlc", "tune", str(tiny("conv_relu_pool")), "--trials", "48",
               "--logs", str(logs), "--no-bench", "--no-verify", "-o", str(tmp_path / "m.so")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    records = logs / HOST.key / "records.jsonl"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if records.exists() and sum(1 for line in _lines(logs) if line["candidate"] != DEFAULT) >= 16:
                break
            time.sleep(0.2)
        assert process.poll() is None, "tuning ended before it could be killed"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = [line for line in _lines(logs) if line["candidate"] != DEFAULT]  # every line parses
    assert 16 <= len(before) < 48

    result = run_dlc(*command[3:])
    assert result.returncode == 0, result.stderr
    assert f"({len(before)} already on disk)" in result.stdout
    after = [line for line in _lines(logs) if line["candidate"] != DEFAULT]
    assert len(after) == 48
    repeats = Counter((line["hash"], line["candidate"]) for line in after)
    assert max(repeats.values()) == 1  # nothing measured twice
    assert open_store(logs, HOST).skipped_lines == 0


SKYLAKE = parse_target("skylake")


@pytest.mark.skipif(not SKYLAKE.runs_on_host(), reason="this CPU cannot run skylake code")
def test_tune_a_named_preset(tiny, tmp_path):
    """Presets name no core count; MetaSchedule needs one: the measuring machine's, outside the key."""
    logs = tmp_path / "logs"
    result = run_dlc("tune", str(tiny("conv_relu_pool")), "-t", "skylake", "--trials", "4", "--logs", str(logs),
                     "-o", str(tmp_path / "tuned.so"), "--no-bench")
    assert result.returncode == 0, result.stderr
    assert "4 trials in" in result.stdout and "verified against ONNX Runtime" in result.stderr
    header = json.loads((logs / SKYLAKE.key / "target.json").read_text())
    assert header["target"] == {"kind": "llvm", "mcpu": "skylake"}
    assert len([line for line in (logs / SKYLAKE.key / "records.jsonl").read_text().splitlines()
                if json.loads(line)["candidate"] != DEFAULT]) == 4


def test_defaults_are_traces_that_seed_the_search(tmp_path, optimized):
    """Each kernel's default schedule is measured once per rules version and kept as a
    replayable trace whose tile choices are sampling decisions the search can move."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from dlc.schedule import RULES_VERSION, schedule_kernel
    from dlc.schedules.cpu import cpu_params

    # A default timed by older rules must not decide anything: it is measured again.
    conv = tuning.extract_tasks(optimized, HOST)[0]
    store = open_store(tmp_path, HOST)
    store.add_trial(Trial(conv.workload_hash, DEFAULT, None, (1e-9,), None, "0"), task_name=conv.name)
    assert open_store(tmp_path, HOST).default_seconds(conv.workload_hash) is None

    result = tuning.tune(optimized, HOST, logs=tmp_path, trials=16)
    defaults = [line for line in _lines(tmp_path) if line["candidate"] == DEFAULT and line.get("rules") == RULES_VERSION]
    assert {line["hash"] for line in defaults} == {t.workload_hash for t in tuning.extract_tasks(optimized, HOST)}
    line = next(line for line in defaults if line["hash"] == conv.workload_hash)
    record = ms.database.TuningRecord.from_json(line["record"], ms.database.Workload(conv.mod))
    sch = s_tir.Schedule(conv.mod)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    with HOST.to_tvm():
        _, expected = schedule_kernel(conv.mod["main"], cpu_params(HOST), HOST.to_tvm())
    import tvm_ffi

    assert tvm_ffi.structural_equal(sch.mod["main"].without_attr("tirx.is_scheduled"),
                                   expected.without_attr("tirx.is_scheduled"))
    tiles = [inst for inst in record.trace.insts if inst.kind.name == "SamplePerfectTile"]
    assert tiles and all(record.trace.decisions[inst] for inst in tiles)

    # The tuning curve: defaults first, then one point per batch, also on disk.
    assert result.curve[0].trials == 0 and result.curve[-1].trials == 16
    assert result.curve[-1].estimated_us <= result.curve[0].estimated_us
    assert len((tmp_path / HOST.key / "curve.jsonl").read_text().splitlines()) == len(result.curve)


def test_a_hanging_build_costs_its_trial_not_the_run(tmp_path, optimized):
    """Candidates build in a worker process with a timeout: an LLVM hang is a failed trial."""
    from dlc.measure import pooled_builder

    def hang(mod, target, params):
        import time

        time.sleep(60)

    started = time.monotonic()
    result = tuning.tune(optimized, HOST, logs=tmp_path, trials=2, trials_per_batch=2,
                         builder=pooled_builder(timeout_sec=1, f_build=hang))
    conv = next(o for o in result.tasks if o.trials_run)
    assert result.trials_run == 2 and conv.build_errors == 2
    assert "build: timed out after 1 s" in conv.error_reasons
    assert time.monotonic() - started < 55  # nobody waited for the hang
