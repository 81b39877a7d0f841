"""Another model's records used by a new one, with real (tiny) tuning runs: schedules
transferred to kernels nobody tuned (`dlc tune --transfer-only`), and the cost model
warm-started on them."""

from __future__ import annotations

import re
import shutil

import pytest

from dlc import frontend, pipeline, tuning
from dlc.logstore import open_store
from dlc.target import parse_target
from tests.conftest import run_dlc

HOST = parse_target("host")


def _optimize(model):
    return pipeline.optimize(frontend.import_model(frontend.load_model(model)), HOST)


@pytest.fixture(scope="module")
def store_a(tmp_path_factory, tiny):
    """conv_relu_pool's conv (3->8 channels over 16x16) searched a little: 8 trials."""
    logs = tmp_path_factory.mktemp("store_a")
    optimized = _optimize(tiny("conv_relu_pool"))
    conv = tuning.extract_tasks(optimized, HOST)[0]
    result = tuning.tune(optimized, HOST, logs=logs, trials=8, trials_per_batch=8, task_names=[conv.name])
    assert result.trials_run == 8
    return logs, conv


def _copy(store, tmp_path):
    shutil.copytree(store, tmp_path / "logs")
    return tmp_path / "logs"


def test_transfer_only_measures_the_nearest_records_on_a_kernel_nobody_tuned(store_a, tiny, tmp_path):
    """conv_relu_pool_wide's conv (3->16 over 32x32) has no record; conv_relu_pool's conv is of
    its class: its best records are replayed with fitted tiles and measured, and the build
    takes exactly the ones that beat the default, and verifies."""
    logs = _copy(store_a[0], tmp_path)
    model = tiny("conv_relu_pool_wide")
    result = run_dlc("tune", str(model), "--transfer-only", "--logs", str(logs), "-o", str(tmp_path / "b.so"),
                     "--no-bench")
    assert result.returncode == 0, result.stderr
    assert "records transferred to kernels with none of their own" in result.stdout
    assert "verified against ONNX Runtime" in result.stderr

    conv = tuning.extract_tasks(_optimize(model), HOST)[0]
    assert "conv2d" in conv.name
    store = open_store(logs, HOST)
    trials = store.searched(conv.workload_hash)
    assert 1 <= len(trials) <= 3 and all(t.run_secs for t in trials)  # the candidates were measured
    assert store.default_seconds(conv.workload_hash) is not None  # ... beside the default
    assert {store.model_of(t)[0] for t in trials} == {model.name}  # this run's records, like any trial
    assert "(conv_relu_pool.onnx)" in result.stdout  # where they came from

    summary = re.search(r"(\d+) kernel\(s\) had kernels of their class in the store, (\d+) got a transferred "
                        r"record .*; (\d+) candidates measured in ([\d.]+) s", result.stdout)
    assert summary, result.stdout
    kept, seconds = int(summary[2]), float(summary[4])
    assert seconds < 60  # seconds, not minutes
    applied = re.search(r"tuned records applied to (\d+) of", result.stderr)
    assert applied and int(applied[1]) == kept  # the build takes what beat the default, nothing else
    if not kept:  # honest on a tiny kernel: measured, and the default kept
        assert "no (default kept)" in result.stdout


def test_a_search_starts_with_the_cost_model_trained_on_other_kernels_records(store_a, tiny, tmp_path):
    logs = _copy(store_a[0], tmp_path)
    measured_a = [t for t in open_store(logs, HOST).searched(store_a[1].workload_hash) if t.run_secs]
    result = tuning.tune(_optimize(tiny("conv_relu_pool_wide")), HOST, logs=logs, trials=4, trials_per_batch=4)
    warm = result.warm_start
    assert warm is not None and result.trials_run == 4
    # Every measured record of the one other kernel with records (at most 16 a kernel).
    assert (warm.records, warm.kernels, warm.skipped) == (min(len(measured_a), 16), 1, 0)
    assert warm.seconds < 30

    cold = tuning.tune(_optimize(tiny("conv_relu_pool_wide")), HOST, logs=logs, trials=6, trials_per_batch=2,
                       warm=False)
    assert cold.warm_start is None and cold.trials_run == 2
