"""What the schedules need to know about a CPU, derived from the TVM target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dlc import usable_cpus

if TYPE_CHECKING:
    from dlc.target import TargetSpec


@dataclass(frozen=True)
class CpuParams:
    isa: str  # "avx512", "avx2", "neon", "sse", "scalar": for logs and tests
    lanes: int  # fp32 lanes per vector register
    registers: int  # architectural vector registers
    fma: bool
    cores: int
    l1_bytes: int = 32 * 1024
    l2_bytes: int = 512 * 1024

    @property
    def widest_lanes(self) -> int:
        """fp32 lanes of the widest register: vector operations and padded features use
        whole ones (zmm: 16), while tiles are sized in `lanes` units."""
        return 16 if self.isa == "avx512" else self.lanes

    @property
    def accumulators(self) -> int:
        """Vector accumulators a register-blocked micro-kernel may hold: the rest carry the
        weight vectors and the broadcast input (16 ymm -> 12; 32 zmm/NEON -> 24)."""
        return self.registers * 3 // 4


def cpu_params(target: TargetSpec) -> CpuParams:
    from tvm.target import codegen

    features = {str(f) for f in codegen.llvm_get_cpu_features(target.to_tvm())}
    arch = target.arch
    wide_regs = 32 if arch == "aarch64" else 16
    if "avx512f" in features:
        # Conv tiles in 8-lane units in the 32 registers, vector operations up to a zmm
        # (widest_lanes): all-zmm conv tiles ran PP-OCR cls 4.4x slower on a Zen 5, from the
        # 24- and 40-wide vectors LLVM legalises badly (bench/README.md).
        isa, lanes, wide_regs = "avx512", 8, 32
    elif "avx2" in features or "avx" in features:
        isa, lanes = "avx2", 8
    elif "neon" in features or arch == "aarch64":
        isa, lanes = "neon", 4
    elif "sse2" in features or arch == "x86_64":
        isa, lanes = "sse", 4
    else:
        isa, lanes = "scalar", 4  # LLVM splits the vectors; the tiling still pays off
    fma = "fma" in features or arch == "aarch64" or "vfp4" in features
    cores = target.config.get("num-cores") or (usable_cpus() if target.runs_on_host() else 4)
    return CpuParams(isa=isa, lanes=lanes, registers=wide_regs, fma=fma, cores=cores)
