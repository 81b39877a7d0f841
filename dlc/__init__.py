"""dlc: an ONNX-to-CPU compiler driver and autotuner on Apache TVM."""

import os as _os

__version__ = "0.1.0"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's total)."""
    if hasattr(_os, "sched_getaffinity"):
        return len(_os.sched_getaffinity(0))
    return _os.cpu_count() or 1


# TVM's runtime sizes its thread pool once, at first use, to half the logical CPUs on x86
# (it assumes hyper-threading): 1 thread on a 2-vCPU machine, where ONNX Runtime uses 2.
# Give it every CPU this process may use unless the user chose; tuning's runner process
# inherits the same setting, so kernels are tuned for the thread count they run with.
_os.environ.setdefault("TVM_NUM_THREADS", str(usable_cpus()))
