"""Target parameters and tile choices of the default schedules (no compiling)."""

from __future__ import annotations

import pytest

from dlc.schedules.contraction import _tiles
from dlc.schedules.cpu import CpuParams, cpu_params
from dlc.target import parse_target


@pytest.mark.parametrize(
    "preset, isa, lanes, registers, fma",
    [
        ("skylake", "avx2", 8, 16, True),
        ("skylake-avx512", "avx512", 8, 32, True),  # ymm0-31: faster than zmm (cpu.py)
        ("cortex-a72", "neon", 4, 32, True),
        ("cortex-a7", "neon", 4, 16, True),
    ],
)
def test_cpu_params_follow_the_target(preset, isa, lanes, registers, fma):
    cpu = cpu_params(parse_target(preset))
    assert (cpu.isa, cpu.lanes, cpu.registers, cpu.fma) == (isa, lanes, registers, fma)


def test_cores_come_from_the_target():
    assert cpu_params(parse_target("llvm -mcpu=skylake -num-cores=6")).cores == 6


AVX2 = CpuParams("avx2", 8, 16, True, 2)
AVX512 = CpuParams("avx512", 8, 32, True, 2)
NEON = CpuParams("neon", 4, 32, True, 4)


@pytest.mark.parametrize(
    "cpu, vec, reg, expected",
    [
        (AVX2, 64, 40, (16, 5)),  # 2 ymm x 5 rows = 10 accumulators
        (AVX2, 64, 80, (16, 5)),
        (AVX2, 18, 10, (9, 5)),  # 18 channels: no whole vector divides it; 9 takes 2 ymm
        (AVX512, 64, 40, (32, 5)),  # 4 ymm x 5 = 20 of 32 registers
        (NEON, 32, 20, (16, 5)),
        (AVX2, 1000, 1, (40, 1)),  # GEMV: no second axis, more vector accumulators
    ],
)
def test_register_tile(cpu, vec, reg, expected):
    assert _tiles(vec, reg, cpu) == expected
