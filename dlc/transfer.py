"""What the store's records of other kernels give a new one: schedules transferred to kernels
nobody tuned, and a cost model that starts from the team's history.

Transfer (`dlc tune --transfer-only`): a kernel with no record of its own takes the best
records of the store's kernels of its class (the same blocks, by name, with the same loops:
the same operator and fused epilogue) with the nearest shapes (smallest sum of |log ratio|
over the blocks' iteration extents; kernels whose records beat their own default first),
replays their traces on its own module with every tile decision fitted to its extents, and
measures the few that apply beside its default. Reusing schedules this way across 11 models
got on average 49% of full tuning's speed-up for a fraction of its search time
(Transfer-Tuning, PACT 2022).

Warm start: before a search, the XGBoost cost model is trained once on measured records of
other kernels, so its first predictions already rank candidates (a cold XGBModel predicts at
random until it has 100 samples). A few hundred records, not thousands: each costs a trace
replay (~7 ms on the 2-core VM) and a feature extraction (~5 ms), and the training ~1.5 s;
256 records took 4.4 s there (up to 20 s beside another job).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from dlc.logstore import MEASURABLE_GAIN, LogStore, Trial

if TYPE_CHECKING:
    import tvm
    from tvm.s_tir import meta_schedule as ms

log = logging.getLogger(__name__)

TRANSFER_CANDIDATES = 3  # measured per kernel
TRANSFER_SOURCES = 3  # nearest kernels of its class whose records are tried
TRANSFER_REPLAYS = 12  # traces tried per kernel at most, applying or not
WARM_START_RECORDS = 256
WARM_START_PER_KERNEL = 16


# ---------------------------------------------------------------------- kernel classes


@dataclass(frozen=True)
class KernelShape:
    """A kernel's class (its blocks' names and iteration kinds, its arguments' dtypes) and
    its shape (every block's iteration extents, in order)."""

    kind: tuple
    extents: tuple[int, ...]

    def distance(self, other: KernelShape) -> float:
        """Sum of |log ratio| of the extents; infinite across classes."""
        if self.kind != other.kind:
            return math.inf
        return sum(abs(math.log(max(a, 1) / max(b, 1))) for a, b in zip(self.extents, other.extents))


def kernel_shape(mod: tvm.IRModule) -> KernelShape | None:
    """None when a kernel's extents are not all constant (nothing to fit to)."""
    from tvm import s_tir
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.tirx import IterVar

    from dlc.schedules.common import root_blocks

    sch = s_tir.Schedule(mod)
    kind, extents = [], []
    try:
        for block in root_blocks(sch):
            stmt = sch.get(block)
            iters = "".join("S" if iv.iter_type == IterVar.DataPar else "R" for iv in stmt.iter_vars)
            kind.append((stmt.name_hint, iters, len(sch.get_loops(block))))
            extents.extend(int(iv.dom.extent) for iv in stmt.iter_vars)
    except (TypeError, ValueError):  # a symbolic extent
        return None
    dtypes = tuple(str(arg.dtype) for arg in ArgInfo.from_prim_func(mod["main"]))
    return KernelShape((tuple(kind), dtypes), tuple(extents))


def fit_tile(factors: list[int], extent: int, max_innermost: int = 0) -> list[int]:
    """A perfect tiling of `extent` as near `factors` (outermost first) as divisors allow:
    from the innermost level out, each keeps its factor if it divides what is left, else
    takes the largest divisor below it; the outermost takes the rest."""
    fitted = [1] * len(factors)
    rest = extent
    for level in range(len(factors) - 1, 0, -1):
        wanted = max(int(factors[level]), 1)
        if level == len(factors) - 1 and max_innermost > 0:
            wanted = min(wanted, max_innermost)
        fitted[level] = max(d for d in range(1, min(wanted, rest) + 1) if rest % d == 0)
        rest //= fitted[level]
    fitted[0] = rest
    return fitted


def replay(mod: tvm.IRModule, trace, postprocs, *, fit_tiles: bool = False) -> ms.MeasureCandidate | None:
    """`trace` replayed on `mod` without its post-processing, which the search's postprocs
    then redo for this module's loops (as MetaSchedule's own search replays traces); with
    `fit_tiles`, every tile decision is first fitted to `mod`'s extents. None when it does
    not apply: a trace that does not fit is not a candidate."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    sch = s_tir.Schedule(mod)

    def fitted(inst, inputs, attrs, decision):
        if inst.kind.name != "SamplePerfectTile":
            return decision
        return fit_tile([int(f) for f in decision], int(sch.get(inputs[0]).extent), int(attrs[1]))

    try:
        trace.apply_to_schedule(sch, remove_postproc=True, decision_provider=fitted if fit_tiles else None)
        sch.enter_postproc()  # marks what replays strip and redo, as the search does
        if not all(p.apply(sch) for p in postprocs):
            return None
        return ms.MeasureCandidate(sch, ArgInfo.from_entry_func(sch.mod, remove_preproc=True))
    except Exception:  # noqa: BLE001 - a trace this kernel cannot take is data, not a failure
        return None


# ---------------------------------------------------------------------- the store's kernels


@dataclass
class StoreKernels:
    """The store's kernels with measured search records, their shapes computed once."""

    store: LogStore
    shapes: dict[str, KernelShape | None] = field(default_factory=dict)

    def measured(self) -> list[str]:
        """Kernels with successful search records, the most recently first tuned first."""
        return [h for h in reversed(list(self.store.trials)) if h in self.store.workloads and self.ranked(h)]

    def ranked(self, workload_hash: str) -> list[Trial]:
        return sorted((t for t in self.store.searched(workload_hash) if t.run_secs and t.record_json is not None),
                      key=lambda t: sum(t.run_secs) / len(t.run_secs))

    def workload(self, workload_hash: str):
        from tvm.s_tir import meta_schedule as ms

        try:
            return ms.database.Workload.from_json(self.store.workloads[workload_hash])
        except Exception as err:  # noqa: BLE001 - its kernel does not load here: not a source
            log.debug("kernel %s does not load: %s", workload_hash, err)
            return None

    def shape(self, workload_hash: str) -> KernelShape | None:
        if workload_hash not in self.shapes:
            workload = self.workload(workload_hash)
            self.shapes[workload_hash] = kernel_shape(workload.mod) if workload is not None else None
        return self.shapes[workload_hash]

    def improved(self, workload_hash: str) -> bool:
        """Its best record beats its default measurably (or its default was never measured)."""
        default = self.store.default_seconds(workload_hash)
        best = self.store.best_seconds(workload_hash)
        return default is None or (best is not None and best < default * (1 - MEASURABLE_GAIN))

    def nearest(self, shape: KernelShape, *, exclude: str, limit: int) -> list[tuple[float, str]]:
        """(distance, hash) of the `limit` measured kernels of `shape`'s class nearest to it,
        those whose records beat their own default first (the others' are tried only when no
        better source exists: rarely do they beat a default on another shape either)."""
        found = []
        for h in self.measured():
            other = self.shape(h) if h != exclude else None
            if other is not None and other.kind == shape.kind:
                found.append((not self.improved(h), shape.distance(other), h))
        return [(distance, h) for _, distance, h in sorted(found)[:limit]]


# ---------------------------------------------------------------------- transfer


@dataclass(frozen=True)
class TransferOutcome:
    """What `--transfer-only` did for one kernel with no record of its own."""

    task_name: str
    signature: str
    weight: int
    sources: tuple[str, ...]  # the kernels whose records were replayed: "task (model)"
    candidates: int  # replayed traces that applied and were measured
    default_us: float | None
    best_us: float | None  # the fastest transferred candidate

    @property
    def kept(self) -> bool:
        """A build takes the transferred record: measurably faster than the default."""
        return self.best_us is not None and self.default_us is not None and \
            self.best_us < self.default_us * (1 - MEASURABLE_GAIN)


def transferred_candidates(kernels: StoreKernels, task, postprocs, *, limit: int = TRANSFER_CANDIDATES,
                           sources: int = TRANSFER_SOURCES) -> tuple[list, list[str]]:
    """(candidates, source names) for `task`: the best records of the nearest kernels of its
    class, taken in turn (each source's best, then each one's second...), tiles fitted, up to
    `limit` distinct ones that apply."""
    import tvm_ffi

    shape = kernel_shape(task.mod)
    nearest = kernels.nearest(shape, exclude=task.workload_hash, limit=sources) if shape else []
    store = kernels.store
    queues = []
    for _, h in nearest:
        workload = kernels.workload(h)
        if workload is not None:
            queues.append((workload, kernels.ranked(h)[:TRANSFER_REPLAYS]))
    candidates, seen, used, tries = [], set(), [], 0
    for rank in range(TRANSFER_REPLAYS):
        for workload, trials in queues:
            if rank >= len(trials) or len(candidates) >= limit or tries >= TRANSFER_REPLAYS:
                continue
            tries += 1
            record = store.load_record(trials[rank], workload)  # a record that does not load is skipped
            candidate = replay(task.mod, record.trace, postprocs, fit_tiles=True) if record is not None else None
            if candidate is None:
                continue
            key = str(tvm_ffi.structural_hash(candidate.sch.mod))
            if key in seen:
                continue
            seen.add(key)
            candidates.append(candidate)
            name = _source_name(store, trials[rank])
            if name not in used:
                used.append(name)
    return candidates, used


def _source_name(store: LogStore, trial: Trial) -> str:
    model = store.model_of(trial)
    return (trial.task or f"kernel {trial.workload_hash[:10]}") + (f" ({model[0]})" if model else "")


# ---------------------------------------------------------------------- warm start


@dataclass(frozen=True)
class WarmStart:
    """The cost model's training on other kernels' records before a search began."""

    records: int
    kernels: int
    seconds: float
    skipped: int = 0  # records that did not replay here


def spread(items: list, count: int) -> list:
    """`count` items evenly spaced over `items` (ranked), its first and last included: the cost
    model learns how candidates of one kernel compare, so it needs slow ones beside the best."""
    if len(items) <= count:
        return list(items)
    if count <= 1:
        return items[:count]
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def warm_start(cost_model, sources: list[tuple[StoreKernels, Callable[[str], bool]]], target, *,
               prefer: set | frozenset = frozenset(), limit: int = WARM_START_RECORDS,
               per_kernel: int = WARM_START_PER_KERNEL, num_threads: int = 1) -> WarmStart:
    """Teach `cost_model` measured records of each source's kernels that its predicate takes
    (by workload hash; each record loaded on its own, bad ones skipped): at most `per_kernel` of each,
    spread over its ranking, and `limit` in all; the sources in order, and in each, kernels
    of a class in `prefer` (the model's own) first, then the most recently tuned. Trains
    once, at the end."""
    from tvm.s_tir import meta_schedule as ms

    started = time.perf_counter()
    scratch = ms.database.MemoryDatabase()
    groups, total, skipped = [], 0, 0
    for kernels, wanted in sources:
        hashes = [h for h in kernels.measured() if wanted(h)]
        if prefer:
            hashes.sort(key=lambda h: (shape := kernels.shape(h)) is None or shape.kind not in prefer)
        for h in hashes:
            if total >= limit:
                break
            loaded = kernels.workload(h)
            if loaded is None:
                continue
            workload = scratch.commit_workload(loaded.mod)
            pairs = []
            for trial in spread(kernels.ranked(h), min(per_kernel, limit - total)):
                record = kernels.store.load_record(trial, workload)
                if record is None:
                    skipped += 1
                    continue
                try:
                    pairs.append((record.as_measure_candidate(), ms.runner.RunnerResult(list(trial.run_secs), None)))
                except Exception:  # noqa: BLE001 - a record that does not replay teaches nothing
                    skipped += 1
            if len(pairs) < 2:  # costs are compared within a kernel: one record teaches nothing
                continue
            groups.append((ms.TuneContext(workload.mod, target=target, num_threads=num_threads), pairs))
            total += len(pairs)
    adaptive = hasattr(cost_model, "last_train_size")
    for i, (context, pairs) in enumerate(groups):
        if adaptive:
            # XGBModel retrains on every update that grew its data by a fifth (adaptive
            # training): hold that off until the last group, so that it trains once, on all.
            cost_model.last_train_size = 0 if i == len(groups) - 1 else sys.maxsize
        cost_model.update(context, [c for c, _ in pairs], [r for _, r in pairs])
    return WarmStart(total, len(groups), time.perf_counter() - started, skipped)
