"""Tuned dlc vs untuned dlc vs ONNX Runtime on the real models, with the tuning time.

    .venv/bin/python bench/tune_models.py ppocr-cls --trials 300
    .venv/bin/python bench/tune_models.py nudenet-320n --trials 100000 --time-budget 20m

Tunes for `host` into a fresh log directory (or --logs DIR to resume one), builds with and
without the records, verifies the tuned build, and times the three in alternating blocks in
one process with the same thread count (dlc.bench.compare_latency).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a dlc.zoo model name, e.g. ppocr-cls or nudenet-320n")
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--time-budget", default=None, help="seconds, or e.g. 20m")
    parser.add_argument("--target", default="host")
    parser.add_argument("--logs", type=Path, default=None)
    args = parser.parse_args()

    from dlc import build, frontend, pipeline, tuning, zoo
    from dlc.bench import compare_latency
    from dlc.cli import parse_duration
    from dlc.target import parse_target
    from dlc.verify import verify

    spec = parse_target(args.target)
    model = zoo.fetch(args.model)
    budget = parse_duration(str(args.time_budget)) if args.time_budget else None
    with tempfile.TemporaryDirectory(prefix="dlc-bench-") as tmp:
        logs = args.logs or Path(tmp) / "logs"
        loaded = frontend.load_model(model, input_shapes=zoo.MODELS[args.model].input_shapes)
        optimized = pipeline.optimize(frontend.import_model(loaded), spec)
        started = time.perf_counter()
        last = [0.0]

        def progress(p: tuning.Progress) -> None:
            if p.elapsed - last[0] >= 30:
                last[0] = p.elapsed
                est = f"{p.estimated_model_us / 1e3:.2f} ms" if p.estimated_model_us else "-"
                print(f"  {p.elapsed / 60:5.1f} min  {p.trials_done}/{p.trial_budget} trials  est. {est}", flush=True)

        result = tuning.tune(optimized, spec, logs=logs, trials=args.trials, time_budget=budget, on_progress=progress)
        tune_s = time.perf_counter() - started
        errors = sum(o.build_errors + o.run_errors for o in result.tasks)
        tuned = build.build(optimized, spec, output=Path(tmp) / "tuned.so", tuning_logs=logs)
        untuned = build.build(optimized, spec, output=Path(tmp) / "untuned.so")
        report = verify(model, tuned.library)
        bench = compare_latency(model, {"untuned": untuned.library, "tuned": tuned.library})

    print(f"\n{args.model}: {result.trials_run} trials in {tune_s / 60:.1f} min (stopped by {result.stopped_by}), "
          f"{errors} failed candidates, records on {tuned.tuning.tasks_with_records}/{tuned.tuning.tasks_total} "
          f"kernels ({tuned.tuning.flops_share:.0%} of FLOPs), tuned build verified: {report.passed}, "
          f"tuned compile {tuned.seconds:.1f} s")
    print(f"{'engine':<12}{'median ms':>10}{'vs ORT':>8}")
    for latency in bench.latencies:
        print(f"{latency.engine:<12}{latency.median_ms:>10.3f}{bench.ratio(latency.engine):>7.2f}x")
    print(f"tuned speed-up over untuned: {bench.median('untuned') / bench.median('tuned'):.2f}x "
          f"({bench.threads} threads each, {bench.rounds}x{bench.block} calls per engine)")
    peers = [l.median_ms for l in bench.latencies if l.engine in ("onnxruntime", "openvino")]
    print(f"tuned / faster peer: {bench.median('tuned') / min(peers):.2f}x")
    point = tuning.gain_point(result.curve)
    if point is not None:
        print(f"tuning curve: {result.curve[0].estimated_us / 1e3:.3f} -> {result.curve[-1].estimated_us / 1e3:.3f} ms "
              f"(estimated); 90% of the gain after {point.trials} of {result.curve[-1].trials} trials "
              f"({point.seconds / 60:.1f} min)")


if __name__ == "__main__":
    main()
