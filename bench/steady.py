"""Do repeated benchmark runs of one build agree? (issue 9: within 10%)

    .venv/bin/python bench/steady.py [MODEL ...] [--runs 5] [--target host] [--library X.so]

Builds each zoo model once without tuning (or takes --library), then times it with
`dlc.bench.compare_latency` (dlc, ONNX Runtime and, when installed, OpenVINO in alternating
blocks) in `--runs` fresh processes, one after another, and prints each run's medians and,
per engine, the spread (slowest / fastest run median). A run is a new process because the
slow mode this script was written to catch belongs to a process, not to a call.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_MODELS = ("ppocr-cls", "nudenet-320n")


def child(model: str, library: str) -> None:
    from dlc import zoo
    from dlc.bench import compare_latency

    result = compare_latency(zoo.fetch(model), {"dlc": library})
    print(json.dumps({l.engine: l.median_ms for l in result.latencies}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=list(DEFAULT_MODELS))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--target", default="host")
    parser.add_argument("--library", default=None, help="time this build (of the one model given)")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "LIBRARY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    from dlc import build, frontend, pipeline, zoo
    from dlc.target import parse_target

    spec = parse_target(args.target)
    with tempfile.TemporaryDirectory(prefix="dlc-steady-") as tmp:
        for name in args.models:
            library = args.library
            if library is None:
                loaded = frontend.load_model(zoo.fetch(name), input_shapes=zoo.MODELS[name].input_shapes)
                optimized = pipeline.optimize(frontend.import_model(loaded), spec)
                library = str(build.build(optimized, spec, output=Path(tmp) / f"{name}.so").library)
            runs = []
            for i in range(args.runs):
                out = subprocess.run([sys.executable, __file__, "--child", name, library],
                                     check=True, capture_output=True, text=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"{name} run {i + 1}: " + ", ".join(f"{e} {ms:.3f} ms" for e, ms in runs[-1].items()),
                      flush=True)
            for engine in runs[0]:
                values = [r[engine] for r in runs]
                spread = max(values) / min(values)
                print(f"{name} {engine:<12} min {min(values):.3f}  max {max(values):.3f}  "
                      f"spread {spread:.3f}  {'ok' if spread <= 1.10 else 'UNSTEADY'} (<= 1.10)")


if __name__ == "__main__":
    main()
