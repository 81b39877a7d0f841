"""Load a library built by dlc and run it, driven by its manifest.

Runs locally; dlc.boards.RemoteLibrary implements the same `run` contract on a board.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from dlc.errors import DlcError, InputError
from dlc.frontend import TensorSpec

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Manifest:
    path: Path
    library: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    data: dict[str, Any]

    @property
    def target_name(self) -> str:
        return self.data["target"]["name"]

    def check_runs_here(self) -> None:
        """Refuse, before loading it, a library this machine cannot execute (a SIGILL otherwise)."""
        from dlc import hostcpu
        from dlc.target import TargetSpec, list_presets

        target = self.data["target"]
        if "isa_features" in target:
            reason = hostcpu.unrunnable_reason(target["arch"], target["isa_features"])
        else:  # a manifest from before dlc recorded the features
            reason = TargetSpec(target["name"], target["config"]).unrunnable_reason()
        if reason is None:
            return
        runnable = [spec.name for spec in list_presets() if spec.name != "host" and spec.runs_on_host()]
        raise InputError(
            f"'{self.library.name}' was built for target '{self.target_name}' and cannot run on "
            f"this machine: {reason}",
            hint="rebuild it with --target host"
            + (f" (or a preset that runs here: {', '.join(runnable)})" if runnable else "")
            + "; `dlc targets` lists what runs here",
        )


def read_manifest(library: Path | str) -> Manifest:
    from dlc.build import manifest_path

    library = Path(library)
    if not library.exists():
        raise InputError(f"library '{library}' not found", hint="build it with `dlc compile`")
    path = manifest_path(library)
    try:
        data = json.loads(path.read_text())
        inputs = tuple(TensorSpec.from_json(d) for d in data["inputs"])
        outputs = tuple(TensorSpec.from_json(d) for d in data["outputs"])
        if not isinstance(data["target"]["name"], str) or not isinstance(data["target"]["config"], dict):
            raise TypeError("'target' needs a name and a config")
    except FileNotFoundError as err:
        raise InputError(
            f"'{library.name}' has no manifest '{path.name}' beside it",
            hint="keep the .json that `dlc compile` writes next to the library",
        ) from err
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(
            f"manifest '{path}' is not a dlc manifest ({type(err).__name__}: {err})",
            hint="rebuild the library with `dlc compile`",
        ) from err
    return Manifest(path, library, inputs, outputs, data)


class LoadedLibrary:
    """A library loaded into a Relax VM on the local CPU."""

    def __init__(self, manifest: Manifest) -> None:
        import tvm
        from tvm import relax

        self.manifest = manifest
        manifest.check_runs_here()
        try:
            module = tvm.runtime.load_module(str(manifest.library.resolve()))
        except Exception as err:
            raise DlcError(
                f"cannot load '{manifest.library}': {_last_line(err)}",
                hint="was it built for this machine? see `target` in its manifest",
            ) from err
        self._device = tvm.cpu()
        self._vm = relax.VirtualMachine(module, self._device)

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return check_inputs(self.manifest, inputs)

    def bind(self, inputs: Mapping[str, np.ndarray]):
        """A zero-argument call of the model on `inputs`, copied to the device once (for timing)."""
        import tvm

        arrays = [tvm.runtime.tensor(a, self._device) for a in self.check_inputs(inputs)]
        main = self._vm["main"]

        def call():
            try:
                return main(*arrays)
            except IndexError as err:  # an index check compiled into the library (dlc.bounds)
                raise InputError(
                    f"'{self.manifest.library.name}' refused the inputs: {str(err).strip()}",
                    hint="fix the input values (e.g. token ids must be below the vocabulary size)",
                ) from err
            except Exception as err:  # e.g. shapes the library checks at its entry
                raise DlcError(
                    f"'{self.manifest.library.name}' failed: {_last_line(err)}",
                    hint="its manifest may not match it (edited, or from another build); "
                    "rebuild both with `dlc compile`",
                ) from err

        return call

    def set_instrument(self, callback) -> None:
        """Call `callback(func, name, before, ret, *args)` around every call the VM makes
        (kernels and builtins); None removes it. Used by dlc.profile."""
        self._vm.set_instrument(callback)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.bind(inputs)()
        # A single-output model returns a Tensor, a multi-output one an Array of them.
        values = [result] if hasattr(result, "numpy") else list(result)
        return {spec.name: output_array(v.numpy(), spec.dtype) for spec, v in zip(self.manifest.outputs, values)}


def check_inputs(manifest: Manifest, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The inputs as the library takes them, in its order; refuses missing, extra, misshapen ones."""
    import numpy as np

    from dlc.dtypes import is_narrow, numpy_dtype, to_storage

    missing = [spec.name for spec in manifest.inputs if spec.name not in inputs]
    extra = sorted(set(inputs) - {spec.name for spec in manifest.inputs})
    if missing or extra:
        raise InputError(
            f"inputs do not match the library: missing {missing}, unexpected {extra}",
            hint="the library takes: "
            + ", ".join(f"{s.name} {list(s.shape)} {s.dtype}" for s in manifest.inputs),
        )
    arrays = []
    for spec in manifest.inputs:
        array = np.asarray(inputs[spec.name])
        if tuple(array.shape) != tuple(spec.shape):
            raise InputError(
                f"input '{spec.name}' has shape {list(array.shape)}; the library was built "
                f"for {list(spec.shape)}",
                hint="recompile with --input-shape for the new shape",
            )
        want = numpy_dtype(spec.dtype)
        if is_narrow(spec.dtype):  # bfloat16, float8, int4...: exactly that type, as ml_dtypes holds it
            if array.dtype.kind == "V" and array.dtype.itemsize == want.itemsize:
                array = array.view(want)  # an .npz keeps ml_dtypes' arrays as raw bytes ("|V2")
            if array.dtype != want:
                raise InputError(
                    f"input '{spec.name}' is {array.dtype}; the library takes {want}",
                    hint=f"convert it with array.astype(ml_dtypes.{want})",
                )
            arrays.append(to_storage(array, spec.dtype))  # the integer storage the library computes on
            continue
        if not np.can_cast(array.dtype, want, casting="same_kind"):  # float64 -> float32 is fine
            raise InputError(
                f"input '{spec.name}' is {array.dtype}; the library takes {want}",
                hint=f"save '{spec.name}' as {want} (e.g. array.astype(numpy.{want}))",
            )
        # order="C", not ascontiguousarray: that turns a scalar (rank 0) into shape [1].
        arrays.append(np.asarray(array, dtype=want, order="C"))
    return arrays


def output_array(array: np.ndarray, dtype: str) -> np.ndarray:
    """An output as its manifest types it: narrow dtypes come back from their integer storage."""
    from dlc.dtypes import from_storage, is_narrow

    return from_storage(array, dtype) if is_narrow(dtype) else array


def _last_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def load_library(library: Path | str) -> LoadedLibrary:
    return LoadedLibrary(read_manifest(library))


def read_npz(path: Path | str) -> dict[str, np.ndarray]:
    import numpy as np

    path = Path(path)
    if not path.exists():
        raise InputError(f"inputs file '{path}' not found", hint="pass an .npz made with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except Exception as err:
        raise InputError(
            f"'{path}' is not a readable .npz file ({err})",
            hint="save inputs with numpy.savez(path, NAME=array, ...)",
        ) from err
