"""Where a library's time goes: per-kernel time, FLOPs and the ONNX nodes each kernel computes.

The Relax VM calls an instrument before and after every call it makes (kernels and builtins
such as allocations); the gap between them is the call's time. The timer's own cost (a
Python callback, about a µs a call) is measured (runs with and without it alternate) and
taken out: half of it falls inside each timed window. The VM's overhead is the run time
without the timer minus the kernels' time. The kernel -> ONNX node
map and the FLOPs come from the manifest (dlc.nodemap, written at build time).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from dlc.errors import InputError

OVERHEAD = "VM overhead"


@dataclass(frozen=True)
class KernelTime:
    name: str
    us: float  # per model run, all its calls
    calls: int  # per model run
    share: float  # of `Profile.total_us`
    flops: float | None  # per model run (None: not estimated)
    nodes: tuple[str, ...]  # "name (OpType)" of the ONNX nodes it computes

    @property
    def gflops_per_s(self) -> float | None:
        return self.flops / self.us / 1e3 if self.flops and self.us > 0 else None


@dataclass(frozen=True)
class BuiltinTime:
    name: str  # e.g. vm.builtin.alloc_tensor
    us: float
    calls: int


@dataclass(frozen=True)
class Profile:
    library: Path
    kernels: tuple[KernelTime, ...]  # heaviest first
    overhead_us: float  # plain run time minus the kernels' time (allocations, builtins, dispatch)
    builtins: tuple[BuiltinTime, ...]  # timed calls of the VM's builtins (part of the overhead)
    run_us: float  # mean run time without the timer (the quieter half of the runs)
    runs: int
    threads: int
    mapped_from: str  # "manifest", or why kernels have no nodes

    @property
    def total_us(self) -> float:
        return sum(k.us for k in self.kernels) + self.overhead_us

    @property
    def overhead_share(self) -> float:
        return self.overhead_us / self.total_us if self.total_us else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "library": str(self.library),
            "runs": self.runs,
            "threads": self.threads,
            "run_us": round(self.run_us, 2),
            "total_us": round(self.total_us, 2),
            "kernels": [
                {"name": k.name, "share": round(k.share, 5), "us": round(k.us, 2), "calls": k.calls,
                 "flops": k.flops, "gflops_per_s": None if k.gflops_per_s is None else round(k.gflops_per_s, 2),
                 "nodes": list(k.nodes)}
                for k in self.kernels
            ],
            "overhead": {"us": round(self.overhead_us, 2), "share": round(self.overhead_share, 5),
                         "builtins": [{"name": b.name, "us": round(b.us, 2), "calls": b.calls} for b in self.builtins]},
        }


def profile(
    library: Path | str,
    *,
    inputs: Mapping[str, Any] | None = None,
    seed: int = 0,
    runs: int = 20,
    warmup: int = 3,
    on_progress: Callable[[int, int], None] | None = None,
) -> Profile:
    """Time every call `library` makes over `runs` runs (after `warmup` untimed ones).

    `inputs` may name only some inputs; the rest are seeded random, as in `dlc run`."""
    from dlc.bench import tvm_threads
    from dlc.runtime import load_library
    from dlc.verify import make_inputs

    if runs < 1:
        raise InputError(f"--runs must be at least 1, not {runs}", hint="pass e.g. --runs 20")
    loaded = load_library(library)
    table: dict[str, dict[str, Any]] = loaded.manifest.data.get("kernels") or {}
    call = loaded.bind(make_inputs(loaded.manifest.inputs, seed=seed, given=inputs))
    total_steps = warmup + 2 * runs
    step = 0

    def progress() -> None:
        nonlocal step
        step += 1
        if on_progress is not None:
            on_progress(step, total_steps)

    for _ in range(warmup):
        call()
        progress()
    spent: dict[str, int] = defaultdict(int)
    calls: dict[str, int] = defaultdict(int)
    opened: dict[str, int] = {}

    def timer(_func, name, before, _ret, *_args):
        if before:
            opened[name] = time.perf_counter_ns()
        else:
            spent[name] += time.perf_counter_ns() - opened.pop(name)
            calls[name] += 1
        return 0  # 0: keep running (1 would skip the call)

    # Runs with and without the timer alternate, so both see the same machine (other loads,
    # clock changes). Means over the quieter half of the runs of each kind: means, because a
    # mean of sums is the sum of means (kernels and overhead add up to the run time); the
    # quieter half, because a run in which another process took a core says nothing of the code.
    plain, timed_runs, per_run = [], [], []
    try:
        for _ in range(runs):
            started = time.perf_counter()
            call()
            plain.append((time.perf_counter() - started) * 1e6)
            progress()
            before = dict(spent)
            loaded.set_instrument(timer)
            started = time.perf_counter()
            call()
            timed_runs.append((time.perf_counter() - started) * 1e6)
            loaded.set_instrument(None)
            per_run.append({name: ns - before.get(name, 0) for name, ns in spent.items()})
            progress()
    finally:
        loaded.set_instrument(None)

    kernel_names = [name for name in spent if name in table or not name.startswith("vm.builtin")]
    builtin_names = [name for name in spent if name not in kernel_names]
    quiet_plain = [t for t in plain if t <= statistics.median(plain)]
    cutoff = statistics.median(timed_runs)
    quiet = [ns for ns, t in zip(per_run, timed_runs) if t <= cutoff]
    run_us = statistics.fmean(quiet_plain)
    # The timer's cost per call, from the runs with and without it; about half of it (the
    # return from the first callback, the entry to the second) falls inside each window.
    calls_per_run = sum(calls.values()) / runs
    timed_us = statistics.fmean(t for t in timed_runs if t <= cutoff)
    bias = max(0.0, timed_us - run_us) / calls_per_run / 2 if calls_per_run else 0.0
    timed = {name: max(0.0, sum(r.get(name, 0) for r in quiet) / len(quiet) / 1e3 - bias * calls[name] / runs)
             for name in spent}
    kernel_us = {name: timed[name] for name in kernel_names}
    # The untimed run is the truth for the whole; what the kernels do not explain is the VM's.
    # (The builtins' own windows are too short to time: the timer's cost swamps them.)
    overhead = max(0.0, run_us - sum(kernel_us.values()))
    total = sum(kernel_us.values()) + overhead
    kernels = []
    for name in sorted(kernel_names, key=lambda n: -kernel_us[n]):
        entry = table.get(name, {})
        per_run_calls = calls[name] // runs
        flops = entry.get("flops")
        kernels.append(KernelTime(
            name=name, us=kernel_us[name], calls=per_run_calls, share=kernel_us[name] / total if total else 0.0,
            flops=flops * per_run_calls if flops else None, nodes=tuple(entry.get("nodes", ())),
        ))
    builtins = tuple(sorted(
        (BuiltinTime(name, timed[name], calls[name] // runs) for name in builtin_names),
        key=lambda b: -b.us,
    ))
    mapped_from = "manifest" if table else "not recorded (library built before dlc mapped kernels to nodes; rebuild it)"
    return Profile(Path(library), tuple(kernels), overhead, builtins, run_us, runs, tvm_threads(), mapped_from)

