"""Per-target default schedules: give every fused kernel a good schedule without measuring.

(Stub: kernels are left as plain loops until the scheduling layer lands.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tvm

    from dlc.target import TargetSpec

# TVM 0.27 spells it "tirx.is_scheduled" (MetaScheduleApplyDatabase); older releases
# "tir.is_scheduled". Either one means: a tuned record owns this kernel.
SCHEDULED_ATTRS = ("tirx.is_scheduled", "tir.is_scheduled")


@dataclass(frozen=True)
class ScheduledModule:
    mod: tvm.IRModule
    scheduled: int  # kernels given a default schedule here
    skipped: int  # kernels already scheduled (tuned records) and left alone


def is_scheduled(func) -> bool:
    attrs = func.attrs
    return attrs is not None and any(bool(attrs.get(key, False)) for key in SCHEDULED_ATTRS)


def apply_default_schedules(mod: tvm.IRModule, target: TargetSpec) -> ScheduledModule:
    """Schedule every PrimFunc not yet scheduled (tuned ones keep their record)."""
    return ScheduledModule(mod, 0, 0)
