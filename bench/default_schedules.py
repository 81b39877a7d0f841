"""Untuned dlc (default schedules) vs ONNX Runtime on nudenet 320n and PP-OCR cls.

    .venv/bin/python bench/default_schedules.py [MODEL ...] [--target T] [--rounds 4] [--calls N]

MODEL: a dlc.zoo name (nudenet-320n, ppocr-cls, ppocr-rec, ppocr-det) or minilm-l6, a
MiniLM-L6-shaped encoder built with onnx.helper (bench/models.py).

Prints compile time, dlc, ORT and OpenVINO (fp32; when the `bench` extra is installed)
latency and ratios per model, and the model's GFLOP/s against this machine's fp32 ceiling
(numpy sgemm on the same threads, measured first). The engines use
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


def _model_gflop(loaded, spec) -> float:
    """The model's own multiply-adds: counted without the zero features dlc pads matmuls
    and convs with (pipeline.PAD_FEATURES), which would inflate GFLOP/s by up to a sixth."""
    from dlc import frontend, pipeline, tuning

    padding, pipeline.PAD_FEATURES = pipeline.PAD_FEATURES, False
    try:
        optimized = pipeline.optimize(frontend.import_model(loaded), spec)
    finally:
        pipeline.PAD_FEATURES = padding
    return sum(t.weight * t.flops for t in tuning.extract_tasks(optimized, spec)) / 1e9


def bench_model(name: str, *, target: str, rounds: int, calls: int, workdir: Path) -> dict:
    from dlc import build, frontend, pipeline, zoo
    from dlc.bench import compare_latency
    from dlc.target import parse_target
    from dlc.verify import verify

    from bench.models import SYNTHETIC

    spec = parse_target(target)
    if name in SYNTHETIC:  # built with onnx.helper, static shapes
        model, shapes = SYNTHETIC[name](workdir / f"{name}.onnx"), None
    else:
        model, shapes = zoo.fetch(name), zoo.MODELS[name].input_shapes
    started = time.perf_counter()
    loaded = frontend.load_model(model, input_shapes=shapes)
    optimized = pipeline.optimize(frontend.import_model(loaded), spec)
    built = build.build(optimized, spec, output=workdir / f"{name}.so")
    compile_s = time.perf_counter() - started
    report = verify(model, built.library, seed=0)
    gflop = _model_gflop(loaded, spec)
    bench = compare_latency(model, {"dlc": built.library}, threads=THREADS, rounds=rounds, block=calls)
    engines = {latency.engine for latency in bench.latencies}
    ov_ms = bench.median("openvino") if "openvino" in engines else float("nan")
    return {"model": name, "compile_s": compile_s, "kernels": built.kernels, "dlc_ms": bench.median("dlc"),
            "ort_ms": bench.median("onnxruntime"), "ov_ms": ov_ms, "ratio": bench.ratio("dlc"),
            "ov_ratio": bench.median("dlc") / ov_ms, "verified": report.passed, "gflop": gflop,
            "gflops": gflop / bench.median("dlc") * 1e3}


def fma_ceiling(threads: int) -> tuple[float, str]:
    """(GFLOP/s, OpenBLAS core type) of numpy's sgemm 2048^3 on `threads` threads, best of 3
    and of the core types this CPU runs: the yardstick for "how close to the machine's fp32
    FMA rate". Each in a fresh process, as OpenBLAS reads OPENBLAS_CORETYPE once; an
    environment may pin it (this one: Haswell, AVX2), so the AVX-512 kernels are tried too."""
    import subprocess

    from dlc import hostcpu

    probe = (
        "import time, numpy as np\n"
        "a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32); a @ a\n"
        "best = 0.0\n"
        "for _ in range(3):\n"
        "    t = time.perf_counter()\n"
        "    for _ in range(5): a @ a\n"
        "    best = max(best, 5 * 2 * 2048**3 / (time.perf_counter() - t) / 1e9)\n"
        "print(best)\n"
    )
    core_types = [os.environ.get("OPENBLAS_CORETYPE", "")]
    if "avx512f" in (hostcpu.host_flags() or ()):
        core_types.append("SkylakeX")
    results = []
    for core_type in dict.fromkeys(core_types):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OPENBLAS_CORETYPE": core_type}
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
        results.append((float(out.stdout.strip()), core_type or "auto"))
    return max(results)


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
    ceiling, core_type = fma_ceiling(THREADS)
    print(f"# fp32 ceiling: numpy sgemm 2048 on {THREADS} threads = {ceiling:.0f} GFLOP/s "
          f"(OpenBLAS core type {core_type})")
    print(f"{'model':14} {'compile s':>9} {'kernels':>7} {'dlc ms':>8} {'ort ms':>8} {'ov ms':>8} {'dlc/ort':>7} "
          f"{'dlc/ov':>6} {'GFLOP':>6} {'GFLOP/s':>7} {'ceiling':>7}  verified")
    with tempfile.TemporaryDirectory(prefix="dlc-bench-") as tmp:
        for name in args.models:
            r = bench_model(name, target=args.target, rounds=args.rounds, calls=args.calls, workdir=Path(tmp))
            print(f"{r['model']:14} {r['compile_s']:9.1f} {r['kernels']:7d} {r['dlc_ms']:8.2f} "
                  f"{r['ort_ms']:8.2f} {r['ov_ms']:8.2f} {r['ratio']:7.2f} {r['ov_ratio']:6.2f} "
                  f"{r['gflop']:6.2f} {r['gflops']:7.0f} {r['gflops'] / ceiling:7.0%}  "
                  f"{'yes' if r['verified'] else 'NO'}", flush=True)
    print(f"# load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
