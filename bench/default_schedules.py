"""Untuned dlc (default schedules) vs ONNX Runtime on nudenet 320n and PP-OCR cls.

    .venv/bin/python bench/default_schedules.py [MODEL ...] [--target T] [--rounds 4] [--calls N]

Prints compile time, dlc latency, ORT latency and their ratio per model. Both engines use
2 threads (TVM_NUM_THREADS is set before tvm is imported; ORT gets intra_op_num_threads=2)
and are timed by dlc.bench.compare_latency: alternating blocks in one process, the first
call of each block dropped, medians compared (ORT's pool keeps spinning after a run and
would take the cores from a call timed right after it; see the field notes).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

THREADS = 2
os.environ["TVM_NUM_THREADS"] = str(THREADS)  # read once, when tvm's runtime starts
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_MODELS = ("nudenet-320n", "ppocr-cls")


def bench_model(name: str, *, target: str, rounds: int, calls: int, workdir: Path) -> dict:
    from dlc import build, frontend, pipeline, zoo
    from dlc.bench import compare_latency
    from dlc.target import parse_target
    from dlc.verify import verify

    spec = parse_target(target)
    model = zoo.fetch(name)
    started = time.perf_counter()
    loaded = frontend.load_model(model, input_shapes=zoo.MODELS[name].input_shapes)
    optimized = pipeline.optimize(frontend.import_model(loaded), spec)
    built = build.build(optimized, spec, output=workdir / f"{name}.so")
    compile_s = time.perf_counter() - started
    report = verify(model, built.library, seed=0)
    bench = compare_latency(model, {"dlc": built.library}, threads=THREADS, rounds=rounds, block=calls)
    engines = {latency.engine for latency in bench.latencies}
    ov_ms = bench.median("openvino") if "openvino" in engines else float("nan")
    return {"model": name, "compile_s": compile_s, "kernels": built.kernels, "dlc_ms": bench.median("dlc"),
            "ort_ms": bench.median("onnxruntime"), "ov_ms": ov_ms, "ratio": bench.ratio("dlc"),
            "ov_ratio": bench.median("dlc") / ov_ms, "verified": report.passed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(DEFAULT_MODELS))
    parser.add_argument("--target", default="host")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=None, help="calls per block [enough for 0.25 s]")
    args = parser.parse_args(argv)

    import onnxruntime
    import tvm

    print(f"# {time.strftime('%Y-%m-%d')}  {platform.node()}  {platform.processor() or platform.machine()}"
          f"  {os.cpu_count()} cpus  tvm {tvm.__version__}  onnxruntime {onnxruntime.__version__}"
          f"  target {args.target}  {THREADS} threads  {args.rounds} rounds of {args.calls or 'adaptive'} calls")
    # Another process on these cores skews both engines (the ratio less so): say so.
    print(f"# load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'model':14} {'compile s':>9} {'kernels':>7} {'dlc ms':>8} {'ort ms':>8} {'ov ms':>8} {'dlc/ort':>7} "
          f"{'dlc/ov':>6}  verified")
    with tempfile.TemporaryDirectory(prefix="dlc-bench-") as tmp:
        for name in args.models:
            r = bench_model(name, target=args.target, rounds=args.rounds, calls=args.calls, workdir=Path(tmp))
            print(f"{r['model']:14} {r['compile_s']:9.1f} {r['kernels']:7d} {r['dlc_ms']:8.2f} "
                  f"{r['ort_ms']:8.2f} {r['ov_ms']:8.2f} {r['ratio']:7.2f} {r['ov_ratio']:6.2f}  "
                  f"{'yes' if r['verified'] else 'NO'}", flush=True)
    print(f"# load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
