import os
import subprocess
import sys


def test_tvm_uses_every_cpu_it_may_run_on():
    """TVM alone sizes its pool to half the x86 CPUs; dlc makes it match ONNX Runtime's."""
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    probe = "import os, dlc, tvm; print(tvm.runtime.num_threads(), len(os.sched_getaffinity(0)))"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    pool, cpus = out.stdout.split()
    assert pool == cpus


def test_a_chosen_thread_count_is_kept():
    env = {**os.environ, "TVM_NUM_THREADS": "1"}
    probe = "import dlc, tvm; print(tvm.runtime.num_threads())"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
