"""Load a library built by dlc and run it, driven by its manifest.

Runs locally today; a remote (RPC) session will implement the same `run` contract.
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
        try:
            module = tvm.runtime.load_module(str(manifest.library.resolve()))
        except Exception as err:
            raise DlcError(
                f"cannot load '{manifest.library}': {str(err).strip().splitlines()[-1]}",
                hint="was it built for this machine? see `target` in its manifest",
            ) from err
        self._device = tvm.cpu()
        self._vm = relax.VirtualMachine(module, self._device)

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        import numpy as np

        missing = [spec.name for spec in self.manifest.inputs if spec.name not in inputs]
        extra = sorted(set(inputs) - {spec.name for spec in self.manifest.inputs})
        if missing or extra:
            raise InputError(
                f"inputs do not match the library: missing {missing}, unexpected {extra}",
                hint="the library takes: "
                + ", ".join(f"{s.name} {list(s.shape)} {s.dtype}" for s in self.manifest.inputs),
            )
        arrays = []
        for spec in self.manifest.inputs:
            array = np.asarray(inputs[spec.name])
            if tuple(array.shape) != tuple(spec.shape):
                raise InputError(
                    f"input '{spec.name}' has shape {list(array.shape)}; the library was built "
                    f"for {list(spec.shape)}",
                    hint="recompile with --input-shape for the new shape",
                )
            arrays.append(np.ascontiguousarray(array, dtype=spec.dtype))
        return arrays

    def bind(self, inputs: Mapping[str, np.ndarray]):
        """A zero-argument call of the model on `inputs`, copied to the device once (for timing)."""
        import tvm

        arrays = [tvm.runtime.tensor(a, self._device) for a in self.check_inputs(inputs)]
        main = self._vm["main"]
        return lambda: main(*arrays)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.bind(inputs)()
        # A single-output model returns a Tensor, a multi-output one an Array of them.
        values = [result] if hasattr(result, "numpy") else list(result)
        return {spec.name: v.numpy() for spec, v in zip(self.manifest.outputs, values)}


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
