"""Per-target default schedules: give every fused kernel a good schedule without measuring.

TVM 0.27's CPU pipeline schedules nothing, so every fused kernel would run as plain
serial loops. Here each kernel is matched to a kernel class by a rule (`dlc/schedules/`,
one module per class) and scheduled by hand-written `s_tir.Schedule` primitives whose
tile sizes come from the target (`CpuParams`: vector lanes, register count, cores).
No design spaces are generated and nothing is measured, so this costs milliseconds per
kernel; the graph-level layout choice that makes the conv rule pay (NHWC/HWIO) is made
in `dlc.pipeline`.

Rules are tried in `RULES` order on a fresh schedule each; the first that returns True
wins. A rule that raises is logged and the next one is tried, and a kernel no rule can
schedule keeps its plain loops: one odd kernel never fails the build.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tvm

    from dlc.schedules.cpu import CpuParams
    from dlc.target import TargetSpec

log = logging.getLogger(__name__)

# TVM 0.27 spells it "tirx.is_scheduled" (MetaScheduleApplyDatabase, dlight); older
# releases "tir.is_scheduled". Either one means: a tuned record owns this kernel.
SCHEDULED_ATTRS = ("tirx.is_scheduled", "tir.is_scheduled")
# Bump when a rule changes what it builds: default-schedule timings in the tuning logs are
# kept per version, so a kernel's default is re-measured rather than judged by old rules.
RULES_VERSION = "6"


def _rules():
    from dlc.schedules import contraction, injective, int8, reduction, rows

    # Most specific first: a conv is also "a reduction", but deserves the register tile.
    return [("int8", int8.apply), ("int8", int8.apply_softmax), ("contraction", contraction.apply), ("rows", rows.apply),
            ("rows", rows.apply_scalar), ("reduction", reduction.apply),
            ("injective", injective.apply)]


@dataclass(frozen=True)
class ScheduledModule:
    mod: tvm.IRModule
    scheduled: int  # kernels given a default schedule here
    skipped: int  # kernels already scheduled (tuned records) and left alone
    failed: int = 0  # kernels no rule could schedule: left as plain loops (and logged)
    by_rule: tuple[tuple[str, int], ...] = ()  # (rule, kernels) for the logs and tests


def is_scheduled(func) -> bool:
    attrs = func.attrs
    return attrs is not None and any(bool(attrs.get(key, False)) for key in SCHEDULED_ATTRS)


def schedule_kernel(func: tvm.tirx.PrimFunc, cpu: CpuParams, tvm_target: tvm.target.Target, *,
                    name: str = "kernel"):
    """Return (rule name, scheduled PrimFunc), or (None, func) when no rule applies."""
    from tvm import s_tir

    rule_name, sch = apply_rules(s_tir.Schedule(func), cpu, tvm_target, name=name)
    if rule_name is None:
        return None, func
    return rule_name, sch.mod["main"].with_attr("tirx.is_scheduled", True)


def apply_rules(sch: tvm.s_tir.Schedule, cpu: CpuParams, tvm_target: tvm.target.Target, *,
                name: str = "kernel"):
    """(rule name, a copy of `sch` scheduled by the first rule that fits and lowers), or
    (None, None). The copy's trace replays the schedule, with the rule's tile choices as
    sampling decisions: MetaSchedule can seed a search with it and mutate it (dlc.tuning)."""
    for rule_name, rule in _rules():
        attempt = sch.copy()
        try:
            if not rule(attempt, cpu):
                continue
        except Exception as err:  # a rule that does not fit this kernel: try the next one
            log.info("rule %s failed on %s: %s", rule_name, name, str(err).strip().splitlines()[-1:])
            continue
        try:
            _check_lowers(attempt.mod["main"], tvm_target)
        except Exception as err:  # e.g. a vectorised loop TIR cannot lower: the build must not fail
            log.warning("rule %s gave %s a schedule that does not lower (%s); trying the next rule",
                        rule_name, name, str(err).strip().splitlines()[-1:])
            continue
        return rule_name, attempt
    return None, None


def _check_lowers(func, tvm_target) -> None:
    """Run TIR's lowering (not LLVM) on one kernel, so a schedule that cannot be lowered
    is caught here, per kernel, instead of failing the whole model's build later."""
    import tvm
    from tvm import s_tir, tirx

    # The schedule-dependent part of s_tir.pipeline.default_s_tir_pipeline (the rest needs
    # the whole module, and does not depend on the schedule).
    passes = [
        s_tir.transform.LowerInitBlock(),
        s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.ConvertBlocksToOpaque(),
        s_tir.transform.CompactBufferAllocation(),
        s_tir.transform.LowerMatchBuffer(),
        s_tir.transform.LowerOpaqueBlock(),
        tirx.transform.FlattenBuffer(),
        tirx.transform.NarrowDataType(32),
        s_tir.transform.LoopPartition(),
        tirx.transform.VectorizeLoop(True),
        tirx.transform.StorageRewrite(),
        tirx.transform.UnrollLoop(),
    ]
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main").with_attr("target", tvm_target)})
    tvm.transform.Sequential(passes)(mod)


def apply_default_schedules(mod: tvm.IRModule, target: TargetSpec) -> ScheduledModule:
    """Schedule every PrimFunc not yet marked scheduled (tuned ones keep their record)."""
    from tvm.tirx import PrimFunc

    from dlc.schedules.cpu import cpu_params

    cpu = cpu_params(target)
    tvm_target = target.to_tvm()
    scheduled = skipped = failed = 0
    by_rule: dict[str, int] = {}
    updates = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, PrimFunc):
            continue
        if is_scheduled(func):
            skipped += 1
            continue
        rule_name, new_func = schedule_kernel(func, cpu, tvm_target, name=gvar.name_hint)
        if rule_name is None:
            failed += 1
            log.warning("no default schedule for kernel %s: left as plain loops", gvar.name_hint)
            continue
        by_rule[rule_name] = by_rule.get(rule_name, 0) + 1
        updates[gvar] = new_func
        scheduled += 1
    if updates:
        mod = mod.clone()  # OptimizedModel.mod stays as fused: tuning extracts tasks from it
        for gvar, func in updates.items():
            mod[gvar] = func
    log.info("default schedules (%s, %d lanes): %d scheduled %s, %d tuned kept, %d plain",
             cpu.isa, cpu.lanes, scheduled, by_rule, skipped, failed)
    return ScheduledModule(mod, scheduled, skipped, failed, tuple(sorted(by_rule.items())))
