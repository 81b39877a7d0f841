"""Reductions no contraction tile fits: softmax, layer norm, mean over the innermost axis.

Producers and epilogues are inlined, then each remaining block runs in parallel over its
spatial axes; spatial blocks (the normalise step of softmax) are also vectorised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dlc.schedules import common

if TYPE_CHECKING:
    from tvm import s_tir

    from dlc.schedules.cpu import CpuParams


def apply(sch: s_tir.Schedule, cpu: CpuParams) -> bool:
    infos = common.block_infos(sch)
    if not infos or not any(b.is_reduction() for b in infos):
        return False
    common.inline_injective(sch)
    for block in common.root_blocks(sch):
        if common.is_spatial(sch, block):
            common.schedule_spatial(sch, block, cpu)
        else:
            common.schedule_reduction_loops(sch, block, cpu)
    return True
