"""Check a compiled library against ONNX Runtime on the same inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from dlc.errors import DlcError, InputError
from dlc.frontend import TensorSpec, read_onnx

if TYPE_CHECKING:
    import numpy as np
    import onnx

DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-3


@dataclass(frozen=True)
class OutputComparison:
    name: str
    shape: tuple[int, ...]
    max_abs_error: float
    max_rel_error: float  # over elements whose reference magnitude exceeds atol
    mismatches: int  # elements outside atol + rtol * |reference|
    size: int

    @property
    def passed(self) -> bool:
        return self.mismatches == 0


@dataclass(frozen=True)
class VerifyReport:
    outputs: tuple[OutputComparison, ...]
    rtol: float
    atol: float
    seed: int | None  # None when the inputs came from a file

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)


def _index_bounds(model: onnx.ModelProto | None) -> dict[str, int]:
    """Exclusive upper bounds for integer inputs used as Gather indices (token ids, ...)."""
    if model is None:
        return {}
    sizes = {init.name: list(init.dims) for init in model.graph.initializer}
    bounds: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[0] in sizes:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            dims = sizes[node.input[0]]
            bound = dims[axis] if dims else 1
            bounds[node.input[1]] = min(bounds.get(node.input[1], bound), bound)
    return bounds


def make_inputs(
    specs: tuple[TensorSpec, ...], *, seed: int = 0, model: onnx.ModelProto | None = None
) -> dict[str, np.ndarray]:
    """Seeded random inputs in ranges that fit each dtype and use."""
    import numpy as np

    rng = np.random.default_rng(seed)
    bounds = _index_bounds(model)
    inputs = {}
    for spec in specs:
        dtype = np.dtype(spec.dtype)
        if dtype == np.bool_:
            array = rng.random(spec.shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            # Masks and flags are {0, 1}; indices stay inside the table they index.
            high = bounds.get(spec.name, 2 if "mask" in spec.name.lower() else 10)
            array = rng.integers(0, max(high, 1), size=spec.shape).astype(dtype)
        else:
            array = rng.uniform(-1.0, 1.0, size=spec.shape).astype(dtype)
        inputs[spec.name] = array
    return inputs


def compare(
    name: str, actual: np.ndarray, expected: np.ndarray, *, rtol: float, atol: float
) -> OutputComparison:
    import numpy as np

    if actual.shape != expected.shape:
        raise DlcError(
            f"output '{name}' has shape {list(actual.shape)}; ONNX Runtime gives {list(expected.shape)}",
            hint="this is a compiler bug; please report it with the model",
        )
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    diff = np.abs(a - e)
    # NaN in the same place in both is agreement, anywhere else a mismatch.
    both_nan = np.isnan(a) & np.isnan(e)
    diff = np.where(both_nan, 0.0, diff)
    diff = np.where(np.isnan(diff), np.inf, diff)
    large = np.abs(e) > atol
    rel = diff[large] / np.abs(e[large]) if large.any() else np.zeros(1)
    bad = diff > atol + rtol * np.abs(np.nan_to_num(e))
    return OutputComparison(
        name=name,
        shape=tuple(actual.shape),
        max_abs_error=float(diff.max()) if diff.size else 0.0,
        max_rel_error=float(rel.max()) if rel.size else 0.0,
        mismatches=int(bad.sum()),
        size=int(diff.size),
    )


def run_onnxruntime(model_path: Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, dict(inputs))))
    except Exception as err:
        raise DlcError(
            f"ONNX Runtime could not run '{model_path.name}': {str(err).strip().splitlines()[0]}",
            hint="verification needs ONNX Runtime to run the model; skip it with --no-verify",
        ) from err


def verify(
    model_path: Path | str,
    library: Path | str,
    *,
    inputs: Mapping[str, np.ndarray] | None = None,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
) -> VerifyReport:
    """Run `library` and ONNX Runtime on the same inputs and compare every output."""
    from dlc.runtime import load_library

    model_path = Path(model_path)
    model = read_onnx(model_path)
    loaded = load_library(library)
    if inputs is None:
        inputs = make_inputs(loaded.manifest.inputs, seed=seed, model=model)
        used_seed: int | None = seed
    else:
        used_seed = None
    loaded.check_inputs(inputs)
    actual = loaded.run(inputs)
    expected = run_onnxruntime(model_path, inputs)
    missing = [name for name in actual if name not in expected]
    if missing:
        raise InputError(
            f"'{model_path.name}' has no output(s) {missing} that the library produces",
            hint="verify the library against the ONNX file it was compiled from",
        )
    comparisons = tuple(
        compare(name, actual[name], expected[name], rtol=rtol, atol=atol) for name in actual
    )
    return VerifyReport(comparisons, rtol, atol, used_seed)
