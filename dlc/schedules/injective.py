"""Elementwise and injective kernels: activations, adds, concat, split, transpose, resize.

Chains are inlined into their outputs; each output is one fused loop, vectorised in whole
registers and parallel when large enough.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dlc.schedules import common

if TYPE_CHECKING:
    from tvm import s_tir

    from dlc.schedules.cpu import CpuParams


def apply(sch: s_tir.Schedule, cpu: CpuParams) -> bool:
    infos = common.block_infos(sch)
    if not infos or not all(b.is_injective() for b in infos):
        return False
    common.inline_injective(sch)
    for block in common.root_blocks(sch):
        common.schedule_spatial(sch, block, cpu)
    return True
