"""Does compile time grow with the model, and which pass grows faster than it?

    .venv/bin/python bench/compile_time.py [--blocks 8 16 32 64] [--top 8]

Builds chains of N YOLO-style blocks with onnx.helper (Conv 3x3 32->32 + BatchNormalization
+ SiLU as Sigmoid * x, on 1x32x40x40, random weights), then for each N times dlc's stages
(load + fold, import, graph passes, default schedules, LLVM + link) and, inside the graph
passes, every TVM pass (tvm.ir.instrument.PassTimingInstrument). Prints seconds per stage,
seconds per block, and the passes whose time per block grows the most from the smallest
N to the largest: linear growth keeps seconds per block flat.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHANNELS, SIZE = 32, 40


def chain(path: Path, blocks: int) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []
    x = "x"
    for i in range(blocks):
        w, scale, bias, mean, var = (f"b{i}.{n}" for n in ("w", "scale", "bias", "mean", "var"))
        inits += [
            numpy_helper.from_array((rng.standard_normal((CHANNELS, CHANNELS, 3, 3)) * 0.1).astype(np.float32), w),
            numpy_helper.from_array(rng.uniform(0.5, 1.5, CHANNELS).astype(np.float32), scale),
            numpy_helper.from_array(rng.standard_normal(CHANNELS).astype(np.float32) * 0.1, bias),
            numpy_helper.from_array(rng.standard_normal(CHANNELS).astype(np.float32) * 0.1, mean),
            numpy_helper.from_array(rng.uniform(0.5, 1.5, CHANNELS).astype(np.float32), var),
        ]
        nodes += [
            helper.make_node("Conv", [x, w], [f"b{i}.conv"], pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", [f"b{i}.conv", scale, bias, mean, var], [f"b{i}.bn"]),
            helper.make_node("Sigmoid", [f"b{i}.bn"], [f"b{i}.sig"]),
            helper.make_node("Mul", [f"b{i}.bn", f"b{i}.sig"], [f"b{i}.out"]),
        ]
        x = f"b{i}.out"
    graph = helper.make_graph(
        nodes, f"chain{blocks}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CHANNELS, SIZE, SIZE])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, CHANNELS, SIZE, SIZE])],
        inits,
    )
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def pass_seconds(rendered: str) -> dict[str, float]:
    """Total seconds per pass name from PassTimingInstrument.render() (nested passes too)."""
    totals: dict[str, float] = {}
    for line in rendered.splitlines():
        match = re.match(r"\s*([^:]+): (\d+)us", line)
        if match:
            totals[match.group(1)] = totals.get(match.group(1), 0.0) + int(match.group(2)) / 1e6
    return totals


def measure(blocks: int, workdir: Path) -> tuple[dict[str, float], dict[str, float]]:
    import tvm

    from dlc import build, frontend, pipeline
    from dlc.schedule import apply_default_schedules
    from dlc.target import parse_target

    spec = parse_target("host")
    tvm_target = spec.to_tvm()
    stages: dict[str, float] = {}
    model = chain(workdir / f"chain{blocks}.onnx", blocks)

    started = time.perf_counter()
    loaded = frontend.load_model(model)
    stages["load + fold"] = time.perf_counter() - started
    started = time.perf_counter()
    imported = frontend.import_model(loaded)
    stages["import"] = time.perf_counter() - started

    timing = tvm.ir.instrument.PassTimingInstrument()
    started = time.perf_counter()
    with tvm_target, tvm.transform.PassContext(opt_level=3, instruments=[timing]):
        passes = pipeline._graph_passes(spec) + pipeline._fusion_passes(tvm_target)
        tvm.transform.Sequential(passes)(imported.mod)
        per_pass = pass_seconds(timing.render())
    stages["graph passes (instrumented)"] = time.perf_counter() - started

    started = time.perf_counter()
    optimized = pipeline.optimize(imported, spec)
    stages["graph passes (dlc.pipeline)"] = time.perf_counter() - started
    started = time.perf_counter()
    with tvm_target:
        apply_default_schedules(optimized.mod, spec)
    stages["default schedules"] = time.perf_counter() - started
    started = time.perf_counter()
    build.build(optimized, spec, output=workdir / f"chain{blocks}.so")
    stages["build (schedules + LLVM + link)"] = time.perf_counter() - started
    return stages, per_pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory(prefix="dlc-compile-time-") as tmp:
        for blocks in args.blocks:
            results[blocks] = measure(blocks, Path(tmp))
            stages, _ = results[blocks]
            print(f"N={blocks:4d}  " + "  ".join(f"{name} {s:.2f} s ({s / blocks * 1e3:.0f} ms/block)"
                                              for name, s in stages.items()), flush=True)
    small, large = min(results), max(results)
    growth = []
    for name, seconds in results[large][1].items():
        before = results[small][1].get(name, 0.0)
        growth.append((seconds / large - before / small, name, before, seconds))
    print(f"\npasses whose time per block grows most from N={small} to N={large}:")
    for delta, name, before, after in sorted(growth, reverse=True)[: args.top]:
        print(f"  {name:50} {before:7.3f} s -> {after:7.3f} s  ({before / small * 1e3:6.1f} -> "
              f"{after / large * 1e3:6.1f} ms/block)")


if __name__ == "__main__":
    main()
