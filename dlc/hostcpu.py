"""What this machine's CPU can execute, as the CPU and OS report it, never inferred from a name.

A CPU name says which instructions the model has, not which ones this machine lets a process
use: a hypervisor can hide AVX-512 from a Zen 4 guest while LLVM still calls it `znver4`,
and code built for that name dies with SIGILL on its first call. Linux publishes what
CPUID and XCR0 allow in /proc/cpuinfo ("flags" on x86, "Features" on ARM); that is the
ground truth here. The LLVM names of the instruction-set features are mapped to those flags
so a target's features can be checked against the machine.

`DLC_HOST_CPU` (an LLVM CPU name) and `DLC_HOST_FEATURES` (comma-separated /proc/cpuinfo
flags) replace what is detected: for tests, and for describing another machine.
"""

from __future__ import annotations

import logging
import os
import platform
import re
from functools import lru_cache

log = logging.getLogger(__name__)

ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "i486": "i386",
                "i586": "i386", "i686": "i386", "x86": "i386"}

# LLVM feature -> /proc/cpuinfo flag, for every feature that adds instructions (a missing
# one can fault). LLVM's tuning-only features ("macrofusion", "fast-lzcnt") are not here:
# they change scheduling, not which instructions may run.
_X86 = {
    "sse": "sse", "sse2": "sse2", "sse3": "pni", "ssse3": "ssse3", "sse4.1": "sse4_1",
    "sse4.2": "sse4_2", "sse4a": "sse4a", "avx": "avx", "avx2": "avx2", "fma": "fma",
    "fma4": "fma4", "f16c": "f16c", "xop": "xop",
    "avx512f": "avx512f", "avx512cd": "avx512cd", "avx512bw": "avx512bw",
    "avx512dq": "avx512dq", "avx512vl": "avx512vl", "avx512ifma": "avx512ifma",
    "avx512vbmi": "avx512vbmi", "avx512vbmi2": "avx512_vbmi2", "avx512vnni": "avx512_vnni",
    "avx512bitalg": "avx512_bitalg", "avx512vpopcntdq": "avx512_vpopcntdq",
    "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16",
    "avx512vp2intersect": "avx512_vp2intersect", "avxvnni": "avx_vnni", "avxifma": "avx_ifma",
    "avxvnniint8": "avx_vnni_int8", "avxvnniint16": "avx_vnni_int16",
    "avxneconvert": "avx_ne_convert", "amx-tile": "amx_tile", "amx-int8": "amx_int8",
    "amx-bf16": "amx_bf16", "amx-fp16": "amx_fp16", "gfni": "gfni", "vaes": "vaes",
    "vpclmulqdq": "vpclmulqdq", "aes": "aes", "pclmul": "pclmulqdq", "sha": "sha_ni",
    "bmi": "bmi1", "bmi2": "bmi2", "adx": "adx", "movbe": "movbe", "popcnt": "popcnt",
    "lzcnt": "abm",
}
_AARCH64 = {
    "neon": "asimd", "fp-armv8": "fp", "dotprod": "asimddp", "fullfp16": "asimdhp",
    "i8mm": "i8mm", "bf16": "bf16", "sve": "sve", "sve2": "sve2", "rdm": "asimdrdm",
    "lse": "atomics", "crc": "crc32", "aes": "aes", "sha2": "sha2",
}
_ARMV7 = {"neon": "neon", "vfp3": "vfpv3", "vfp4": "vfpv4", "fp16": "half"}
FEATURE_FLAGS = {"x86_64": _X86, "i386": _X86, "aarch64": _AARCH64, "armv7": _ARMV7}


def normalize_arch(name: str) -> str:
    name = ARCH_ALIASES.get(name.lower(), name.lower())
    match = re.match(r"(?:arm|thumb)v(\d+)", name)
    return f"armv{match.group(1)}" if match else name


def host_arch() -> str:
    return normalize_arch(platform.machine())


def host_cpu_name() -> str:
    """LLVM's name for this CPU (its model, which says nothing of what is enabled)."""
    override = os.environ.get("DLC_HOST_CPU", "").strip()
    if override:
        return override
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def host_flags() -> frozenset[str] | None:
    """The instruction-set flags this machine reports, or None where it reports none."""
    override = os.environ.get("DLC_HOST_FEATURES")
    if override is not None:
        return frozenset(f.strip().lower() for f in override.split(",") if f.strip())
    return _proc_cpuinfo_flags()


@lru_cache(maxsize=1)
def _proc_cpuinfo_flags() -> frozenset[str] | None:
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        log.warning("cannot read /proc/cpuinfo: trusting LLVM's CPU name for this machine's features")
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features"):  # the first CPU; all are alike
            return frozenset(value.split())
    return None


def isa_features(arch: str, llvm_features) -> list[str]:
    """The features among `llvm_features` that add instructions on `arch` (sorted)."""
    table = FEATURE_FLAGS.get(normalize_arch(arch), {})
    return sorted({str(f) for f in llvm_features} & table.keys())


# The vector instruction sets that decide how dlc and MetaSchedule schedule a kernel (the
# vector width and whether it has fused multiply-add), widest first. Two CPUs at one level
# run each other's tuned schedules well; other features (bf16, vnni, sha...) only decide
# whether a record using their intrinsics replays, which loading a record checks anyway.
_VECTOR_LEVELS = {
    "x86_64": (("avx512", {"avx512f", "avx512bw", "avx512dq", "avx512vl"}), ("avx2", {"avx2", "fma"}),
               ("avx", {"avx"}), ("sse", set())),
    "aarch64": (("sve", {"sve"}), ("neon", {"neon"}), ("scalar", set())),
    "armv7": (("neon", {"neon"}), ("scalar", set())),
}
_VECTOR_LEVELS["i386"] = _VECTOR_LEVELS["x86_64"]


def vector_level(arch: str, llvm_features) -> str:
    """The widest vector instruction set among `llvm_features` on `arch` ("avx512", "avx2",
    "neon"...): tuned schedules carry over between CPUs of one arch and level."""
    have = {str(f) for f in llvm_features}
    for level, needs in _VECTOR_LEVELS.get(normalize_arch(arch), ()):
        if needs <= have:
            return level
    return "scalar"


def missing_on_host(arch: str, llvm_features) -> list[str]:
    """Which of `llvm_features` this machine cannot execute (all of them on another arch)."""
    arch = normalize_arch(arch)
    needed = isa_features(arch, llvm_features)
    if arch != host_arch():
        return needed
    flags = host_flags()
    if flags is None:
        from tvm.target import Target, codegen

        host = Target({"kind": "llvm", "mcpu": host_cpu_name()})
        flags_llvm = {str(f) for f in codegen.llvm_get_cpu_features(host)}
        return [f for f in needed if f not in flags_llvm]
    table = FEATURE_FLAGS[arch]
    return [f for f in needed if table[f] not in flags]


def unrunnable_reason(arch: str, llvm_features) -> str | None:
    """Why code for `arch` using `llvm_features` cannot run here, or None when it can."""
    arch, here = normalize_arch(arch), host_arch()
    if arch != here:
        return f"it is {arch} code and this machine is {here}"
    missing = missing_on_host(arch, llvm_features)
    return f"this CPU lacks {', '.join(missing)}" if missing else None


def host_config(cores: int) -> dict:
    """The TVM target of this machine: LLVM's CPU name, minus every feature that name implies
    but this machine does not report (so LLVM never emits an instruction it cannot run)."""
    from tvm.target import Target, codegen

    cpu = host_cpu_name()
    config: dict = {"kind": "llvm", "mcpu": cpu}
    implied = codegen.llvm_get_cpu_features(Target(dict(config)))
    missing = missing_on_host(host_arch(), implied)
    if missing:
        config["mattr"] = [f"-{f}" for f in missing]
    config["num-cores"] = cores
    return config
