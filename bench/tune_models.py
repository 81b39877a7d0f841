"""Tuned dlc vs untuned dlc vs ONNX Runtime on the real models, with the tuning time; and what
another model's tuning logs give a new model (cold vs warm-started cost model, transfer).

    .venv/bin/python bench/tune_models.py ppocr-cls --trials 300
    .venv/bin/python bench/tune_models.py nudenet-320n --trials 100000 --time-budget 20m
    .venv/bin/python bench/tune_models.py ppocr-cls --trials 300 --cold           # no warm start
    .venv/bin/python bench/tune_models.py ppocr-cls --transfer-only --logs DIR    # no search

Tunes for `host` into a fresh log directory (or --logs DIR to resume one), builds with and
without the records, verifies the tuned build, and times the three in alternating blocks in
one process with the same thread count (dlc.bench.compare_latency).

With `--from STORE` (a --logs directory another model was tuned into), each run named by
`--runs` starts from its own copy of STORE (in which this model's default schedules were
timed once, a baseline all runs share), so they differ only in how they use it:

    cold      tuning with --cold: the cost model learns from this model's trials only
    warm      tuning with the cost model trained on STORE's records first (dlc tune's default)
    transfer  --transfer-only: STORE's records replayed on this model's kernels, no search

    .venv/bin/python bench/tune_models.py nudenet-320n --logs /tmp/x --trials 100000 --time-budget 20m
    .venv/bin/python bench/tune_models.py ppocr-cls --from /tmp/x --runs cold,warm --trials 100000 --time-budget 5m
    .venv/bin/python bench/tune_models.py ppocr-cls --from /tmp/x --runs cold,transfer --trials 100000 --time-budget 5m

It prints, per run, the trials (and minutes) to 90% of that run's gain and the estimated
model time after 1/5 of the budget (of --time-budget if given, else of the trials run);
for warm, the trials it took to come within 5% of the cold run's final estimate; for
transfer, its time and the share of the cold run's gain it reached (measured builds, and
estimated from kernel timings). Kernels the two models share already have STORE's records
in every run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RUNS = ("cold", "warm", "transfer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a dlc.zoo model name, e.g. ppocr-cls or nudenet-320n")
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--time-budget", default=None, help="seconds, or e.g. 20m")
    parser.add_argument("--target", default="host")
    parser.add_argument("--logs", type=Path, default=None)
    parser.add_argument("--cold", action="store_true", help="dlc tune --cold")
    parser.add_argument("--transfer-only", action="store_true", help="dlc tune --transfer-only")
    parser.add_argument("--from", dest="source", type=Path, default=None, metavar="STORE",
                        help="compare runs that start from copies of this log directory")
    parser.add_argument("--runs", default="cold,warm,transfer", help=f"with --from: some of {','.join(RUNS)}")
    args = parser.parse_args()
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if args.source is not None and (args.logs or args.cold or args.transfer_only):
        parser.error("--from makes its own copies of STORE: leave out --logs, --cold and --transfer-only")
    if args.source is not None and (not runs or set(runs) - set(RUNS)):
        parser.error(f"--runs takes some of {','.join(RUNS)}, not {args.runs!r}")
    if args.source is not None and not args.source.is_dir():
        parser.error(f"--from {args.source}: no such directory")

    from dlc import frontend, pipeline, zoo
    from dlc.cli import parse_duration
    from dlc.target import parse_target

    spec = parse_target(args.target)
    model = zoo.fetch(args.model)
    budget = parse_duration(str(args.time_budget)) if args.time_budget else None
    loaded = frontend.load_model(model, input_shapes=zoo.MODELS[args.model].input_shapes)
    optimized = pipeline.optimize(frontend.import_model(loaded), spec)
    with tempfile.TemporaryDirectory(prefix="dlc-bench-") as tmp:
        if args.source is None:
            logs = args.logs or Path(tmp) / "logs"
            result = _tune(optimized, spec, logs, args.trials, budget, warm=not args.cold,
                           transfer_only=args.transfer_only)
            _single(args.model, model, optimized, spec, logs, result, Path(tmp))
        else:
            # The model's default schedules timed once, in a copy every run starts from: the
            # runs' estimates then share one baseline (timed in each run, the defaults differed
            # by 10% from run to run on the VM).
            primed = Path(tmp) / "primed"
            shutil.copytree(args.source, primed)
            print(f"timing the default schedules into a copy of {args.source}", flush=True)
            _tune(optimized, spec, primed, 0, None, warm=False, transfer_only=False)
            results = {}
            for run in RUNS:
                if run in runs:
                    logs = Path(tmp) / run
                    shutil.copytree(primed, logs)
                    print(f"{run}: tuning from a copy of {args.source}", flush=True)
                    results[run] = (_tune(optimized, spec, logs, args.trials, budget, warm=run != "cold",
                                          transfer_only=run == "transfer"), logs)
            _compare(model, optimized, spec, results, budget, Path(tmp))


def _tune(optimized, spec, logs, trials, budget, *, warm, transfer_only):
    from dlc import tuning

    last = [0.0]

    def progress(p: tuning.Progress) -> None:
        if p.elapsed - last[0] >= 30:
            last[0] = p.elapsed
            est = f"{p.estimated_model_us / 1e3:.2f} ms" if p.estimated_model_us else "-"
            print(f"  {p.elapsed / 60:5.1f} min  {p.trials_done}/{p.trial_budget} trials  est. {est}", flush=True)

    return tuning.tune(optimized, spec, logs=logs, trials=trials, time_budget=budget, on_progress=progress,
                       warm=warm, transfer_only=transfer_only)


def _single(name, model, optimized, spec, logs, result, tmp: Path) -> None:
    from dlc import build, tuning
    from dlc.bench import compare_latency
    from dlc.verify import verify

    errors = sum(o.build_errors + o.run_errors for o in result.tasks)
    tuned = build.build(optimized, spec, output=tmp / "tuned.so", tuning_logs=logs)
    untuned = build.build(optimized, spec, output=tmp / "untuned.so")
    report = verify(model, tuned.library)
    bench = compare_latency(model, {"untuned": untuned.library, "tuned": tuned.library})

    print(f"\n{name}: {result.trials_run} trials in {result.seconds / 60:.1f} min (stopped by {result.stopped_by}), "
          f"{errors} failed candidates, records on {tuned.tuning.tasks_with_records}/{tuned.tuning.tasks_total} "
          f"kernels ({tuned.tuning.flops_share:.0%} of FLOPs), tuned build verified: {report.passed}, "
          f"tuned compile {tuned.seconds:.1f} s")
    if result.warm_start is not None:
        print(_warm_line(result.warm_start))
    if result.stopped_by == "transferred":
        print(_transfer_line(result))
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


def _warm_line(warm) -> str:
    return (f"cost model warm-started on {warm.records} records of {warm.kernels} other kernels in "
            f"{warm.seconds:.1f} s" if warm.records else "no records of other kernels to warm-start the cost model on")


def _transfer_line(result) -> str:
    kept = sum(o.kept for o in result.transfers)
    return (f"transfer: {len(result.transfers)} kernels had kernels of their class in the store, {kept} got a "
            f"record; {result.trials_run} candidates measured, {result.seconds:.1f} s in all")


def _at_fifth(curve, budget: float | None):
    """The last curve point within a fifth of the budget (seconds if one was given, else trials)."""
    if not curve:
        return None
    if budget is not None:
        return [p for p in curve if p.seconds <= budget / 5][-1:] or [curve[0]]
    return [p for p in curve if p.trials <= curve[-1].trials / 5][-1:] or [curve[0]]


def _compare(model, optimized, spec, results, budget, tmp: Path) -> None:
    from dlc import build, tuning
    from dlc.bench import compare_latency
    from dlc.logstore import MEASURABLE_GAIN
    from dlc.verify import verify

    libraries = {"untuned": build.build(optimized, spec, output=tmp / "untuned.so").library}
    for run, (result, logs) in results.items():
        built = build.build(optimized, spec, output=tmp / f"{run}.so", tuning_logs=logs)
        report = verify(model, built.library)
        libraries[run] = built.library
        print(f"{run}: records on {built.tuning.tasks_with_records}/{built.tuning.tasks_total} kernels "
              f"({built.tuning.flops_share:.0%} of FLOPs), verified: {report.passed}")
    bench = compare_latency(model, libraries)

    print(f"\n{'run':<10}{'trials':>8}{'min':>7}{'90% at trials (min)':>22}{'est. at 1/5':>13}"
          f"{'est. final':>12}{'measured ms':>13}")
    for run, (result, _) in results.items():
        curve = result.curve
        point = tuning.gain_point(curve)
        fifth = _at_fifth(curve, budget)
        print(f"{run:<10}{result.trials_run:>8}{result.seconds / 60:>7.1f}"
              f"{(f'{point.trials} ({point.seconds / 60:.1f})' if point else '-'):>22}"
              f"{(f'{fifth[0].estimated_us / 1e3:.3f} ms' if fifth else '-'):>13}"
              f"{(f'{curve[-1].estimated_us / 1e3:.3f} ms' if curve else '-'):>12}{bench.median(run):>13.3f}")
        if result.warm_start is not None:
            print(f"{'':<10}{_warm_line(result.warm_start)}")
    for latency in bench.latencies:
        if latency.engine not in results:  # untuned and the peers
            print(f"{latency.engine:<10}{'':>62}{latency.median_ms:>13.3f}")

    cold = results.get("cold", (None,))[0]
    warm = results.get("warm", (None,))[0]
    if cold is not None and warm is not None and cold.curve and warm.curve:
        goal = cold.curve[-1].estimated_us * 1.05
        reached = next((p for p in warm.curve if p.estimated_us <= goal), None)
        print(f"\nwarm vs cold: within 5% of cold's final estimate ({cold.curve[-1].estimated_us / 1e3:.3f} ms) "
              + (f"after {reached.trials} of cold's {cold.curve[-1].trials} trials "
                 f"({reached.trials / max(cold.curve[-1].trials, 1):.0%}, {reached.seconds / 60:.1f} min)"
                 if reached else "never"))
    transfer = results.get("transfer", (None,))[0]
    if transfer is not None:
        kept = [o for o in transfer.transfers if o.kept]
        print("\n" + _transfer_line(transfer))
        if cold is not None:
            untuned = bench.median("untuned")
            own, got = untuned - bench.median("cold"), untuned - bench.median("transfer")
            estimated_own = cold.curve[0].estimated_us - cold.curve[-1].estimated_us if cold.curve else 0.0
            estimated_got = sum(o.weight * (o.default_us - o.best_us) for o in kept)
            print(f"share of the cold run's own gain reached by transfer: measured {got / own:.0%} "
                  f"({got:.3f} of {own:.3f} ms)" if own > untuned * MEASURABLE_GAIN else
                  f"share of the cold run's own gain: not measurable, the cold build is {own:.3f} ms faster than "
                  f"untuned ({untuned:.3f} ms), within the {MEASURABLE_GAIN:.0%} noise")
            if estimated_own > 0:
                print(f"  estimated from kernel timings: {estimated_got / estimated_own:.0%} "
                      f"({estimated_got / 1e3:.3f} of {estimated_own / 1e3:.3f} ms)")
    print(f"({bench.threads} threads each, {bench.rounds}x{bench.block} calls per engine, alternating blocks)")


if __name__ == "__main__":
    main()
