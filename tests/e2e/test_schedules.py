"""Default schedules: every kernel class scheduled, verified against ONNX Runtime, and the
vector instructions each target gets."""

from __future__ import annotations

import re
import shutil

import pytest

from dlc import build, frontend, pipeline
from dlc.errors import BuildError
from dlc.schedule import apply_default_schedules, is_scheduled
from dlc.target import parse_target
from dlc.verify import verify
from tests.conftest import run_dlc

HOST = parse_target("host")


def _optimize(path, target=HOST):
    return pipeline.optimize(frontend.import_model(frontend.load_model(path)), target)


def _schedule(optimized, target=HOST):
    with target.to_tvm():
        return apply_default_schedules(optimized.mod, target)


@pytest.mark.parametrize(
    "name, classes",
    [
        ("conv_relu_pool", {"contraction"}),  # conv + bias + relu, max pool, global mean
        ("depthwise_grouped_conv", {"contraction"}),  # depthwise, grouped, 18-channel conv
        ("attention_block", {"contraction", "rows"}),  # batch-matmul, softmax and layer norm by rows, gemm
        ("pooling", {"contraction", "reduction"}),  # max/avg pool, global pool, channel mean
        ("matmul_softmax", {"contraction", "rows"}),
        ("conv_silu_softmax", {"contraction", "rows", "injective"}),  # fast sigmoid, softmax, exp
    ],
)
def test_every_kernel_scheduled_and_matches_onnxruntime(tiny, tmp_path, name, classes):
    optimized = _optimize(tiny(name))
    result = _schedule(optimized)
    assert (result.scheduled, result.skipped, result.failed) == (optimized.kernels, 0, 0)
    assert classes <= dict(result.by_rule).keys()
    built = build.build(optimized, HOST, output=tmp_path / f"{name}.so")
    report = verify(tiny(name), built.library, seed=3)
    assert report.passed, report


def test_tuned_kernels_are_left_alone(tiny):
    optimized = _optimize(tiny("conv_relu_pool"))
    gvar, func = next((g, f) for g, f in optimized.mod.functions_items() if g.name_hint.startswith("fused_conv2d"))
    tuned = func.with_attr("tirx.is_scheduled", True)
    mod = optimized.mod.clone()
    mod[gvar] = tuned
    with HOST.to_tvm():
        result = apply_default_schedules(mod, HOST)
    assert result.skipped == 1 and result.scheduled == optimized.kernels - 1
    assert result.mod[gvar].same_as(tuned)
    # The fused module itself is not rewritten: tuning extracts its tasks from it.
    assert not any(is_scheduled(f) for _, f in optimized.mod.functions_items() if hasattr(f, "attrs") and f.attrs)


def test_a_failing_rule_leaves_plain_loops_and_the_build_works(tiny, tmp_path, monkeypatch):
    import dlc.schedule

    def broken(sch, cpu):
        raise RuntimeError("rule bug")

    monkeypatch.setattr(dlc.schedule, "_rules", lambda: [("broken", broken)])
    optimized = _optimize(tiny("conv_relu_pool"))
    result = _schedule(optimized)
    assert (result.scheduled, result.failed) == (0, optimized.kernels)
    built = build.build(optimized, HOST, output=tmp_path / "plain.so")
    assert verify(tiny("conv_relu_pool"), built.library, seed=3).passed


def test_a_schedule_that_does_not_lower_falls_back(tiny, tmp_path, monkeypatch):
    """Lowering is checked per kernel: kernels whose schedules (here: every one with a
    split-off reduction init) do not lower keep plain loops, the rest keep theirs, and the
    model still builds and matches."""
    import dlc.schedule

    check = dlc.schedule._check_lowers
    refused = []

    def refuse_decomposed(func, tvm_target):
        if '_init")' in func.script():
            refused.append(func)
            raise RuntimeError("Cannot lower")
        check(func, tvm_target)

    monkeypatch.setattr(dlc.schedule, "_check_lowers", refuse_decomposed)
    optimized = _optimize(tiny("conv_relu_pool"))
    result = _schedule(optimized)
    assert refused and result.failed >= 1 and dict(result.by_rule) == {"injective": result.scheduled}
    assert result.scheduled + result.failed == optimized.kernels
    built = build.build(optimized, HOST, output=tmp_path / "m.so")
    assert verify(tiny("conv_relu_pool"), built.library, seed=3).passed


@pytest.mark.parametrize("pinned", [True, False])
def test_conv_transpose_keeps_a_layout_it_can_lower(tiny, tmp_path, monkeypatch, caplog, pinned):
    """Pinned NCHW in CPU_CONV_LAYOUT; unpinned, the fallback rebuilds in the model's layout."""
    import logging

    import dlc.pipeline

    if not pinned:
        monkeypatch.setattr(dlc.pipeline, "CPU_CONV_LAYOUT", {"relax.nn.conv2d": ["NHWC", "HWIO"]})
    with caplog.at_level(logging.WARNING, logger="dlc.pipeline"):
        optimized = _optimize(tiny("conv_transpose"))
    fallback = [r for r in caplog.records if "keeping the model's layout" in r.getMessage()]
    assert bool(fallback) == (not pinned)
    assert dlc.pipeline._unlowered_layout_ops(optimized.mod) == []
    built = build.build(optimized, HOST, output=tmp_path / "m.so")
    assert verify(tiny("conv_transpose"), built.library, seed=3).passed


def test_conv_transpose_with_kernel_equal_to_stride_becomes_a_conv(tiny):
    """Kernel 2 = stride 2 turns into a 1x1 conv2d and a pixel shuffle (reshape, transpose);
    the kernel-3 one stays a conv2d_transpose (the test above builds and verifies both)."""
    import tvm

    imported = frontend.import_model(frontend.load_model(tiny("conv_transpose")))
    with HOST.to_tvm():
        graph = tvm.transform.Sequential(pipeline._graph_passes(HOST, layout=False))(imported.mod).script()
    assert graph.count("R.nn.conv2d_transpose(") == 1
    assert graph.count("R.nn.conv2d(") == 2  # the model's conv and the rewritten upsampling


@pytest.mark.parametrize("preset, widths", [
    ("skylake-avx512", {"matmul": (100, 112), "conv": [(40, 48), (24, 32)]}),  # zmm: 16 lanes
    ("skylake", {"matmul": (100, 104), "conv": []}),  # ymm: 8 lanes, 40 and 24 are whole
])
def test_odd_output_features_are_padded_to_whole_registers(tiny, preset, widths):
    import tvm

    target = parse_target(preset)
    imported = frontend.import_model(frontend.load_model(tiny("odd_features")))
    with target.to_tvm():
        graph = tvm.transform.Sequential(pipeline._graph_passes(target))(imported.mod)
    text = graph.script(show_meta=True)
    # R.strided_slice(y, (last axis,), (0,), (features,)) after each padded one
    ends = sorted(int(e) for e in re.findall(r"R\.strided_slice\(\w+, \(\d+,\), \(0,\), \((\d+),\)", text))
    expected = sorted([widths["matmul"][0]] + [f for f, _ in widths["conv"]])
    assert ends == expected, text


def test_size_one_constants_keep_the_chain_between_convs_channels_last(tiny, tmp_path):
    import tvm

    imported = frontend.import_model(frontend.load_model(tiny("scaled_convs")))
    with HOST.to_tvm():
        graph = tvm.transform.Sequential(pipeline._graph_passes(HOST))(imported.mod).script()
    assert graph.count("R.permute_dims(") == 2, graph  # the input to NHWC, the output back
    built = build.build(_optimize(tiny("scaled_convs")), HOST, output=tmp_path / "m.so")
    assert verify(tiny("scaled_convs"), built.library, seed=3).passed


def test_padded_features_match_onnxruntime(tiny, tmp_path):
    optimized = _optimize(tiny("odd_features"))
    built = build.build(optimized, HOST, output=tmp_path / "m.so")
    report = verify(tiny("odd_features"), built.library, seed=3)
    assert report.passed, report


# An FMA on the fp32 vector registers each ISA's micro-kernel uses, as it spells them.
VECTOR_FMA = {
    "skylake": r"vfmadd\d{3}ps\s+[^\n]*%ymm(?:[0-9]|1[0-5])\b",  # AVX2: 8 lanes, 16 registers
    # AVX-512: EVEX encodings (zmm, ymm16-31, embedded broadcasts); dlc tiles 8 lanes in
    # 32 registers (schedules/cpu.py), which LLVM may still widen to zmm
    "skylake-avx512": r"vfmadd\d{3}ps\s+[^\n]*(?:%zmm|%ymm(?:1[6-9]|2\d|3[01])\b|\{1to\d+\})",
    "cortex-a72": r"fmla\s+v\d+\.4s",  # aarch64 NEON: 4 lanes
}


@pytest.mark.parametrize("preset", ["skylake-avx512", "cortex-a72"])
def test_assembly_uses_the_targets_vector_fma(tiny, tmp_path, preset):
    """Compile only: the asm is written before linking, so no cross linker is needed."""
    target = parse_target(preset)
    optimized = _optimize(tiny("depthwise_grouped_conv"), target)
    asm = tmp_path / f"{preset}.s"
    try:
        build.build(optimized, target, output=tmp_path / "m.so", dump_asm=asm)
    except BuildError as err:  # only a missing cross linker may stop it, after the asm is out
        assert target.cross_compiler and shutil.which(target.cross_compiler) is None, err
    text = asm.read_text()
    assert len(re.findall(VECTOR_FMA[preset], text)) >= 8
    for other, pattern in VECTOR_FMA.items():
        if other != preset and not (preset == "skylake-avx512" and other == "skylake"):  # a superset
            assert not re.search(pattern, text), f"{preset} got {other}'s instructions"


def test_cli_dump_asm_avx2(tiny, tmp_path):
    asm = tmp_path / "asm" / "m.s"
    result = run_dlc("compile", str(tiny("depthwise_grouped_conv")), "-t", "llvm -mcpu=skylake",
                     "-o", str(tmp_path / "m.so"), "--dump-asm", str(asm))
    assert result.returncode == 0, result.stderr
    assert "assembly written to" in result.stderr  # rich may wrap the path onto the next line
    text = asm.read_text()
    assert len(re.findall(VECTOR_FMA["skylake"], text)) >= 8 and "%zmm" not in text
    assert not re.search(VECTOR_FMA["skylake-avx512"], text)  # no EVEX-only registers


def test_exp_and_sigmoid_are_vectorised_not_libm_calls(tiny, tmp_path):
    """The exact forms lower to one scalar `expf` call per element (pipeline._fast_math_pass)."""
    target = parse_target("llvm -mcpu=skylake")
    asm = tmp_path / "m.s"
    build.build(_optimize(tiny("conv_silu_softmax"), target), target, output=tmp_path / "m.so", dump_asm=asm)
    text = asm.read_text()
    assert "expf" not in text and re.search(VECTOR_FMA["skylake"], text)


PRESETS = ["skylake", "skylake-avx512", "cortex-a72", "cortex-a7"]
TINY = ["conv_relu_pool", "depthwise_grouped_conv", "attention_block", "pooling", "conv_silu_softmax",
        "conv_transpose"]


def _clean_schedule(optimized, target, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="dlc.schedule"):
        result = _schedule(optimized, target)
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and "default schedules" not in r.getMessage()]
    return result, problems


@pytest.mark.parametrize("preset", PRESETS)
def test_every_rule_fits_on_every_isa(tiny, caplog, preset):
    """Tile sizes depend on the lanes (4, 8, 16): each ISA must schedule every kernel with
    its first-choice rule, without a rule failing or a schedule not lowering."""
    target = parse_target(preset)
    for name in TINY:
        optimized = _optimize(tiny(name), target)
        result, problems = _clean_schedule(optimized, target, caplog)
        assert (result.scheduled, result.failed, problems) == (optimized.kernels, 0, []), name


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", ["nudenet-320n", "ppocr-cls"])
def test_real_models_schedule_cleanly_on_every_isa(zoo_model, caplog, name, preset):
    from dlc.zoo import MODELS

    target = parse_target(preset)
    loaded = frontend.load_model(zoo_model(name), input_shapes=MODELS[name].input_shapes)
    optimized = pipeline.optimize(frontend.import_model(loaded), target)
    result, problems = _clean_schedule(optimized, target, caplog)
    assert (result.scheduled, result.failed, problems) == (optimized.kernels, 0, [])
