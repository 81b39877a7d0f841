"""A regular (non-editable) install: the wheel carries every subpackage and the presets."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.conftest import REPO


def _run(*args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(list(map(str, args)), capture_output=True, text=True, cwd=cwd, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_wheel_installs_and_compiles_outside_the_repo(tiny, tmp_path):
    # Build from a copy: setuptools leaves build/ and *.egg-info beside the sources.
    source = tmp_path / "src"
    shutil.copytree(REPO / "dlc", source / "dlc", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)

    # A fresh venv holding only dlc, installed the regular way (pip builds the wheel in an
    # isolated environment); its dependencies come from this environment's site-packages
    # through a .pth line (that directory's own .pth files, among them the editable install
    # of the checkout, are not processed from there).
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", source, cwd=tmp_path)
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(python, "-c", "import dlc, dlc.schedules; print(dlc.__file__)", cwd=elsewhere).stdout
    assert where.startswith(str(site)), where
    dlc = venv / "bin" / "dlc"
    listing = _run(dlc, "targets", cwd=elsewhere).stdout
    for name in ("skylake", "znver3", "cortex-a72", "host"):
        assert f" {name} " in listing, listing
    model = shutil.copy(tiny("conv_relu_pool"), elsewhere / "model.onnx")
    built = _run(dlc, "compile", model, "-o", elsewhere / "model.so", cwd=elsewhere)
    assert (elsewhere / "model.so").is_file() and "verified against ONNX Runtime" in built.stderr + built.stdout
