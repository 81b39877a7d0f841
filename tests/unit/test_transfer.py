"""Pure parts of dlc.transfer: tile decisions fitted to new extents, kernel classes and their
distances, the warm start's pick of records (no compiling or measuring)."""

from __future__ import annotations

import math
import random

import pytest

from dlc.transfer import KernelShape, fit_tile, kernel_shape, replay, spread


@pytest.mark.parametrize(
    "factors, extent, max_inner, expected",
    [
        ([4, 24, 1, 1], 48, 64, [2, 24, 1, 1]),  # every inner factor divides: the outer one shrinks
        ([1, 16], 24, 64, [2, 12]),  # 16 does not divide 24: the largest divisor below it
        ([2, 8, 16], 96, 64, [1, 6, 16]),  # 16 kept; then 8 does not divide 6: 6
        ([1, 64], 128, 32, [4, 32]),  # the innermost level stays within max_innermost_factor
        ([2, 4], 7, 64, [7, 1]),  # a prime extent: only 1 fits inside
        ([1, 1, 1, 2], 1, 64, [1, 1, 1, 1]),
        ([3, 5], 15, 0, [3, 5]),  # the same extent: the same tiling
    ],
)
def test_a_tile_keeps_each_inner_factor_that_divides_else_the_largest_divisor_below_it(
        factors, extent, max_inner, expected):
    assert fit_tile(factors, extent, max_inner) == expected


def test_a_fitted_tile_is_always_a_perfect_tiling():
    rng = random.Random(0)
    for _ in range(500):
        factors = [rng.choice([1, 2, 3, 4, 5, 8, 16, 24, 32]) for _ in range(rng.randint(2, 4))]
        extent, max_inner = rng.randint(1, 600), rng.choice([0, 16, 64])
        fitted = fit_tile(factors, extent, max_inner)
        assert math.prod(fitted) == extent and len(fitted) == len(factors)
        assert max_inner == 0 or fitted[-1] <= max_inner
        assert all(f <= max(w, 1) for f, w in zip(fitted[1:], factors[1:]))  # inner tiles never grow


def test_distance_is_the_sum_of_log_ratios_within_a_class_only():
    a = KernelShape(("conv",), (1, 16, 16, 8))
    assert a.distance(KernelShape(("conv",), (1, 32, 8, 8))) == pytest.approx(2 * math.log(2))
    assert a.distance(a) == 0
    assert a.distance(KernelShape(("matmul",), (1, 16, 16, 8))) == math.inf


def test_the_warm_start_takes_records_from_the_whole_ranking():
    ranked = list(range(100))
    assert spread(ranked, 5) == [0, 25, 50, 74, 99]  # the best, the worst, evenly between
    assert spread(ranked[:3], 16) == [0, 1, 2]
    assert spread(ranked, 1) == [0]


def _matmul(n: int, m: int, k: int, name: str = "C"):
    import tvm
    from tvm import te

    a = te.placeholder((n, k), name="A")
    b = te.placeholder((k, m), name="B")
    r = te.reduce_axis((0, k), name="k")
    c = te.compute((n, m), lambda i, j: te.sum(a[i, r] * b[r, j], axis=r), name=name)
    return tvm.IRModule({"main": te.create_prim_func([a, b, c])})


def test_a_trace_replays_on_a_kernel_of_its_class_with_tiles_fitted():
    """A 64x64x64 matmul's tiling (inner 16, 8 and 32) replayed on 24x12x96: fitted, every inner
    factor that divides its new extent stays and the others become the largest divisor below
    them. TVM's own replay keeps an inner factor only where it divides and otherwise puts the
    whole extent innermost (24 and 12 in one vectorisable loop, whatever its length)."""
    from tvm import s_tir

    source = _matmul(64, 64, 64)
    sch = s_tir.Schedule(source)
    block = sch.get_sblock("C")
    i, j, k = sch.get_loops(block)
    for loop, decision in ((i, [4, 16]), (j, [8, 8]), (k, [2, 32])):
        sch.split(loop, sch.sample_perfect_tile(loop, n=2, max_innermost_factor=64, decision=decision))

    target = _matmul(24, 12, 96)
    assert kernel_shape(target).kind == kernel_shape(source).kind
    assert kernel_shape(target).distance(kernel_shape(source)) == pytest.approx(
        math.log(64 / 24) + math.log(64 / 12) + math.log(96 / 64))
    assert kernel_shape(_matmul(64, 64, 64, name="D")).kind != kernel_shape(source).kind  # other block name

    def tiles(candidate):
        return [[int(f) for f in d] for inst, d in candidate.sch.trace.decisions.items()
                if inst.kind.name == "SamplePerfectTile"]

    assert tiles(replay(target, sch.trace, [], fit_tiles=True)) == [[2, 12], [2, 6], [3, 32]]
    assert tiles(replay(target, sch.trace, [])) == [[1, 24], [1, 12], [3, 32]]


def test_tune_help_names_the_two_ways_to_use_other_kernels_records():
    from tests.conftest import run_dlc

    result = run_dlc("tune", "--help")
    assert result.returncode == 0
    assert "--cold" in result.stdout and "--transfer-only" in result.stdout
