"""dlc.target: classic strings, JSON, presets, host detection and error text. No compiling."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dlc.errors import TargetError
from dlc.target import (
    DEFAULT_PRESETS_DIR,
    TargetSpec,
    host_target,
    list_presets,
    parse_target,
)

CLASSIC = [
    ("llvm -mcpu=skylake", {"kind": "llvm", "mcpu": "skylake"}),
    ("llvm -mcpu=skylake-avx512", {"kind": "llvm", "mcpu": "skylake-avx512"}),
    (
        "llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a72 -mattr=+neon",
        {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]},
    ),
    (
        "llvm -device=arm_cpu -mtriple=armv7a-linux-gnueabihf -mattr=+neon,+vfp4 -mfloat-abi=hard",
        {"kind": "llvm", "device": "arm_cpu", "mtriple": "armv7a-linux-gnueabihf",
         "mattr": ["+neon", "+vfp4"], "mfloat-abi": "hard"},
    ),
    ("llvm -mcpu=znver3 -num-cores=4", {"kind": "llvm", "mcpu": "znver3", "num-cores": 4}),
    (
        "llvm -keys=arm_cpu,cpu -model=rpi4 -mtriple=aarch64-linux-gnu -opt-level=3",
        {"kind": "llvm", "keys": ["arm_cpu", "cpu"], "model": "rpi4",
         "mtriple": "aarch64-linux-gnu", "opt-level": 3},
    ),
    ("llvm -fast-math -fast-math-nnan=false", {"kind": "llvm", "fast-math": True,
                                               "fast-math-nnan": False}),
    ("llvm -mcpu skylake", {"kind": "llvm", "mcpu": "skylake"}),
    ("  llvm   -mcpu=skylake  ", {"kind": "llvm", "mcpu": "skylake"}),
    ("llvm", {"kind": "llvm"}),
    ("c -mcpu=generic", {"kind": "c", "mcpu": "generic"}),
]


@pytest.mark.parametrize(("text", "config"), CLASSIC)
def test_classic_string_translates_and_round_trips(text: str, config: dict) -> None:
    spec = parse_target(text)
    assert spec.name == "custom"
    assert spec.config == config
    assert parse_target(str(spec)).config == config
    spec.to_tvm()


def test_str_prints_the_classic_form_in_a_fixed_order() -> None:
    assert str(parse_target("llvm -mcpu=skylake")) == "llvm -mcpu=skylake"
    spec = parse_target('{"mattr": ["+neon"], "mcpu": "cortex-a72", "kind": "llvm", '
                        '"mtriple": "aarch64-linux-gnu", "fast-math": true}')
    assert str(spec) == ("llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a72 -mattr=+neon "
                         "-fast-math")


def test_to_tvm_carries_the_config() -> None:
    target = parse_target("llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a72 -mattr=+neon "
                          "-num-cores=4").to_tvm()
    assert target.kind.name == "llvm"
    assert str(target.attrs["mcpu"]) == "cortex-a72"
    assert list(target.attrs["mattr"]) == ["+neon"]
    assert int(target.attrs["num-cores"]) == 4
    assert "arm_cpu" in list(target.keys)


def test_inline_json() -> None:
    spec = parse_target('{"kind": "llvm", "mcpu": "znver3"}')
    assert spec.name == "custom"
    assert spec.config == {"kind": "llvm", "mcpu": "znver3"}
    assert str(spec) == "llvm -mcpu=znver3"


def test_json_string_lists_and_numbers_are_coerced() -> None:
    spec = parse_target('{"kind": "llvm", "mattr": "+avx2,+fma", "num-cores": "2"}')
    assert spec.config == {"kind": "llvm", "mattr": ["+avx2", "+fma"], "num-cores": 2}


def test_json_file(tmp_path: Path) -> None:
    config = {"kind": "llvm", "mtriple": "armv7a-linux-gnueabihf", "mattr": ["+neon"],
              "mfloat-abi": "hard"}
    path = tmp_path / "board.json"
    path.write_text(json.dumps(config))
    spec = parse_target(str(path))
    assert spec.config == config
    assert spec.arch == "armv7"
    spec.to_tvm()


def test_toml_file_and_string_target(tmp_path: Path) -> None:
    path = tmp_path / "myboard.toml"
    path.write_text('description = "mine"\n'
                    'target = "llvm -mtriple=aarch64-linux-gnu -mattr=+neon"\n'
                    'cross_compiler = "aarch64-linux-gnu-g++"\n')
    spec = parse_target(str(path))
    assert (spec.name, spec.description, spec.cross_compiler) == (
        "myboard", "mine", "aarch64-linux-gnu-g++")
    assert spec.config == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
    assert parse_target("myboard", presets_dir=tmp_path) == spec
    assert [p.name for p in list_presets(tmp_path)] == ["myboard"]


REQUIRED_PRESETS = {"host", "skylake", "skylake-avx512", "znver3", "cortex-a72", "cortex-a53"}


def test_every_preset_loads_and_builds_a_tvm_target() -> None:
    presets = list_presets()
    names = [p.name for p in presets]
    assert names == sorted(names)
    assert REQUIRED_PRESETS <= set(names)
    for spec in presets:
        assert spec.description, spec.name
        spec.to_tvm()
        assert parse_target(spec.name) == spec
        assert parse_target(str(spec)).config == spec.config


def test_arm_presets_cross_compile() -> None:
    a72 = parse_target("cortex-a72")
    assert a72.config == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72",
                          "mattr": ["+neon"]}
    assert (a72.arch, a72.cross_compiler) == ("aarch64", "aarch64-linux-gnu-g++")
    assert parse_target("cortex-a53").arch == "aarch64"
    armv7 = [p for p in list_presets() if p.arch == "armv7"]
    assert armv7, "need a 32-bit ARMv7 preset"
    for spec in armv7:
        assert spec.config["mfloat-abi"] == "hard"
        assert "+neon" in spec.config["mattr"]
        assert spec.cross_compiler == "arm-linux-gnueabihf-g++"
    for name in ("skylake", "skylake-avx512", "znver3", "host"):
        assert parse_target(name).cross_compiler is None


def test_host_target_is_detected() -> None:
    from tvm.target import codegen

    spec = host_target()
    assert spec.config["kind"] == "llvm"
    assert spec.config["mcpu"] == codegen.llvm_get_system_cpu()
    assert spec.config["num-cores"] >= 1
    assert parse_target("host").config == spec.config
    # Without a host.toml, "host" still means this machine.
    assert parse_target("host", presets_dir=Path("/nonexistent")).config == spec.config


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    match = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return set(match.group(1).split()) if match else set()


X86 = platform.machine().lower() in ("x86_64", "amd64")
needs_x86_linux = pytest.mark.skipif(not (X86 and _cpu_flags()), reason="needs x86-64 Linux")


@needs_x86_linux
def test_runs_on_host_follows_cpu_flags() -> None:
    # /proc/cpuinfo is the independent oracle; on the dev box (znver3) these are True/False.
    flags = _cpu_flags()
    assert parse_target("skylake").runs_on_host() == ({"avx2", "fma"} <= flags)
    avx512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"}
    assert parse_target("skylake-avx512").runs_on_host() == (avx512 <= flags)
    assert parse_target("llvm -mattr=+avx512f").runs_on_host() == ("avx512f" in flags)
    assert parse_target("llvm").runs_on_host()


def test_runs_on_host_for_host_and_other_arches() -> None:
    assert parse_target("host").runs_on_host()
    if platform.machine().lower() not in ("aarch64", "arm64"):
        assert not parse_target("cortex-a72").runs_on_host()
        assert not parse_target("cortex-a53").runs_on_host()
    assert not parse_target("llvm -mtriple=riscv64-linux-gnu").runs_on_host()


def test_key_is_stable_safe_and_content_derived() -> None:
    skylake = parse_target("skylake")
    assert re.fullmatch(r"llvm-skylake-[0-9a-f]{8}", skylake.key)
    # Same config, different spelling or name: same key.
    assert parse_target("llvm -mcpu=skylake").key == skylake.key
    assert parse_target('{"mcpu": "skylake", "kind": "llvm"}').key == skylake.key
    assert TargetSpec("other-name", {"kind": "llvm", "mcpu": "skylake"}).key == skylake.key
    keys = {parse_target(t).key for t in ("skylake", "skylake-avx512", "znver3", "cortex-a72",
                                          "cortex-a53")}
    assert len(keys) == 5
    # The core count is where the code runs, not what it is: one log folder for all.
    assert parse_target("llvm -mcpu=skylake -num-cores=4").key == skylake.key
    assert skylake.with_cores(2).config["num-cores"] == 2 and skylake.with_cores(2).key == skylake.key
    assert parse_target("llvm -mcpu=skylake -num-cores=4").with_cores(2).config["num-cores"] == 4
    for spec in list_presets():
        assert re.fullmatch(r"[a-z0-9][a-z0-9._-]*", spec.key), spec.key
    assert parse_target("llvm -mtriple=aarch64-linux-gnu").key.startswith("llvm-aarch64-")
    assert parse_target("llvm").key.startswith("llvm-generic-")


def test_spec_is_canonical_and_hashable() -> None:
    spec = TargetSpec("x", {"mattr": "+neon", "kind": "llvm", "mtriple": "aarch64-linux-gnu"})
    assert list(spec.config) == ["kind", "mtriple", "mattr"]
    assert spec.config["mattr"] == ["+neon"]
    assert len({spec, TargetSpec("x", dict(spec.config))}) == 1
    with pytest.raises(TargetError, match="unknown option '-foo'"):
        TargetSpec("x", {"kind": "llvm", "foo": 1})


MALFORMED = [
    ("skylak", "unknown target 'skylak'; did you mean 'skylake'?"),
    ("banana", "unknown target 'banana'"),
    ("", "empty target"),
    ("llvm -mcpu", "option '-mcpu' in target 'llvm -mcpu' has no value"),
    ("llvm -mattr=", "option '-mattr' in target 'llvm -mattr=' has no value"),
    ("llvm -foo=bar", "unknown option '-foo' in target 'llvm -foo=bar'"),
    ("llvm -mcpux=skylake", "did you mean '-mcpu'?"),
    ("llvm -mcpu=a -mcpu=b", "option '-mcpu' is given twice"),
    ("llvm skylake", "unexpected 'skylake' in target 'llvm skylake'"),
    ("llvm -num-cores=four", "option '-num-cores' in target 'llvm -num-cores=four' expects an "),
    ("llvm -fast-math=maybe", "expects true or false"),
    ("llvm -link-params=1", "unknown option '-link-params'"),
    ("cuda", "dlc only builds for CPUs, not 'cuda'"),
    ("cuda -arch=sm_80", "dlc only builds for CPUs, not 'cuda'"),
    ("llvmx -mcpu=skylake", "unknown target kind 'llvmx'"),
    ('llvm "-mcpu=a', "cannot parse target"),
    ('{"kind": "llvm",', "invalid JSON in target '{\"kind\": \"llvm\",'"),
    ('["llvm"]', "must be a JSON object, not list"),
    ('{"mcpu": "skylake"}', "has no 'kind'"),
    ('{"kind": "cuda"}', "dlc only builds for CPUs"),
    ('{"kind": "llvm", "num-cores": true}', "expects an integer"),
    ('{"kind": "llvm", "mattr": [1]}', "expects a comma list"),
    ("missing.json", "target file 'missing.json' not found"),
]


@pytest.mark.parametrize(("text", "fragment"), MALFORMED)
def test_malformed_input_raises_target_error(text: str, fragment: str) -> None:
    with pytest.raises(TargetError) as info:
        parse_target(text)
    assert fragment in info.value.message
    assert info.value.hint
    assert info.value.exit_code == 2


def test_unknown_target_renders_with_the_preset_list() -> None:
    with pytest.raises(TargetError) as info:
        parse_target("skylak")
    names = ", ".join(sorted(p.name[:-5] for p in DEFAULT_PRESETS_DIR.iterdir() if p.name.endswith(".toml")))
    assert info.value.render() == (
        "error: unknown target 'skylak'; did you mean 'skylake'?\n"
        f'  hint: use a preset ({names}), a TVM string like "llvm -mcpu=skylake", or JSON')


def test_unknown_option_hint_lists_valid_options() -> None:
    with pytest.raises(TargetError) as info:
        parse_target("llvm -foo=bar")
    assert info.value.hint.startswith("valid options for 'llvm': -mtriple, -mcpu, -mattr")
    assert "-num-cores" in info.value.hint


def test_unknown_cpu_is_caught_by_to_tvm() -> None:
    spec = parse_target("llvm -mcpu=skylak")  # parsing does not need LLVM
    with pytest.raises(TargetError, match="does not know CPU 'skylak'.*did you mean 'skylake'"):
        spec.to_tvm()
    with pytest.raises(TargetError, match="does not know CPU 'skylake' for 'aarch64-linux-gnu'"):
        parse_target("llvm -mtriple=aarch64-linux-gnu -mcpu=skylake").to_tvm()


def test_broken_preset_names_its_file(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('target = { kind = "llvm", mcpu = 3 }\n')
    with pytest.raises(TargetError, match=r"in target preset '.*bad.toml': option '-mcpu'"):
        parse_target("bad", presets_dir=tmp_path)
    (tmp_path / "bad.toml").write_text('target = "llvm"\ncolour = "red"\n')
    with pytest.raises(TargetError, match="unknown key 'colour'"):
        list_presets(tmp_path)


def test_option_table_matches_tvm() -> None:
    from tvm.target import Target, TargetKind

    from dlc.target import _OPTIONS, _OTHER_KINDS

    internal = {"kind", "tag", "host", "from_device", "target_device_type"}
    words = {str: "str", int: "int", bool: "bool", list: "Array<str>"}
    for kind, options in _OPTIONS.items():
        tvm_options = {k: v for k, v in TargetKind.options_from_name(kind).items()
                       if k not in internal}
        assert {k: words[t] for k, t in options.items()} == dict(tvm_options), kind
    assert set(_OPTIONS) | _OTHER_KINDS == set(Target.list_kinds())


def test_import_does_not_load_tvm() -> None:
    code = ("import sys, dlc.target as t; t.parse_target('cortex-a72'); "
            "t.parse_target('llvm -mcpu=skylake'); assert 'tvm' not in sys.modules")
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


# A Zen 3's flags (family 25 model 1), and a Zen 4 VM whose hypervisor hides AVX-512
# (family 25 model 17: the machine issue 8 was found on) as /proc/cpuinfo lists them.
ZEN3_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse "
    "sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl cpuid pni "
    "pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand "
    "hypervisor lahf_lm cmp_legacy abm sse4a misalignsse 3dnowprefetch topoext fsgsbase bmi1 avx2 "
    "smep bmi2 erms invpcid rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves "
    "clzero wbnoinvd arat umip pku ospke vaes vpclmulqdq rdpid fsrm").replace(" ", ",")
ZEN4_NO_AVX512_FLAGS = ZEN3_FLAGS + ",gfni"


@pytest.fixture
def zen4_vm(monkeypatch):
    """This process sees a Zen 4 whose AVX-512 the hypervisor hides."""
    monkeypatch.setenv("DLC_HOST_CPU", "znver4")
    monkeypatch.setenv("DLC_HOST_FEATURES", ZEN4_NO_AVX512_FLAGS)


@pytest.mark.skipif(not X86, reason="x86 feature names")
def test_host_on_a_zen4_vm_without_avx512_turns_avx512_off(zen4_vm) -> None:
    spec = host_target()
    assert spec.config["mcpu"] == "znver4"
    assert "-avx512f" in spec.config["mattr"] and "-avx512bw" in spec.config["mattr"]
    assert not [f for f in spec.isa_features() if f.startswith("avx512")]
    assert {"avx2", "fma", "f16c", "gfni"} <= set(spec.isa_features())
    assert spec.runs_on_host()
    # Named targets are judged by the same flags, never by the CPU's name.
    assert parse_target("znver3").runs_on_host() and parse_target("skylake").runs_on_host()
    assert not parse_target("skylake-avx512").runs_on_host()
    assert parse_target("skylake-avx512").unrunnable_reason().startswith("this CPU lacks avx512")
    assert not parse_target("llvm -mcpu=znver4").runs_on_host()
    # Masked hosts are another target than unmasked ones: their tuning logs stay apart.
    assert spec.key != parse_target("llvm -mcpu=znver4").key


@pytest.mark.skipif(not X86, reason="x86 feature names")
def test_host_on_a_plain_zen3_is_its_cpu_name(monkeypatch) -> None:
    monkeypatch.setenv("DLC_HOST_CPU", "znver3")
    monkeypatch.setenv("DLC_HOST_FEATURES", ZEN3_FLAGS)
    spec = host_target()
    assert "mattr" not in spec.config
    assert spec.key == parse_target("znver3").key  # host on a Zen 3 shares the znver3 preset's logs
    assert not parse_target("skylake-avx512").runs_on_host()


def test_other_architectures_never_run_here() -> None:
    reason = parse_target("cortex-a72").unrunnable_reason()
    if platform.machine().lower() not in ("aarch64", "arm64"):
        assert reason.startswith("it is aarch64 code")


@pytest.mark.parametrize("a, b, compatible", [
    ("skylake", "znver3", True),  # both AVX2 + FMA: each other's tuned schedules carry over
    ("skylake-avx512", "llvm -mcpu=znver4", True),
    ("skylake", "skylake-avx512", False),  # another vector width
    ("cortex-a72", "cortex-a53", True),
    ("cortex-a72", "znver3", False),  # another arch
    ("znver3", "llvm -mcpu=znver3 -num-cores=4", False),  # the same key: not "another" target
])
def test_compatible_targets_share_kind_arch_and_vector_level(a: str, b: str, compatible: bool) -> None:
    first, second = parse_target(a), parse_target(b)
    assert first.compatible_with(second) is compatible
    assert second.compatible_with(first) is compatible
