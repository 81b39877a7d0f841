"""Pure parts of dlc.tuning: the tuning curve and the local-search moves (no compiling)."""

from __future__ import annotations


def test_gain_point_is_where_the_run_reached_90_percent_of_its_gain():
    from dlc.tuning import CurvePoint, gain_point

    curve = tuple(CurvePoint(t, t * 2.0, us) for t, us in [(0, 100.0), (16, 60.0), (32, 52.0), (48, 50.0)])
    assert gain_point(curve) == curve[2]  # 90% of 50 us gained: at or below 55 us
    assert gain_point(curve, 0.5) == curve[1]
    assert gain_point(curve[:1]) is None and gain_point((curve[0], CurvePoint(16, 1.0, 120.0))) is None


def test_local_moves_shift_one_tile_factor_or_one_unroll_step():
    from types import SimpleNamespace

    from dlc.tuning import _moves

    tile = SimpleNamespace(kind=SimpleNamespace(name="SamplePerfectTile"), attrs=[2, 16])
    assert _moves(tile, [4, 8]) == [[2, 16], [8, 4]]  # [1, 32] would break max_innermost_factor
    assert _moves(tile, [6, 2]) == [[3, 4], [2, 6], [12, 1]]
    unroll = SimpleNamespace(kind=SimpleNamespace(name="SampleCategorical"), attrs=[[0, 16, 64, 512], [0.25] * 4])
    assert _moves(unroll, 1) == [0, 2] and _moves(unroll, 3) == [2]
    assert _moves(SimpleNamespace(kind=SimpleNamespace(name="SampleComputeLocation"), attrs=[]), 0) == []


def test_the_curve_uses_each_defaults_final_timing_and_gains_beyond_noise():
    """Kernel a: default re-timed from 120 down to 100 us during the run; its record at 99 us
    is within noise (3%), at 80 us a gain. Kernel b (2 calls) never got a record."""
    from types import SimpleNamespace

    from dlc.tuning import _draw_curve

    states = [SimpleNamespace(task=SimpleNamespace(weight=1), default_us=100.0),
              SimpleNamespace(task=SimpleNamespace(weight=2), default_us=10.0)]
    snapshots = [(0, 0.0, [None, None]), (16, 1.0, [99.0, None]), (32, 2.0, [80.0, None])]
    assert [p.estimated_us for p in _draw_curve(snapshots, states)] == [120.0, 120.0, 100.0]


def test_first_expected_gain_is_the_headroom_below_the_models_best_flop_rate():
    """A 1x1 conv at the best rate gets the floor, a 3x3 conv at a fifth of it 0.8, a copy
    or depthwise conv (under 64 FLOPs per output) the fixed guess; a record better than the
    default counts."""
    from types import SimpleNamespace

    from dlc.tuning import COPY_HEADROOM, MIN_GAIN, _headroom_priors

    def state(flops, outputs, default_us, best_us=None):
        return SimpleNamespace(task=SimpleNamespace(flops=flops, output_elements=outputs), default_us=default_us,
                               best_us=best_us, last_gain=0.5)

    conv = state(64e6, 100_000, 200.0)  # 320 GFLOP/s
    slow = state(180e6, 1_000_000, 2812.5)  # 64 GFLOP/s
    depthwise = state(18e6, 1_000_000, 1000.0)
    copy = state(1e6, 1_000_000, 50.0)
    tuned = state(180e6, 1_000_000, 2812.5, best_us=1125.0)  # its record runs at 160 GFLOP/s
    _headroom_priors([conv, slow, depthwise, copy, tuned])
    assert conv.last_gain == MIN_GAIN and abs(slow.last_gain - 0.8) < 1e-9
    assert copy.last_gain == depthwise.last_gain == COPY_HEADROOM and abs(tuned.last_gain - 0.5) < 1e-9


def test_a_tuned_build_slower_than_the_untuned_one_is_reported(capsys):
    from dlc import display
    from dlc.bench import BenchResult, Latency

    def bench(tuned_ms: float) -> BenchResult:
        return BenchResult((Latency("dlc untuned", 10.0, 9.0, 40), Latency("dlc tuned", tuned_ms, 9.0, 40),
                            Latency("onnxruntime", 6.0, 5.0, 40)), 2, 4, 10)

    display.warn_if_tuning_lost(bench(11.8))
    assert "18% slower than the untuned one" in capsys.readouterr().out
    display.warn_if_tuning_lost(bench(10.2))  # within the noise: no warning
    assert capsys.readouterr().out == ""
