"""Building and timing candidate kernels: the pluggable half of tuning.

A builder turns scheduled kernels into loadable artifacts, a runner times them: on this
machine by default, or on boards through TVM's RPC tracker (`dlc.boards.measuring_on`: an
`ms.runner.RPCRunner` and this builder with a cross-linking export) behind the same `measure`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tvm.s_tir import meta_schedule as ms

log = logging.getLogger(__name__)

Outcome = tuple[tuple[float, ...] | None, str | None]  # (run seconds, error) of one candidate


def load_cpu_tensor_intrinsics() -> None:
    """Register only the CPU tensor intrinsics MetaSchedule may use (x86, ARM, RISC-V).

    `tvm.s_tir.tensor_intrin` also registers the CUDA ones, which costs ~20 s per process
    here (the CPU ones ~1 s), and MetaSchedule imports it in every TuneContext and build.
    """
    import importlib
    import sys
    import types

    import tvm.s_tir

    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    package = types.ModuleType(name)
    package.__path__ = [str(Path(tvm.s_tir.__path__[0]) / "tensor_intrin")]
    package.__package__ = name
    sys.modules[name] = package
    for sub in ("x86", "arm_cpu", "riscv_cpu"):
        try:
            importlib.import_module(f"{name}.{sub}")
        except Exception as err:  # an intrinsic set that fails to load only limits the search
            log.warning("could not register %s tensor intrinsics: %s", sub, err)


def pooled_builder(*, timeout_sec: float = 60.0, batches_per_worker: int = 50, f_build=None,
                   f_export=None) -> ms.builder.Builder:
    """Builds candidates in one persistent worker process with a timeout: an LLVM hang or
    crash costs that candidate and a restart, never the run. The stock LocalBuilder starts a
    fresh pool per batch whose workers each import tvm.s_tir.tensor_intrin (30-40 s here)
    and time out; this worker registers only the CPU intrinsics, once. It is replaced every
    `batches_per_worker` batches (LocalBuilder's reason for fresh pools: workers leak memory).
    `f_build`: a replacement for MetaSchedule's default build (tests); `f_export`: for its
    default export (cross-linked libraries for boards, dlc.boards.export_function)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.builder.local_builder import _worker_func
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class PooledBuilder(ms.builder.PyBuilder):
        def __init__(self):
            super().__init__()
            self.pool = None
            self.batches = 0

        def build(self, build_inputs):
            if self.pool is None or self.batches >= batches_per_worker:
                if self.pool is not None:
                    self.pool.shutdown()
                self.pool = PopenPoolExecutor(max_workers=1, timeout=timeout_sec,
                                              initializer=load_cpu_tensor_intrinsics)
                self.batches = 0
            self.batches += 1
            jobs = [(f_build, f_export, b.mod, b.target, None) for b in build_inputs]
            results = []
            for outcome in self.pool.map_with_error_catching(lambda job: _worker_func(*job), jobs):
                if outcome.status == StatusKind.COMPLETE:
                    results.append(ms.builder.BuilderResult(outcome.value, None))
                elif outcome.status == StatusKind.TIMEOUT:
                    results.append(ms.builder.BuilderResult(None, f"timed out after {timeout_sec:g} s"))
                else:  # an exception, or the worker died: a bad candidate is data
                    results.append(ms.builder.BuilderResult(None, reason(str(outcome.value))))
            return results

    return PooledBuilder()


def local_runner(*, timeout_sec: float = 30.0) -> ms.runner.Runner:
    """Times candidates in one persistent worker process, so a crashing kernel costs a restart."""
    from tvm.s_tir import meta_schedule as ms

    config = ms.runner.EvaluatorConfig(number=1, repeat=3, min_repeat_ms=20, enable_cpu_cache_flush=False)
    return ms.runner.LocalRunner(timeout_sec=timeout_sec, evaluator_config=config)


def reason(err: BaseException | str) -> str:
    text = str(err).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else type(err).__name__)[:300]


def measure(builder, runner, target, mods_and_args) -> list[Outcome]:
    """Build and run each (mod, args_info); return (run_secs, error) per item, in order."""
    import shutil

    from tvm.s_tir import meta_schedule as ms

    built = builder.build([ms.builder.BuilderInput(mod, target) for mod, _ in mods_and_args])
    outcomes: list[Outcome] = [(None, None)] * len(built)
    to_run = []
    for i, result in enumerate(built):
        if result.error_msg:
            outcomes[i] = (None, "build: " + reason(result.error_msg))
        else:
            to_run.append(i)
    futures = runner.run(
        [ms.runner.RunnerInput(str(built[i].artifact_path), "cpu", mods_and_args[i][1]) for i in to_run]
    )
    for i, future in zip(to_run, futures):
        result = future.result()
        if result.error_msg:
            outcomes[i] = (None, "run: " + reason(result.error_msg))
        else:
            outcomes[i] = (tuple(float(s) for s in result.run_secs), None)
        shutil.rmtree(Path(str(built[i].artifact_path)).parent, ignore_errors=True)
    return outcomes
