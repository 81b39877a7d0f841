"""What the index checks (dlc.bounds) cost on a BERT-shaped encoder.

    .venv/bin/python bench/index_checks.py [--layers 4] [--rounds 20] [--calls 20]

Builds a BERT-like encoder with onnx.helper (input_ids and token_type_ids int64 [1x128]:
Gather from a 30522x384 word table and a 2x384 type table, both checked; a constant
position Gather, not checked; then LAYERS encoder layers of MatMul/Add, 12-head attention
with Softmax, LayerNormalization and a 1536-wide Relu FFN; random weights), compiles it for
`host` twice, with and without the check pass, and times both libraries in one process:
alternating blocks of CALLS calls for ROUNDS rounds, the first call of each block dropped,
medians of the per-call times. TVM_NUM_THREADS=2, as the other benches. Also prints the
check kernels' own time (time_evaluator) and, as the fixed cost of one check, a one-node
Gather (tests/models.py gather_table) with and without it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

THREADS = 2
os.environ["TVM_NUM_THREADS"] = str(THREADS)  # read once, when tvm's runtime starts
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.models import SEQ, VOCAB, bert_like  # noqa: E402


def compile_model(model: Path, output: Path, *, checks: bool):
    import tvm

    from dlc import bounds, build, frontend, pipeline
    from dlc.target import parse_target

    spec = parse_target("host")
    real = bounds.index_check_pass
    if not checks:  # pipeline._graph_passes imports it at call time: swap in a no-op pass
        bounds.index_check_pass = lambda: tvm.transform.Sequential([], name="NoIndexChecks")
    try:
        optimized = pipeline.optimize(frontend.import_model(frontend.load_model(model)), spec)
    finally:
        bounds.index_check_pass = real
    checks = [g.name_hint for g in optimized.mod.functions if g.name_hint.startswith(bounds.CHECK_KERNEL)]
    return build.build(optimized, spec, output=output), checks


def time_check_kernels(library: Path, names: list[str]) -> float:
    """Microseconds per model call spent in the check kernels, each timed on its own
    (time_evaluator: noise-robust where the whole-model medians are not)."""
    import numpy as np
    import tvm

    kernels = tvm.runtime.load_module(str(library)).imports[0]
    device = tvm.cpu()
    ids = tvm.runtime.tensor(np.zeros((1, SEQ), np.int64), device)  # in range for both tables
    out = tvm.runtime.empty((1, SEQ), "int64", device)
    total = 0.0
    for name in names:
        timer = kernels.time_evaluator(name, device, number=2000, repeat=7)
        total += statistics.median(timer(ids, out).results) * 1e6
    return total


def alternate(calls: dict, *, rounds: int, block: int) -> dict[str, float]:
    """Median ms per call of each zero-argument callable, timed in alternating blocks."""
    samples: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(rounds):
        for label, call in calls.items():
            times = []
            for _ in range(block + 1):
                started = time.perf_counter()
                call()
                times.append(time.perf_counter() - started)
            samples[label] += times[1:]  # the first call of a block warms caches back up
    return {label: statistics.median(times) * 1e3 for label, times in samples.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=20, help="calls per block")
    args = parser.parse_args(argv)

    import numpy as np
    import onnxruntime
    import tvm

    from dlc.errors import InputError
    from dlc.runtime import load_library
    from tests import models

    print(f"# {time.strftime('%Y-%m-%d')}  tvm {tvm.__version__}  {THREADS} threads  "
          f"{args.layers} layers  {args.rounds} rounds of {args.calls} calls")
    print(f"# load average before: {os.getloadavg()[0]:.2f}")
    rng = np.random.default_rng(1)
    inputs = {"input_ids": rng.integers(0, VOCAB, (1, SEQ)).astype(np.int64),
              "token_type_ids": rng.integers(0, 2, (1, SEQ)).astype(np.int64)}
    with tempfile.TemporaryDirectory(prefix="dlc-bench-") as tmp:
        model = bert_like(Path(tmp) / "bert_like.onnx", layers=args.layers)
        reference = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, inputs)[0]
        libraries, gathers = {}, {}
        for label, checks in (("checked", True), ("unchecked", False)):
            built, names = compile_model(model, Path(tmp) / f"{label}.so", checks=checks)
            library = load_library(built.library)
            error = float(np.abs(library.run(inputs)["last_hidden_state"] - reference).max())
            print(f"# {label}: {built.kernels} kernels, {len(names)} index checks, max abs error vs ORT {error:.1e}")
            libraries[label] = library
            if names:
                kernels_us = time_check_kernels(built.library, names)
            # The fixed cost of one check (VM dispatch + kernel), where nothing else hides it.
            tiny, _ = compile_model(models.gather_table(Path(tmp) / "gather.onnx"), Path(tmp) / f"g{label}.so",
                                    checks=checks)
            gathers[label] = load_library(tiny.library).bind({"ids": np.arange(16, dtype=np.int64).reshape(1, 16)})
        try:
            libraries["checked"].run({**inputs, "input_ids": np.full((1, SEQ), VOCAB, np.int64)})
            print("# checked library ACCEPTED input_ids = 30522")
        except InputError as err:
            print(f"# checked library refuses input_ids = 30522: {err.message}")

        bert = alternate({label: lib.bind(inputs) for label, lib in libraries.items()},
                         rounds=args.rounds, block=args.calls)
        gather = alternate(gathers, rounds=args.rounds, block=50 * args.calls)
    checked, unchecked = bert["checked"], bert["unchecked"]
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    print(f"checked   median {checked:.3f} ms  ({args.rounds * args.calls} calls)")
    print(f"unchecked median {unchecked:.3f} ms  ({args.rounds * args.calls} calls)")
    print(f"ratio checked/unchecked {checked / unchecked:.4f}")
    print(f"check kernels alone {kernels_us:.2f} us per call ({kernels_us / 1e3 / unchecked:.4%} of unchecked)")
    print(f"one Gather[1000x4] of 16 ids: checked {gather['checked'] * 1e3:.2f} us, "
          f"unchecked {gather['unchecked'] * 1e3:.2f} us per call")


if __name__ == "__main__":
    main()
