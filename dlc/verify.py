"""Check a compiled library against ONNX Runtime on the same inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from dlc.errors import DlcError, InputError
from dlc.frontend import TensorSpec, file_sha256, read_onnx

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from dlc.boards import BoardSpec

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


# Operators whose second input indexes their first.
_INDEXING = {"Gather", "GatherElements", "ScatterElements", "GatherND", "ScatterND"}


def _index_bounds(model: onnx.ModelProto | None, specs: tuple[TensorSpec, ...]) -> dict[str, int]:
    """Exclusive upper bounds for integer inputs used as indices (token ids, ...): random
    values beyond them are refused by the library's index checks (and by ONNX Runtime)."""
    if model is None:
        return {}
    inputs = {spec.name for spec in specs}
    uses = [n for n in model.graph.node if n.op_type in _INDEXING and len(n.input) > 1 and n.input[1] in inputs]
    if not uses:
        return {}
    shapes = _static_shapes(model, specs)
    bounds: dict[str, int] = {}
    for node in uses:
        data, index = shapes.get(node.input[0]), node.input[1]
        if not data:
            continue
        attrs = {a.name: a.i for a in node.attribute}
        if node.op_type.endswith("ND"):  # the last index axis addresses data axes batch_dims..
            first = attrs.get("batch_dims", 0)
            depth = (shapes.get(index) or [len(data) - first])[-1]
            bound = min(data[first:first + depth], default=1)
        else:
            bound = data[attrs.get("axis", 0) % len(data)]
        bounds[index] = min(bounds.get(index, bound), bound)
    return bounds


def _static_shapes(model: onnx.ModelProto, specs: tuple[TensorSpec, ...]) -> dict[str, list[int]]:
    """Every tensor's shape that ONNX shape inference can fix once the inputs are fixed."""
    import onnx

    from dlc.frontend import fix_input_dims

    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    fix_input_dims(fixed, specs)
    try:
        fixed = onnx.shape_inference.infer_shapes(fixed)
    except Exception:  # an aid only: unknown shapes keep the default ranges
        pass
    for value in (*fixed.graph.input, *fixed.graph.value_info, *fixed.graph.output):
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes.setdefault(value.name, [d.dim_value for d in dims])
    return shapes


def make_inputs(
    specs: tuple[TensorSpec, ...],
    *,
    seed: int = 0,
    model: onnx.ModelProto | None = None,
    given: Mapping[str, np.ndarray | float] | None = None,
) -> dict[str, np.ndarray]:
    """The inputs `given` (a number fills its whole tensor), and seeded random values, in
    ranges that fit each dtype and use, for the rest."""
    import numpy as np

    given = dict(given or {})
    names = [spec.name for spec in specs]
    unknown = [name for name in given if name not in names]
    if unknown:
        raise InputError(
            f"no input named {unknown[0]!r}{' (and ' + str(len(unknown) - 1) + ' more)' if len(unknown) > 1 else ''}",
            hint="the inputs are: " + ", ".join(f"{s.name} {list(s.shape)} {s.dtype}" for s in specs),
        )
    rng = np.random.default_rng(seed)
    bounds = _index_bounds(model, specs)
    inputs = {}
    for spec in specs:
        dtype = np.dtype(spec.dtype)
        if spec.name in given:
            value = given[spec.name]
            if np.ndim(value) != 0:
                array = np.asarray(value)  # check_inputs compares its shape and dtype
            elif np.issubdtype(dtype, np.integer) and not float(value).is_integer():
                raise InputError(f"input {spec.name!r} is {dtype}, so {value!r} does not fit it",
                                 hint=f"give {spec.name!r} a whole number")
            else:
                array = np.full(spec.shape, value, dtype)
        elif dtype == np.bool_:
            array = rng.random(spec.shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            # Masks and flags are {0, 1}; indices stay inside the table they index.
            high = bounds.get(spec.name, 2 if "mask" in spec.name.lower() else 10)
            array = np.asarray(rng.integers(0, max(high, 1), size=spec.shape), dtype=dtype)
        else:
            array = np.asarray(rng.uniform(-1.0, 1.0, size=spec.shape), dtype=dtype)
        inputs[spec.name] = array
    return inputs


def parse_input_value(text: str) -> tuple[str, float]:
    """`NAME=VALUE` (--input-value): a number that fills the whole input, e.g. `sr=16000`."""
    name, sep, value = text.rpartition("=")
    try:
        number = float(value)
    except ValueError:
        number = None
    if not sep or not name or number is None:
        raise InputError(f"bad --input-value {text!r}", hint="write NAME=NUMBER, e.g. --input-value sr=16000")
    return name, number


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


def check_built_from(manifest, model_path: Path, *, doing: str) -> None:
    """Refuse a library compiled from another model than `model_path` (the manifest keeps its sha256)."""
    built_from = manifest.data.get("model", {})
    if built_from.get("sha256") not in (None, file_sha256(model_path)):
        raise InputError(
            f"'{manifest.library.name}' was compiled from '{built_from.get('file')}', not from "
            f"'{model_path.name}' (their contents differ)",
            hint=f"{doing} a library against the ONNX file it was compiled from",
        )


def verify(
    model_path: Path | str,
    library: Path | str,
    *,
    inputs: Mapping[str, np.ndarray] | None = None,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
    board: BoardSpec | None = None,
) -> VerifyReport:
    """Run `library` and ONNX Runtime on the same inputs and compare every output.

    `inputs` may name only some inputs (arrays, or numbers that fill the tensor); the rest
    are seeded random. With `board`, the library runs there (through RPC), ORT here."""
    from dlc.runtime import LoadedLibrary, read_manifest

    model_path = Path(model_path)
    model = read_onnx(model_path)
    manifest = read_manifest(library)
    check_built_from(manifest, model_path, doing="verify")
    if board is not None:
        from dlc.boards import RemoteLibrary

        loaded = RemoteLibrary(manifest, board)
    else:
        loaded = LoadedLibrary(manifest)
    given = dict(inputs or {})
    inputs = make_inputs(loaded.manifest.inputs, seed=seed, model=model, given=given)
    used_seed = None if set(given) >= set(inputs) else seed
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
