"""The README's performance table: untuned dlc, tuned dlc, ONNX Runtime (and OpenVINO when
installed) on the real models, with the tuning time, the machine and the versions.

    .venv/bin/python bench/perf_table.py                                  # nudenet-320n, ppocr-cls, 5 min each
    .venv/bin/python bench/perf_table.py ppocr-cls --time-budget 3m --out bench/results/perf_table.md

Each model: compiled with dlc's default schedules, tuned for `host` into a fresh log
directory for --time-budget (bench/tune_models.py's `_tune`), built again with the records,
verified, then the two libraries and the peers timed in alternating blocks in one process
with the same thread count (dlc.bench.compare_latency, what `dlc bench` runs). Prints a
Markdown table; --out also writes it. Run it on a quiet machine: the load is printed with it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tune_models import _tune  # noqa: E402  (bench/ is the script's own folder)

DEFAULT_MODELS = ("nudenet-320n", "ppocr-cls")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=list(DEFAULT_MODELS), help="dlc.zoo model names")
    parser.add_argument("--time-budget", default="5m", help="tuning time per model, e.g. 5m")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = parser.parse_args()

    from dlc.cli import parse_duration

    budget = parse_duration(args.time_budget)
    rows = [_measure(name, budget) for name in args.models]
    text = _header() + "\n\n" + _table(rows) + "\n"
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


def _measure(name: str, budget: float) -> dict:
    from dlc import build, frontend, pipeline, zoo
    from dlc.bench import compare_latency
    from dlc.target import parse_target
    from dlc.verify import verify

    spec = parse_target("host")
    model = zoo.fetch(name)
    loaded = frontend.load_model(model, input_shapes=zoo.MODELS[name].input_shapes)
    optimized = pipeline.optimize(frontend.import_model(loaded), spec)
    with tempfile.TemporaryDirectory(prefix="dlc-perf-") as tmp:
        logs = Path(tmp) / "logs"
        untuned = build.build(optimized, spec, output=Path(tmp) / "untuned.so")
        print(f"{name}: tuning for {budget / 60:.0f} min", flush=True)
        started = time.perf_counter()
        result = _tune(optimized, spec, logs, 100_000, budget, warm=True, transfer_only=False)
        tuning_s = time.perf_counter() - started
        tuned = build.build(optimized, spec, output=Path(tmp) / "tuned.so", tuning_logs=logs)
        if not verify(model, tuned.library).passed:
            raise SystemExit(f"{name}: the tuned library does not match ONNX Runtime")
        bench = compare_latency(model, {"untuned": untuned.library, "tuned": tuned.library})
    return {"name": name, "description": zoo.MODELS[name].description, "shapes": zoo.MODELS[name].input_shapes,
            "bench": bench, "tuning_s": tuning_s, "trials": result.trials_run,
            "compile_s": untuned.seconds, "tuned_kernels": f"{tuned.tuning.tasks_with_records}/{tuned.tuning.tasks_total}"}


def _header() -> str:
    import onnxruntime
    import tvm

    from dlc import __version__, usable_cpus
    from dlc.hostcpu import host_cpu_name
    from dlc.provenance import cpu_model_name

    try:
        import openvino

        peer = f", openvino {openvino.__version__}"
    except ImportError:
        peer = ""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {cpu_model_name()} "
            f"(LLVM: {host_cpu_name()}), {usable_cpus()} usable cores, load average at the end {load}; "
            f"dlc {__version__}, tvm {tvm.__version__}, onnxruntime {onnxruntime.__version__}{peer}.")


def _table(rows: list[dict]) -> str:
    peers = [e for e in ("onnxruntime", "openvino") if all(any(l.engine == e for l in r["bench"].latencies) for r in rows)]
    head = ["model", "compile s", "tuning", "tuned kernels", "untuned ms", "tuned ms",
            *(f"{'ORT' if p == 'onnxruntime' else 'OpenVINO'} ms" for p in peers),
            "tuned / untuned", "untuned / ORT", "tuned / ORT"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        b = r["bench"]
        shape = ", ".join("x".join(map(str, s)) for s in r["shapes"].values())
        cells = [f"{r['name']} ({shape})", f"{r['compile_s']:.1f}", f"{r['tuning_s'] / 60:.1f} min, {r['trials']} trials",
                 r["tuned_kernels"], f"{b.median('untuned'):.3f}", f"{b.median('tuned'):.3f}",
                 *(f"{b.median(p):.3f}" for p in peers),
                 f"{b.median('tuned') / b.median('untuned'):.2f}", f"{b.ratio('untuned'):.2f}", f"{b.ratio('tuned'):.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
