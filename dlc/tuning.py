"""Autotuning with MetaSchedule's evolutionary search and XGBoost cost model.

dlc drives the search loop itself (MetaSchedule's TaskScheduler is all-or-nothing): it
decides which task gets the next batch, stops on a trial or wall-clock budget between
batches, writes every trial to the log store as soon as it is measured, and on a rerun
reuses trials already on disk instead of measuring them again.

Trial allocation: every selected task is first measured once with its default schedule,
which gives its share of model time. The next batch then goes to the task with the largest
`weight x best latency x expected gain`. Before a task is searched its expected gain is its
headroom: 1 - its default's GFLOP/s / the best GFLOP/s among the model's contractions
(kernels of >= 64 FLOPs per output element; 0.05-0.9), so a 3x3 conv at half the machine's
rate is searched before a 1x1 conv already at 90% of it; a kernel with fewer FLOPs per
element (copies, elementwise, depthwise convs: bound by loads, not FMAs, so a FLOP rate
overrates what they have left; PP-OCR cls spent 177 trials on three that way, bench/README.md)
starts at 0.25. Afterwards it is the relative
improvement its last batch achieved (at least 0.05), halved after every batch that improved
nothing.
Kernels that cost little model time are never searched; a task whose search space is
exhausted drops out. Within a task, a batch first takes the unmeasured single-decision
neighbours of its best record (coordinate descent from the default schedule); only when
that neighbourhood is measured does the evolutionary search supply the batch.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

from dlc import usable_cpus
from dlc.errors import InputError, TuningError
from dlc.logstore import DEFAULT, MEASURABLE_GAIN, LogStore, Trial, compatible_stores, open_store
from dlc.measure import load_cpu_tensor_intrinsics, local_runner, measure, pooled_builder, reason
from dlc.provenance import Provenance
from dlc.transfer import StoreKernels, TransferOutcome, WarmStart, kernel_shape, replay, transferred_candidates, warm_start

if TYPE_CHECKING:
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from dlc.pipeline import OptimizedModel
    from dlc.target import TargetSpec

log = logging.getLogger(__name__)

StopReason = Literal["trials", "time", "exhausted", "interrupted", "already-done", "transferred"]
FIRST_GAIN = 0.5  # a kernel's gain from its first batch, when it had no best to improve on
MIN_GAIN = 0.05
MAX_HEADROOM = 0.9
COPY_HEADROOM = 0.25  # copies and elementwise kernels: no FLOP rate to judge them by
CONTRACTION_FLOPS_PER_OUTPUT = 64
# A kernel that tuning runs of other models already gave this many search trials is not
# searched again (four batches: the local descent around the default and the first
# evolutionary rounds, where most of a kernel's gain comes); its records are used as they are.
ENOUGH_TRIALS = 64
SEARCH_SEEDS = 64  # a kernel's best records the search database holds
COMPATIBLE_SEEDS = 2  # best records per kernel from each compatible target, measured before the search


@dataclass(frozen=True)
class TuningTask:
    index: int
    name: str
    workload_hash: str
    mod: tvm.IRModule  # the kernel, keyed in the database by its structure
    weight: int  # calls per model run
    flops: float  # per call
    signature: str  # argument shapes, e.g. "1x3x48x192, 8x3x3x3 -> 1x8x24x96"
    output_elements: int = 0

    @property
    def worth_two_cores(self) -> bool:
        """The default rules' test (dlc.schedules.common): below it a parallel loop costs more
        than it saves where the cores are far apart, so the search does not try one either."""
        from dlc.schedules import common

        return self.flops >= common.PARALLEL_MIN_FLOPS or self.output_elements >= common.PARALLEL_MIN_ELEMENTS


@dataclass(frozen=True)
class TaskOutcome:
    task: TuningTask
    trials_run: int  # measured in this run
    trials_total: int  # on disk, this run included
    default_us: float | None
    best_us: float | None  # best tuned record, any run
    build_errors: int
    run_errors: int
    error_reasons: tuple[str, ...]

    @property
    def speedup(self) -> float | None:
        if self.default_us is None or self.best_us is None:
            return None
        return self.default_us / self.best_us

    @property
    def effective_us(self) -> float | None:
        return _effective_us(self.default_us, self.best_us)


def _effective_us(default_us: float | None, best_us: float | None) -> float | None:
    """What a build with the records will run: the tuned record where it is measurably
    faster than the default, else the default."""
    if best_us is not None and (default_us is None or best_us < default_us * (1 - MEASURABLE_GAIN)):
        return best_us
    return default_us


def _model_estimate_us(kernels) -> float | None:
    """Sum of calls x effective time over (weight, default_us, best_us) of every kernel."""
    times = [w * t for w, d, b in kernels if (t := _effective_us(d, b)) is not None]
    return sum(times) if times else None


@dataclass(frozen=True)
class Progress:
    task_name: str
    task_position: int  # 1-based index among all tasks
    tasks_total: int
    trials_done: int  # this run
    trial_budget: int  # for this run
    estimated_model_us: float | None
    elapsed: float
    remaining: float | None  # seconds of wall-clock budget left


@dataclass(frozen=True)
class CurvePoint:
    """The estimated model time (sum of calls x best kernel time) after `trials` of a run."""

    trials: int
    seconds: float
    estimated_us: float


def _draw_curve(snapshots, states) -> list[CurvePoint]:
    """Estimated model time at each snapshot: each kernel's best record so far, against its
    default's final (best) timing."""
    curve = []
    for trials, seconds, bests in snapshots:
        estimate = _model_estimate_us((s.task.weight, s.default_us, best) for s, best in zip(states, bests))
        if estimate is not None:
            curve.append(CurvePoint(trials, seconds, estimate))
    return curve


def gain_point(curve: tuple[CurvePoint, ...], fraction: float = 0.9) -> CurvePoint | None:
    """The first point that has `fraction` of the run's whole gain (None: the run gained nothing)."""
    if len(curve) < 2 or curve[-1].estimated_us >= curve[0].estimated_us:
        return None
    target = curve[0].estimated_us - fraction * (curve[0].estimated_us - curve[-1].estimated_us)
    return next(p for p in curve if p.estimated_us <= target)


@dataclass(frozen=True)
class TuningResult:
    logs: Path
    target_key: str
    tasks: tuple[TaskOutcome, ...]
    trials_run: int
    trials_on_disk_before: int
    seconds: float
    stopped_by: StopReason
    curve: tuple[CurvePoint, ...] = ()  # from the defaults (trials 0) to the end of the run
    already_tuned: tuple[str, ...] = ()  # kernels not searched: enough trials from other models
    unusable_records: int = 0  # records on disk that did not load or replay here (skipped)
    warm_start: WarmStart | None = None  # the cost model's training on other kernels' records
    transfers: tuple[TransferOutcome, ...] = ()  # --transfer-only: each kernel it measured records for
    compatible: tuple[str, ...] = ()  # keys of compatible targets whose records warm-started the search
    compatible_seeds: int = 0  # their best records, measured here first (counted in trials_run)

    @property
    def estimated_model_us(self) -> float | None:
        return _model_estimate_us((o.task.weight, o.default_us, o.best_us) for o in self.tasks)


# ---------------------------------------------------------------------- tasks


def extract_tasks(optimized: OptimizedModel, target: TargetSpec) -> list[TuningTask]:
    """The fused kernels of `optimized`, heaviest (weight x FLOPs) first."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from dlc.schedule import is_scheduled

    tasks = []
    for extracted in ms.relax_integration.extract_tasks(optimized.mod, target.to_tvm()):
        mod = extracted.dispatched[0]
        if is_scheduled(mod["main"]):  # written as it must run (dlc.bounds' index checks)
            continue
        args = ArgInfo.from_prim_func(mod["main"])
        shapes = ["x".join(str(int(d)) for d in a.shape) or "scalar" for a in args]
        signature = ", ".join(shapes[:-1]) + " -> " + shapes[-1] if len(shapes) > 1 else shapes[0]
        tasks.append(
            TuningTask(
                index=0,
                name=str(extracted.task_name),
                workload_hash=str(ms.database.Workload(mod).as_json()[0]),
                mod=mod,
                weight=int(extracted.weight),
                flops=float(estimate_tir_flops(mod)),
                signature=signature,
                output_elements=math.prod(int(d) for d in args[-1].shape),
            )
        )
    tasks.sort(key=lambda t: -t.weight * t.flops)
    return [replace(task, index=i) for i, task in enumerate(tasks)]


def select_tasks(tasks: list[TuningTask], names: list[str] | None) -> list[TuningTask]:
    if not names:
        return tasks
    by_name = {t.name: t for t in tasks}
    chosen = []
    for name in names:
        if name.isdigit() and int(name) < len(tasks):
            chosen.append(tasks[int(name)])
        elif name in by_name:
            chosen.append(by_name[name])
        else:
            raise TuningError(
                f"no task named {name!r}",
                hint="`dlc tune MODEL --list-tasks` shows the tasks; pass names or indexes",
            )
    return chosen


@dataclass
class _TaskState:
    task: TuningTask
    context: object | None = None  # its TuneContext, once searched
    workload: object | None = None  # its database Workload, once searched
    default_us: float | None = None  # best timing of the default schedule
    default_schedule: tuple | None = None  # (Schedule, ArgInfo) of the default, built once
    best_us: float | None = None
    last_gain: float = FIRST_GAIN
    exhausted: bool = False
    trials_run: int = 0
    build_errors: int = 0
    run_errors: int = 0
    reasons: list[str] = field(default_factory=list)

    def score(self) -> float:
        if self.exhausted:
            return -1.0
        latency = self.best_us if self.best_us is not None else self.default_us
        if latency is None:  # its default failed: searched, as if it ran at 1 GFLOP/s
            latency = max(self.task.flops, 1.0) / 1e3
        return self.task.weight * latency * self.last_gain


# ---------------------------------------------------------------------- the search


def _headroom_priors(states: list[_TaskState]) -> None:
    """Each kernel's first expected gain: how far its default runs below the best FLOP rate
    the model's contractions reach on this machine (see the module docstring)."""
    def rate(state: _TaskState) -> float | None:
        task = state.task
        contraction = task.flops >= CONTRACTION_FLOPS_PER_OUTPUT * max(task.output_elements, 1)
        latency = _effective_us(state.default_us, state.best_us)
        return task.flops / latency if contraction and latency else None

    rates = [r for r in map(rate, states) if r is not None]
    if not rates:
        return
    best = max(rates)
    for state in states:
        r = rate(state)
        state.last_gain = COPY_HEADROOM if r is None else min(MAX_HEADROOM, max(MIN_GAIN, 1 - r / best))


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e6


def _mean(values) -> float:
    return sum(values) / len(values)


class _Search:
    """The state of one `tune` call: tasks, store, database, cost model, budget."""

    def __init__(self, store: LogStore, target: TargetSpec, builder, runner, *, seed: int, batch: int,
                 load_records: frozenset[str] = frozenset()):
        from tvm.s_tir import meta_schedule as ms

        from dlc.schedules.cpu import cpu_params

        self.ms = ms
        self.store = store
        self.target = target
        self.tvm_target = target.to_tvm()
        self.builder = builder
        self.runner = runner
        self.seed = seed
        self.batch = batch
        self.cores = usable_cpus()
        self.cpu = cpu_params(target)
        # The best records of `load_records` (the model's kernels), replayed one by one: the
        # search seeds its populations from them (a quarter of 128 at most). Not the whole
        # store: a replay costs ~8 ms (16 s for 2000 records), and the warm start and transfer
        # load the few they use; _measure skips known candidates by the store, not by this.
        self.database = store.to_database(exclude=set(store.trials) - load_records, per_workload=SEARCH_SEEDS)
        self.cost_model = ms.cost_model.XGBModel(num_tuning_cores=self.cores, verbose_eval=0)
        self.quiet = logging.getLogger("dlc.tuning.metaschedule")
        self.quiet.setLevel(logging.WARNING)

    def measure_defaults(self, states: list[_TaskState]) -> None:
        """Time every kernel's default schedule once per rules version, keep its trace, and
        put it in the search's database: the best records seed each search's population."""
        todo = []
        for state in states:
            task = state.task
            workload = self.database.commit_workload(task.mod)
            known = self.store.default_trial(task.workload_hash)
            if known is not None:
                state.default_us = _us(self.store.default_seconds(task.workload_hash))
                record = self.store.load_record(known, workload) if known.run_secs and known.record_json else None
                if record is not None:
                    self.database.commit_tuning_record(record)
                continue
            todo.append((state, workload, *self._default_schedule(task)))
        if not todo:
            return
        outcomes = measure(self.builder, self.runner, self.tvm_target, [(sch.mod, arg) for _, _, sch, arg in todo])
        for (state, workload, sch, arg), outcome in zip(todo, outcomes):
            self.store.add_workload(state.task.workload_hash, workload.as_json())
            state.default_schedule = (sch, arg)
            self._record_default(state, workload, sch, arg, outcome)
            if outcome[0] is None:
                state.reasons.append(f"default schedule: {outcome[1]}")

    def _record_default(self, state: _TaskState, workload, sch, arg, outcome) -> None:
        """Log a timing of the default schedule; the kernel's default time is the best of them."""
        from dlc.schedule import RULES_VERSION

        run_secs, error = outcome
        record = self.ms.database.TuningRecord(
            sch.trace, workload, list(run_secs) if run_secs else None, self.tvm_target, arg)
        self.store.add_trial(
            Trial(state.task.workload_hash, DEFAULT, record.as_json(), run_secs, error, RULES_VERSION),
            task_name=state.task.name,
        )
        if run_secs:
            self.database.commit_tuning_record(record)
            state.default_us = _us(self.store.default_seconds(state.task.workload_hash))

    def _default_control(self, state: _TaskState):
        """(schedule, args) of the kernel's default, timed again beside each batch: one
        timing taken when the search began, on a VM whose speed shifts from minute to minute
        (bench/README.md), made later candidates look 20% faster than a default they equal."""
        if state.default_us is None:
            return None
        if state.default_schedule is None:  # its timing came from the log on disk
            state.default_schedule = self._default_schedule(state.task)
        return state.default_schedule

    def _default_schedule(self, task: TuningTask):
        """(schedule, args) of the default rules on `task`: its plain loops where no rule fits."""
        from tvm import s_tir
        from tvm.s_tir.meta_schedule.arg_info import ArgInfo

        from dlc.schedule import apply_rules

        with self.tvm_target:
            _, sch = apply_rules(s_tir.Schedule(task.mod), self.cpu, self.tvm_target, name=task.name)
        sch = sch or s_tir.Schedule(task.mod)
        return sch, ArgInfo.from_prim_func(sch.mod["main"])

    def _design_space(self, task: TuningTask):
        """dlc's default rules, their tile choices left to sample, beside MetaSchedule's
        generic space: the search draws from both, seeded with the measured defaults. A kernel
        too small to gain from two cores gets the generic space without parallel loops."""
        from dlc.schedule import apply_rules

        def rules(sch):
            _, scheduled = apply_rules(sch, self.cpu, self.tvm_target)
            return [] if scheduled is None else scheduled

        ms = self.ms
        generic = ms.space_generator.PostOrderApply()
        if not task.worth_two_cores:
            sch_rules = [
                ms.schedule_rule.ParallelizeVectorizeUnroll(
                    max_jobs_per_core=-1, max_vectorize_extent=rule.max_vectorize_extent,
                    unroll_max_steps=list(rule.unroll_max_steps), unroll_explicit=rule.unroll_explicit)
                if isinstance(rule, ms.schedule_rule.ParallelizeVectorizeUnroll)
                else ms.schedule_rule.AddRFactor(max_jobs_per_core=-1, max_innermost_factor=rule.max_innermost_factor)
                if isinstance(rule, ms.schedule_rule.AddRFactor)
                else rule
                for rule in ms.ScheduleRule.create("llvm")
            ]
            generic = ms.space_generator.PostOrderApply(sch_rules=sch_rules)
        return ms.space_generator.SpaceGeneratorUnion([ms.space_generator.ScheduleFn(rules), generic])

    def _start(self, state: _TaskState, max_trials: int):
        ms = self.ms
        task = state.task
        context = ms.TuneContext(
            task.mod,
            target=self.tvm_target,
            space_generator=self._design_space(task),
            search_strategy=ms.search_strategy.EvolutionarySearch(population_size=128, init_min_unmeasured=32),
            task_name=task.name,
            rand_state=self.seed + task.index,
            num_threads=self.cores,
            logger=self.quiet,
        )
        state.workload = self.database.commit_workload(task.mod)
        self.store.add_workload(task.workload_hash, state.workload.as_json())
        # Teach the cost model what earlier runs measured for this kernel.
        previous = [t for t in self.store.trials.get(task.workload_hash, ()) if t.run_secs and t.record_json]
        pairs = self.store.measure_candidates(previous, state.workload)  # a record that does not replay is skipped
        if pairs:
            self.cost_model.update(
                context,
                [candidate for _, candidate in pairs],
                [ms.runner.RunnerResult(list(t.run_secs), None) for t, _ in pairs],
            )
        context.pre_tuning(
            max_trials=max_trials, num_trials_per_iter=self.batch, database=self.database, cost_model=self.cost_model
        )
        state.context = context
        return context

    def warm_start(self, searched: list[TuningTask], model: list[TuningTask], compatible: list[LogStore]) -> WarmStart:
        """Train the cost model once on the store's records of kernels other than `searched`
        (whose own records each search teaches it as it starts), those of the classes of the
        `model`'s kernels first; then on compatible targets' records of the `searched` kernels
        (timed on another CPU of the same vector level: how candidates rank carries over)."""
        prefer = {shape.kind for shape in map(kernel_shape, (t.mod for t in model)) if shape is not None}
        own = {t.workload_hash for t in searched}
        sources = [(StoreKernels(self.store), lambda h: h not in own)]
        sources += [(StoreKernels(other), own.__contains__) for other in compatible]
        return warm_start(self.cost_model, sources, self.tvm_target, prefer=prefer, num_threads=self.cores)

    def seed_from_compatible(self, states: list[_TaskState], compatible: list[LogStore], *, budget: int) -> int:
        """Measure here, before any search, the best few records that compatible targets hold for
        each kernel with no search record of its own: a colleague's tuning on another CPU of the
        same vector level is the search's starting point (its population and local moves start
        from the best measured record). Returns the trials measured (they count as trials)."""
        import tvm_ffi

        sources = [StoreKernels(other) for other in compatible]
        measured = 0
        for state in states:
            task = state.task
            if self.store.trial_count(task.workload_hash) or measured >= budget:
                continue
            postprocs = None
            candidates, seen = [], set()
            for source in sources:
                workload = source.workload(task.workload_hash) if task.workload_hash in source.store.workloads else None
                for trial in source.ranked(task.workload_hash)[:COMPATIBLE_SEEDS] if workload is not None else ():
                    record = source.store.load_record(trial, workload)  # one that does not load is skipped
                    if record is None:
                        continue
                    if postprocs is None:  # built once per kernel, only when a record loads
                        postprocs = self._postprocs(task)
                    candidate = replay(task.mod, record.trace, postprocs)
                    key = str(tvm_ffi.structural_hash(candidate.sch.mod)) if candidate is not None else None
                    if key is not None and key not in seen:
                        seen.add(key)
                        candidates.append(candidate)
            if candidates:
                fresh, _ = self._measure(state, candidates[:budget - measured],
                                         self.store.measured_candidates(task.workload_hash))
                measured += fresh
        return measured

    def _postprocs(self, task: TuningTask) -> list:
        """The post-processing the search applies to `task`'s candidates (a replayed record
        is redone with them, as the search's own are)."""
        return self.ms.TuneContext(task.mod, target=self.tvm_target, num_threads=self.cores,
                                   space_generator=self._design_space(task), logger=self.quiet).space_generator.postprocs

    def transfer(self, states: list[_TaskState]) -> list[TransferOutcome]:
        """Measure, for each kernel, the nearest kernels' best records replayed on it (dlc.transfer)
        beside its default; kernels with no kernel of their class in the store are left out."""
        kernels = StoreKernels(self.store)
        planned = []
        for state in states:
            candidates, sources = transferred_candidates(kernels, state.task, self._postprocs(state.task))
            if candidates:
                planned.append((state, candidates, sources))
        self.measure_defaults([state for state, _, _ in planned])
        outcomes = []
        for state, candidates, sources in planned:
            _, results = self._measure(state, candidates, self.store.measured_candidates(state.task.workload_hash))
            times = [_mean([float(s) for s in r.run_secs]) * 1e6 for r in results if r.run_secs]
            task = state.task
            outcomes.append(TransferOutcome(task.name, task.signature, task.weight, tuple(sources), len(candidates),
                                            state.default_us, min(times, default=None)))
        return outcomes

    def run_batch(self, state: _TaskState, limit: int, max_trials: int) -> int | None:
        """Measure up to `limit` new candidates of `state`'s task; None when its space is exhausted."""
        task = state.task
        context = state.context or self._start(state, max_trials)
        known = self.store.measured_candidates(task.workload_hash)
        # Local moves around the best record first (coordinate descent over its decisions,
        # Droplet-style: the gains come early); the evolutionary search once the best's
        # neighbourhood is measured, until it finds a new best to descend from.
        local = self._neighbours(state, context, known, limit)
        try:
            candidates = local or list(context.generate_measure_candidates() or [])[:limit]
        except Exception as err:  # MetaSchedule failing on one kernel must not end the run
            state.reasons.append(f"search stopped: {reason(err)}")
            return None
        if not candidates:
            return None
        best_before = state.best_us
        fresh, results = self._measure(state, candidates, known)
        if not local:  # the search's own candidates: it keeps count of them
            context.notify_runner_results(candidates, results)
        self.cost_model.update(context, candidates, results)
        # Gain: what a build would run, before and after this batch, against the default's
        # latest timing (a record slower than the default that beats an earlier, slower
        # record gains nothing; nor does re-timing the default).
        previous = _effective_us(state.default_us, best_before)
        now = _effective_us(state.default_us, state.best_us)
        if now is not None and (previous is None or now < previous):
            gain = (previous - now) / previous if previous else FIRST_GAIN
            state.last_gain = max(MIN_GAIN, gain)
        else:
            # Nothing found: halve the expectation, so the next batches go to kernels that
            # have not been tried as often (else the heaviest kernel takes every batch at
            # the floor, and the others' gains arrive at the end of the budget).
            state.last_gain /= 2
        return fresh

    def _measure(self, state: _TaskState, candidates: list, known: dict[str, Trial]) -> tuple[int, list]:
        """Measure the candidates not in `known` beside a re-timing of the default, log each
        trial, and update the kernel's best: (candidates measured, a RunnerResult for each)."""
        import tvm_ffi

        ms = self.ms
        task = state.task
        workload = state.workload or self.database.commit_workload(task.mod)
        if task.workload_hash not in self.store.workloads:
            self.store.add_workload(task.workload_hash, workload.as_json())
        hashes = [str(tvm_ffi.structural_hash(c.sch.mod)) for c in candidates]
        fresh = [i for i, h in enumerate(hashes) if h not in known]
        control = self._default_control(state) if fresh else None
        items = [(candidates[i].sch.mod, candidates[i].args_info) for i in fresh]
        measured = measure(self.builder, self.runner, self.tvm_target,
                           items + ([(control[0].mod, control[1])] if control else [])) if fresh else []
        if control:
            self._record_default(state, workload, control[0], control[1], measured.pop())
        outcomes = dict(zip(fresh, measured))
        results = []
        for i, candidate in enumerate(candidates):
            if i in outcomes:
                run_secs, error = outcomes[i]
                record = ms.database.TuningRecord(
                    candidate.sch.trace, workload, list(run_secs) if run_secs else None, self.tvm_target, candidate.args_info
                )
                self.store.add_trial(Trial(task.workload_hash, hashes[i], record.as_json(), run_secs, error), task_name=task.name)
                if run_secs:
                    self.database.commit_tuning_record(record)
                elif error and error.startswith("build"):
                    state.build_errors += 1
                else:
                    state.run_errors += 1
                if error and len(state.reasons) < 5 and error not in state.reasons:
                    state.reasons.append(error)
            else:
                run_secs, error = known[hashes[i]].run_secs, known[hashes[i]].error
            results.append(ms.runner.RunnerResult(list(run_secs) if run_secs else None, error))
            if run_secs:
                us = _mean(run_secs) * 1e6
                if state.best_us is None or us < state.best_us * (1 - MEASURABLE_GAIN):
                    state.best_us = us
        state.trials_run += len(fresh)
        return len(fresh), results

    def _neighbours(self, state: _TaskState, context, known, limit: int) -> list:
        """Candidates one move away from the best record: one tile factor moved between two
        levels of one sampled tiling, or an unroll choice one step up or down (Droplet-style
        local search; refining a good point beats sampling many on CPUs)."""
        import tvm_ffi

        top = self.database.get_top_k(state.workload, 1)
        if not top:
            return []
        trace = top[0].trace
        seen, found = set(known), []
        for inst, decision in trace.decisions.items():
            for move in _moves(inst, decision):
                # A move the schedule cannot take is not a candidate.
                candidate = replay(state.task.mod, trace.with_decision(inst, move, remove_postproc=True),
                                   context.space_generator.postprocs)
                key = str(tvm_ffi.structural_hash(candidate.sch.mod)) if candidate is not None else None
                if key is None or key in seen:
                    continue
                seen.add(key)
                found.append(candidate)
                if len(found) >= limit:
                    return found
        return found


def _moves(inst, decision) -> list:
    """The decisions one step away from `decision` of a sampling instruction."""
    kind = inst.kind.name
    if kind == "SamplePerfectTile":
        factors = [int(f) for f in decision]
        max_inner = int(inst.attrs[1])
        moves = []
        for i in range(len(factors)):
            for j in range(len(factors)):
                for prime in (2, 3):
                    if i == j or factors[i] % prime:
                        continue
                    moved = list(factors)
                    moved[i] //= prime
                    moved[j] *= prime
                    if moved[-1] <= max_inner or max_inner <= 0:
                        moves.append(moved)
        return moves
    if kind == "SampleCategorical":
        count = len(inst.attrs[0])
        return [int(decision) + step for step in (-1, 1) if 0 <= int(decision) + step < count]
    return []


def check_can_measure(target: TargetSpec) -> None:
    """Refuse, before any work, a target whose kernels this machine cannot run."""
    unrunnable = target.unrunnable_reason()
    if unrunnable:
        raise InputError(
            f"target '{target.name}' cannot run on this machine ({unrunnable}), so its kernels "
            "cannot be measured here",
            hint="tune for a target this machine runs (`dlc targets` says which), or measure on the boards "
            "through an RPC tracker: --rpc-tracker HOST:PORT --rpc-key KEY (`dlc board emulate aarch64` emulates one)",
        )


def tune(
    optimized: OptimizedModel,
    target: TargetSpec,
    *,
    logs: Path | str,
    trials: int,
    time_budget: float | None = None,
    task_names: list[str] | None = None,
    trials_per_batch: int = 16,
    seed: int = 0,
    on_progress: Callable[[Progress], None] | None = None,
    builder: ms.builder.Builder | None = None,
    runner: ms.runner.Runner | None = None,
    enough_trials: int = ENOUGH_TRIALS,
    warm: bool = True,
    transfer_only: bool = False,
) -> TuningResult:
    """Search schedules for the kernels of `optimized` until `trials` (on disk included) or
    `time_budget` seconds run out; every trial is appended to `logs` as it is measured.

    Unless `task_names` picks kernels, a kernel with `enough_trials` or more search trials
    from tuning runs of other models is not searched (0: search every kernel), and its trials
    do not count toward `trials`. With `warm`, the cost model first learns from the store's
    records of other kernels (dlc.transfer). With `transfer_only`, nothing is searched: each
    kernel with no search record of its own gets the nearest kernels' records replayed on it
    and measured (dlc.transfer), and `trials` and `time_budget` do not apply."""
    if trials < 0:
        raise TuningError(f"--trials must be positive, not {trials}", hint="e.g. --trials 300")
    if runner is None:  # a given runner measures elsewhere (boards: dlc.boards.measuring_on)
        check_can_measure(target)
    # MetaSchedule sizes its parallel loops from -num-cores: the cores of the machine that
    # measures, unless the target names its own. The log store's key leaves it out.
    target = target.with_cores(usable_cpus())
    started = time.perf_counter()
    load_cpu_tensor_intrinsics()
    all_tasks = extract_tasks(optimized, target)
    selected = select_tasks(all_tasks, task_names)
    store = open_store(logs, target)
    model = optimized.source.source
    store.begin_contribution(Provenance.collect("tune", model_name=model.path.name, model_sha256=model.sha256))
    already = set() if task_names or enough_trials <= 0 else {
        t.index for t in selected if store.trials_from_other_models(t.workload_hash, model.sha256) >= enough_trials}
    selected = [t for t in selected if t.index not in already]
    on_disk = sum(store.trial_count(t.workload_hash) for t in selected)
    budget = max(0, trials - on_disk)
    search = _Search(store, target, builder or pooled_builder(), runner or local_runner(), seed=seed,
                     batch=trials_per_batch,
                     load_records=frozenset() if transfer_only else frozenset(t.workload_hash for t in all_tasks))
    compatible = compatible_stores(logs, target) if warm and not transfer_only else []
    seeds = 0
    states = [_TaskState(t, best_us=_us(store.best_seconds(t.workload_hash))) for t in all_tasks]
    done, batch_seconds = 0, []
    stop: StopReason = "transferred" if transfer_only else "already-done" if budget == 0 or not selected else "trials"
    warm_started, transfers = None, []

    # (trials, seconds, every kernel's best so far): the curve is drawn at the end against
    # the defaults' final timings, so that re-timing a default (which moves it with the
    # machine's speed) never shows as a gain of the search.
    snapshots: list[tuple[int, float, list[float | None]]] = []
    run_id = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def record_curve() -> None:
        snapshots.append((done, time.perf_counter() - started, [s.best_us for s in states]))

    def report(state: _TaskState) -> None:
        record_curve()
        if on_progress is None:
            return
        elapsed = time.perf_counter() - started
        estimate = _model_estimate_us((s.task.weight, s.default_us, s.best_us) for s in states)
        on_progress(Progress(
            state.task.name, state.task.index + 1, len(states), done, budget, estimate, elapsed,
            None if time_budget is None else max(0.0, time_budget - elapsed),
        ))

    try:
        if transfer_only:
            transfers = search.transfer([states[t.index] for t in selected if not store.trial_count(t.workload_hash)])
            done = sum(s.trials_run for s in states)
            budget = 0
        else:
            search.measure_defaults(states)
            _headroom_priors(states)
            record_curve()
            if compatible and budget:
                seeds = search.seed_from_compatible([states[t.index] for t in selected], compatible, budget=budget)
                done += seeds
                record_curve()
        if warm and budget and selected:
            warm_started = search.warm_start(selected, all_tasks, compatible)
        chosen = [states[t.index] for t in selected]
        while budget and selected and done < budget:
            elapsed = time.perf_counter() - started
            if time_budget is not None and elapsed + (_mean(batch_seconds) if batch_seconds else 0) > time_budget:
                stop = "time"
                break
            state = max(chosen, key=_TaskState.score)
            if state.score() < 0:
                stop = "exhausted"
                break
            batch_started = time.perf_counter()
            measured = search.run_batch(state, min(trials_per_batch, budget - done), budget)
            if measured is None:
                state.exhausted = True
                continue
            done += measured
            batch_seconds.append(time.perf_counter() - batch_started)
            report(state)
    except KeyboardInterrupt:
        stop = "interrupted"
    finally:
        for state in states:
            if state.context is not None:
                state.context.post_tuning()
        # Workers left idle would share the cores with whatever runs next (a benchmark).
        for worker, owned in ((search.builder, builder is None), (search.runner, runner is None)):
            pool = getattr(worker, "pool", None) if owned else None
            if pool is not None:
                pool.shutdown()
        curve = _draw_curve(snapshots, states)
        for point in curve:
            store.add_curve_point(run_id, point.trials, point.seconds, point.estimated_us)

    outcomes = tuple(
        TaskOutcome(
            task=s.task,
            trials_run=s.trials_run,
            trials_total=store.trial_count(s.task.workload_hash),
            default_us=s.default_us,
            best_us=s.best_us,
            build_errors=s.build_errors,
            run_errors=s.run_errors,
            error_reasons=tuple(s.reasons),
        )
        for s in states
    )
    return TuningResult(store.path, store.target_key, outcomes, done, on_disk, time.perf_counter() - started, stop,
                        tuple(curve), tuple(all_tasks[i].name for i in sorted(already)), store.unusable_records,
                        warm_started, tuple(transfers), tuple(c.target_key for c in compatible), seeds)
