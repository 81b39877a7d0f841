"""Latency of built libraries against ONNX Runtime, measured in one process.

ONNX Runtime's thread pool keeps spinning after each run and steals the cores from
whatever runs next, so engines are never timed call by call: each runs at its own
defaults in blocks, the blocks alternate for several rounds, the first call of every
block is dropped, and the median is compared.
"""

from __future__ import annotations

import math
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

ORT = "onnxruntime"
OPENVINO = "openvino"  # the faster peer on x86 CPUs; timed when installed (the `bench` extra)


@dataclass(frozen=True)
class Latency:
    engine: str
    median_ms: float
    min_ms: float
    samples: int
    p90_ms: float = float("nan")
    rss_mb: float | None = None  # resident memory the engine added when loaded and run once

    @property
    def per_second(self) -> float:
        """Throughput of one stream: runs per second at the median latency."""
        return 1e3 / self.median_ms if self.median_ms > 0 else float("inf")


@dataclass(frozen=True)
class BenchResult:
    latencies: tuple[Latency, ...]
    threads: int
    rounds: int
    block: int
    peak_rss_mb: float | None = None  # of the whole process (every engine, Python, TVM)

    def median(self, engine: str) -> float:
        return next(l.median_ms for l in self.latencies if l.engine == engine)

    def ratio(self, engine: str, reference: str = ORT) -> float:
        return self.median(engine) / self.median(reference)


def tvm_threads() -> int:
    """The size of TVM's thread pool in this process (dlc sets TVM_NUM_THREADS on import)."""
    import tvm

    return int(tvm.runtime.num_threads())


def compare_latency(
    model_path: Path | str,
    libraries: Mapping[str, Path | str],
    *,
    threads: int | None = None,
    rounds: int = 4,
    block: int | None = None,
    block_seconds: float = 0.25,
    seed: int = 0,
    inputs: Mapping[str, Any] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> BenchResult:
    """Median latency of each library (by label) and of ONNX Runtime on `model_path`.

    `block` calls per engine per round; by default as many as fill `block_seconds` (at
    least 10), so that a sub-millisecond model is not timed in 10 ms slivers of noise.
    `on_progress(calls_done, calls_total)` after every block."""
    import onnxruntime as ort

    from dlc.runtime import load_library
    from dlc.frontend import read_onnx
    from dlc.verify import make_inputs

    # ONNX Runtime gets as many threads as TVM's pool has, which is fixed for the process.
    threads = threads or tvm_threads()
    rss: dict[str, float] = {}
    with _rss_added(rss, "_loaded"):
        loaded = {name: load_library(path) for name, path in libraries.items()}
    first = next(iter(loaded.values()))
    # With the model, integer inputs used as indices (token ids) get values in range.
    inputs = make_inputs(first.manifest.inputs, seed=seed, given=inputs, model=read_onnx(Path(model_path)))
    runners = {}
    for name, lib in loaded.items():
        with _rss_added(rss, name):
            runners[name] = lib.bind(inputs)
            runners[name]()
    if len(loaded) == 1:  # the code and constants loaded with the library are its alone
        rss[next(iter(loaded))] += rss.pop("_loaded")
    with _rss_added(rss, ORT):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        runners[ORT] = lambda: session.run(None, inputs)
        runners[ORT]()
    with _rss_added(rss, OPENVINO):
        openvino = _openvino_runner(model_path, inputs, threads)
        if openvino is not None:
            runners[OPENVINO] = openvino
            openvino()

    if block is None:
        slowest = 0.0
        for run in runners.values():
            run()  # warm up
            started = time.perf_counter()
            run()
            slowest = max(slowest, time.perf_counter() - started)
        block = max(10, min(1000, int(block_seconds / max(slowest, 1e-6))))
    samples: dict[str, list[float]] = {name: [] for name in runners}
    total, done = rounds * len(runners) * (block + 1), 0
    for _ in range(rounds):
        for name, run in runners.items():
            for i in range(block + 1):
                started = time.perf_counter()
                run()
                if i:  # the first call of a block pays for the other engine's spinning threads
                    samples[name].append((time.perf_counter() - started) * 1e3)
            done += block + 1
            if on_progress is not None:
                on_progress(done, total)
    latencies = tuple(
        Latency(name, statistics.median(times), min(times), len(times), _percentile(times, 0.9), rss.get(name))
        for name, times in samples.items()
    )
    return BenchResult(latencies, threads, rounds, block, _peak_rss_mb())


def bench_json(result: BenchResult, *, library_bytes: int | None = None) -> dict[str, Any]:
    """`dlc bench --json`: every engine's numbers, the ratio to ONNX Runtime, memory and sizes."""
    return {
        "threads": result.threads,
        "rounds": result.rounds,
        "block": result.block,
        "engines": [
            {"engine": l.engine, "median_ms": round(l.median_ms, 6), "p90_ms": round(l.p90_ms, 6),
             "min_ms": round(l.min_ms, 6), "samples": l.samples, "runs_per_second": round(l.per_second, 2),
             "vs_onnxruntime": round(result.ratio(l.engine), 5),
             "rss_added_mb": None if l.rss_mb is None else round(l.rss_mb, 1)}
            for l in result.latencies
        ],
        "peak_rss_mb": None if result.peak_rss_mb is None else round(result.peak_rss_mb, 1),
        "library_bytes": library_bytes,
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@contextmanager
def _rss_added(into: dict[str, float], name: str):
    """Resident memory (MB) the block added to the process, stored under `name`."""
    import psutil

    process = psutil.Process()
    before = process.memory_info().rss
    yield
    into[name] = into.get(name, 0.0) + max(0, process.memory_info().rss - before) / 2**20


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _openvino_runner(model_path: Path | str, inputs: Mapping[str, Any], threads: int):
    """OpenVINO on the same inputs and threads, or None when it is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    model = core.read_model(str(model_path))
    model.reshape({name: list(array.shape) for name, array in inputs.items()})
    # fp32 like dlc and ORT: on CPUs with avx512_bf16 or AMX, OpenVINO otherwise runs bf16
    # (nudenet on Zen 5: 3.1 ms bf16, 6.0 ms fp32), a different accuracy contract.
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    feeds = dict(inputs)
    return lambda: request.infer(feeds)
