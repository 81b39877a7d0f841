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


@pytest.mark.parametrize(
    "extent, expected",
    [
        (64, 32),  # whole registers
        (48, 24),
        (2100, 28),  # YOLOv8's anchors: no multiple of 8 divides it; 7 half registers
        (7, 7),  # short: one partial vector
        (97, 1),  # prime: scalar
    ],
)
def test_vector_chunk(extent, expected):
    from dlc.schedules.common import vector_chunk

    assert vector_chunk(extent, AVX2) == expected


def _matmul(m: int, n: int, k: int):
    from tvm import te

    a = te.placeholder((m, k), name="a")
    b = te.placeholder((k, n), name="b")
    r = te.reduce_axis((0, k), name="r")
    c = te.compute((m, n), lambda i, j: te.sum(a[i, r] * b[r, j], axis=r), name="c")
    return te.create_prim_func([a, b, c])


@pytest.mark.parametrize("m, n, k, parallel", [(16, 64, 64, False), (256, 256, 256, True)])
def test_only_kernels_worth_two_cores_run_in_parallel(m, n, k, parallel):
    """A parallel kernel costs 5-10 us more where the cores are far apart (bench/README.md):
    131 kFLOP stays serial, 33 MFLOP is split."""
    from tvm import s_tir

    from dlc.schedules import contraction

    sch = s_tir.Schedule(_matmul(m, n, k))
    assert contraction.apply(sch, AVX2)
    assert ("T.parallel(" in sch.mod.script()) == parallel


@pytest.mark.parametrize("axis, rows", [(-1, True), (1, False)])
def test_rows_rule_takes_reductions_along_the_innermost_axis_only(axis, rows):
    """Softmax over the last axis (transformers) is done row by row; over axis 1 (YOLOv8's
    DFL softmax, strided) it is left to the `reduction` rule."""
    from tvm import s_tir, te, topi

    from dlc.schedules import rows as rows_rule

    x = te.placeholder((1, 16, 4, 64), name="x")
    func = te.create_prim_func([x, topi.nn.softmax(x, axis=axis)])
    assert rows_rule.apply(s_tir.Schedule(func), AVX2) == rows
