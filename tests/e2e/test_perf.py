"""dlc bench, dlc profile and dlc report on a tiny model: numbers present and consistent, every
kernel named after ONNX nodes, the report rendered by a real headless Chromium. No timing thresholds."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.conftest import assert_fails, run_dlc

# The ONNX nodes of tests.models.conv_relu_pool, as the profile labels them.
NODES = {"conv (Conv)", "relu (Relu)", "pool (MaxPool)", "gap (GlobalAveragePool)"}


@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory):
    model = tiny("conv_relu_pool")
    library = tmp_path_factory.mktemp("perf") / "crp.so"
    result = run_dlc("compile", str(model), "-o", str(library), "--no-verify")
    assert result.returncode == 0, result.stderr
    return model, library


def test_manifest_maps_every_kernel_to_onnx_nodes(built):
    _, library = built
    kernels = json.loads(library.with_name(library.name + ".json").read_text())["kernels"]
    assert kernels and all(entry["nodes"] and set(entry["nodes"]) <= NODES for entry in kernels.values()), kernels
    conv = [name for name, entry in kernels.items() if "conv (Conv)" in entry["nodes"]]
    assert max(kernels[name]["flops"] for name in conv) > 0  # the conv itself (a layout transpose has none)


def test_bench_json(built):
    model, library = built
    result = run_dlc("bench", str(model), str(library), "--json", "--rounds", "2", "--block", "5", "--threads", "1")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    engines = {e["engine"]: e for e in data["engines"]}
    assert {"dlc", "onnxruntime"} <= set(engines) and data["threads"] == 1
    for e in engines.values():
        assert 0 < e["min_ms"] <= e["median_ms"] <= e["p90_ms"], e
        assert e["samples"] == 2 * 5
        assert e["runs_per_second"] == pytest.approx(1e3 / e["median_ms"], rel=1e-3)
    assert engines["onnxruntime"]["vs_onnxruntime"] == 1.0
    assert engines["dlc"]["vs_onnxruntime"] == pytest.approx(engines["dlc"]["median_ms"] / engines["onnxruntime"]["median_ms"], rel=1e-2)
    assert data["library_bytes"] == library.stat().st_size and data["peak_rss_mb"] > 0


def test_bench_table(built):
    model, library = built
    result = run_dlc("bench", str(model), str(library), "--rounds", "1", "--block", "3")
    assert result.returncode == 0, result.stderr
    assert "onnxruntime" in result.stdout and "p90 ms" in result.stdout and "dlc / ONNX Runtime" in result.stdout


def test_profile_json(built):
    _, library = built
    result = run_dlc("profile", str(library), "--json", "--runs", "5")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    kernels = data["kernels"]
    assert kernels and sum(k["share"] for k in kernels) + data["overhead"]["share"] == pytest.approx(1.0, abs=0.01)
    assert sum(k["us"] for k in kernels) + data["overhead"]["us"] == pytest.approx(data["total_us"], rel=0.01)
    assert [k["us"] for k in kernels] == sorted((k["us"] for k in kernels), reverse=True)
    assert all(k["nodes"] and set(k["nodes"]) <= NODES and k["calls"] >= 1 for k in kernels), kernels
    assert set().union(*(k["nodes"] for k in kernels)) == NODES  # every node lands in some kernel
    conv = next(k for k in kernels if "conv (Conv)" in k["nodes"])
    assert conv["flops"] > 0 and conv["gflops_per_s"] > 0
    assert any(b["name"].startswith("vm.builtin.alloc") for b in data["overhead"]["builtins"])


def test_profile_table(built):
    _, library = built
    result = run_dlc("profile", str(library), "--runs", "3")
    assert result.returncode == 0, result.stderr
    assert "VM overhead" in result.stdout and "conv (Conv)" in result.stdout and "GFLOP/s" in result.stdout


def test_profile_missing_library(tmp_path):
    assert_fails(run_dlc("profile", str(tmp_path / "nope.so")), 2, "nope.so' not found", "dlc compile")


def test_report_refuses_logs_without_this_target(built, tmp_path):
    model, library = built
    result = run_dlc("report", str(model), str(library), "--tuning-logs", str(tmp_path), "-o", str(tmp_path / "r.html"))
    assert_fails(result, 2, "no tuning logs for target key", "--logs directory")
    assert not (tmp_path / "r.html").exists()


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is not installed and scripts/bootstrap could not install it (it needs root and apt): "
                    "apt-get install -y chromium")
    return path


def _headless(chromium: str, profile_dir, *args: str) -> subprocess.CompletedProcess:
    # No network here: every background service that would try to reach one is off.
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile_dir}", *args],
        capture_output=True, text=True, timeout=120,
    )


def test_report_renders_in_headless_chromium(built, tmp_path):
    import numpy as np
    from matplotlib import image

    model, library = built
    page = tmp_path / "report.html"
    result = run_dlc("report", str(model), str(library), "-o", str(page), "--runs", "3")
    assert result.returncode == 0, result.stderr
    html = page.read_text()
    # Self-contained: nothing to fetch (SVG namespace URIs are names, not requests; url(#id) is in the page).
    assert "<script" not in html and "<link" not in html and "src=" not in html
    assert not re.search(r"url\((?!#)|href=\"(?!#)", html), re.search(r".{40}(url\((?!#)|href=\"(?!#)).{40}", html)
    assert html.count("<svg") == 2  # the kernel bars and the latency bars

    chromium = _chromium()
    shot = tmp_path / "report.png"
    taken = _headless(chromium, tmp_path / "profile-a", f"--screenshot={shot}", "--window-size=1200,1600",
                      page.as_uri())
    assert shot.exists(), taken.stderr
    pixels = image.imread(str(shot))[..., :3]
    ink = (pixels.mean(axis=2) < 0.9).mean()  # share of pixels that are not (near) white
    assert 0.02 < ink < 0.9 and np.unique(pixels.reshape(-1, 3), axis=0).shape[0] > 20, ink

    dom = _headless(chromium, tmp_path / "profile-b", "--dump-dom", page.as_uri()).stdout
    profile = json.loads(run_dlc("profile", str(library), "--json", "--runs", "2").stdout)
    assert all(k["name"] in dom for k in profile["kernels"])
    assert "conv (Conv)" in dom and "VM overhead" in dom and "onnxruntime" in dom
    assert 'id="accuracy"' in dom and '<td class="ok">ok</td>' in dom
    assert dom.count("<svg") == 2


def test_repeated_blocks_keep_every_node(tmp_path):
    """Two identical conv blocks fuse into one kernel called twice (FuseOps dedups the groups):
    the kernel names both blocks' nodes, and every node of the model lands in some kernel."""
    import numpy as np
    from onnx import TensorProto, helper

    from dlc import frontend, pipeline
    from dlc.target import parse_target
    from tests.models import _init, _save

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for block in ("a", "b"):
        inits += [_init(f"w_{block}", rng.standard_normal((8, 8, 3, 3)).astype(np.float32)),
                  _init(f"b_{block}", rng.standard_normal(8).astype(np.float32))]
        nodes += [helper.make_node("Conv", [x, f"w_{block}", f"b_{block}"], [f"c_{block}"], name=f"conv_{block}",
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c_{block}"], [f"r_{block}"], name=f"relu_{block}")]
        x = f"r_{block}"
    nodes.append(helper.make_node("Flatten", [x], ["y"], name="flatten"))
    graph = helper.make_graph(nodes, "twice", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512])], inits)
    model = _save(graph, tmp_path / "twice.onnx")
    optimized = pipeline.optimize(frontend.import_model(frontend.load_model(model)), parse_target("host"))
    mapping = optimized.kernel_nodes
    assert all(mapping.values()), mapping
    assert set().union(*mapping.values()) == {f"{n.name} ({n.op_type})" for n in nodes}
    assert any({"conv_a (Conv)", "conv_b (Conv)", "relu_b (Relu)"} <= set(v) for v in mapping.values()), mapping


def test_bench_refuses_another_model(built, tiny):
    _, library = built
    result = run_dlc("bench", str(tiny("matmul_softmax")), str(library))
    assert_fails(result, 2, "was compiled from 'conv_relu_pool.onnx', not from 'matmul_softmax.onnx'",
                 "bench a library against the ONNX file it was compiled from")


def test_report_draws_the_tuning_curves(tiny, tmp_path):
    from dlc.report import collect_tuning

    model, logs, library = tiny("conv_relu_pool"), tmp_path / "logs", tmp_path / "tuned.so"
    tuned = run_dlc("tune", str(model), "--trials", "8", "--logs", str(logs), "-o", str(library), "--no-bench",
                    "--no-verify")
    assert tuned.returncode == 0, tuned.stderr
    curves = collect_tuning(library, logs)
    assert len(curves.model_runs) == 1 and curves.model_runs[0][1][-1][0] == 8  # one run, up to its 8 trials
    assert curves.kernels and all(c.points and c.points[0][0] == 1 for c in curves.kernels)
    assert all(b[1] <= a[1] for c in curves.kernels for a, b in zip(c.points, c.points[1:]))  # best so far

    page = tmp_path / "tuned.html"
    result = run_dlc("report", str(model), str(library), "--tuning-logs", str(logs), "-o", str(page), "--runs", "2")
    assert result.returncode == 0, result.stderr
    html = page.read_text()
    assert html.count("<svg") == 4  # kernels, latency, the model's curve, the kernels' curves
    assert "best estimated model latency against trials" in html and curves.kernels[0].kernel in html
