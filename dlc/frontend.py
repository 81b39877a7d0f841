"""Load an ONNX model, check it, fix its input shapes, fold shape arithmetic, import to Relax.

Why fold before import: many exported models compute Reshape targets and Range limits at
run time from Shape -> Gather -> Cast/Concat chains. TVM's importer keeps those as run-time
values even when every input dimension is fixed, so tensors downstream lose their static
shape (Reshape then fails to import; YOLOv8's anchor Sub cannot be legalised). Once input
dims are fixed those chains are constants; onnxruntime's BASIC-level offline optimisation
folds them in well under a second, keeps every name, and emits only standard ONNX ops.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from dlc.errors import InputError, ModelImportError

if TYPE_CHECKING:
    import onnx
    import tvm

log = logging.getLogger(__name__)

STANDARD_DOMAINS = ("", "ai.onnx")
ORT_MAX_IR_VERSION = 10  # the newest ONNX IR version onnxruntime 1.31 loads every model of


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # a str is a symbolic (dynamic) dimension
    dtype: str

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(data["name"], tuple(data["shape"]), data["dtype"])


@dataclass(frozen=True)
class ModelInfo:
    """What `dlc inspect` shows: the model as written, before any shape is fixed."""

    path: Path
    sha256: str
    ir_version: int
    opset: int
    producer: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    op_counts: dict[str, int]
    unsupported_ops: dict[str, int]
    num_parameters: int


@dataclass(frozen=True)
class LoadedModel:
    """A checked ONNX model with every input dimension fixed and shape arithmetic folded."""

    path: Path
    sha256: str
    model: onnx.ModelProto
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    opset: int
    nodes_before_folding: int
    nodes_after_folding: int


@dataclass(frozen=True)
class ImportedModel:
    """The Relax module of a loaded model, with static input and output specs."""

    source: LoadedModel
    mod: tvm.IRModule
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # "name (OpType)" of each node of the folded model; main's bindings are named `onnx<index>`
    # (dlc.nodemap), so kernels can name the nodes they came from.
    node_labels: tuple[str, ...] = ()


# ---------------------------------------------------------------- shapes from the command line


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse `NAME:1x3x320x320` or tvmc's `NAME:[1,3,320,320]`; the name may itself hold ':'."""
    hint = "write NAME:1x3x320x320 or NAME:[1,3,320,320]"
    name, sep, dims = text.rpartition(":")
    if not sep or not name:
        raise InputError(f"bad --input-shape {text!r}: no input name", hint=hint)
    dims = dims.strip()
    if dims.startswith("[") and dims.endswith("]"):
        parts = [p.strip() for p in dims[1:-1].split(",")] if dims[1:-1].strip() else []
    else:
        parts = dims.split("x") if dims else []
    if not parts or not all(re.fullmatch(r"\d+", p) for p in parts):
        raise InputError(
            f"bad --input-shape {text!r}: dimensions must be whole numbers (0 for an empty axis)",
            hint=hint,
        )
    return name, tuple(int(p) for p in parts)


# ---------------------------------------------------------------- loading and checking


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_onnx(path: Path) -> onnx.ModelProto:
    import onnx

    if not path.exists():
        raise InputError(f"model file '{path}' not found", hint="check the path")
    if path.is_dir():
        raise InputError(f"'{path}' is a directory, not an ONNX file", hint="pass the .onnx file")
    try:
        model = onnx.load(str(path))
    except Exception as err:  # protobuf raises DecodeError, onnx raises for external data
        raise ModelImportError(
            f"'{path}' is not a readable ONNX model ({type(err).__name__}: {err})",
            hint="the file may be truncated or not ONNX; re-export or re-download it",
        ) from err
    if not model.graph.node and not model.graph.output:
        # protobuf parses many non-ONNX byte strings into an empty message without complaint
        raise ModelImportError(
            f"'{path}' is not an ONNX model (no graph in it)",
            hint="the file may be truncated or not ONNX; re-export or re-download it",
        )
    opset, newest = _opset(model), onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ModelImportError(
            f"'{path}' uses ONNX opset {opset}; the newest this dlc knows is {newest} (onnx {onnx.__version__})",
            hint=f"re-export the model with opset {newest} or lower",
        )
    try:
        onnx.checker.check_model(model)
    except Exception as err:
        raise ModelImportError(
            f"'{path}' fails the ONNX checker: {str(err).strip().splitlines()[0]}",
            hint="the file may be truncated or hand-edited; re-export it",
        ) from err
    return model


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS), 1)


def _value_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    import onnx

    tensor_type = value.type.tensor_type
    dims: list[int | str] = []
    for axis, dim in enumerate(tensor_type.shape.dim):
        if dim.HasField("dim_value") and dim.dim_value >= 0:  # 0 is an empty, static axis
            dims.append(dim.dim_value)
        else:
            dims.append(dim.dim_param or f"?{axis}")
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    except Exception:
        dtype = f"onnx-type-{tensor_type.elem_type}"
    return TensorSpec(value.name, tuple(dims), dtype)


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _all_nodes(graph: onnx.GraphProto):
    """Every node, including those inside If/Loop/Scan bodies."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g.node:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def _unsupported_ops(model: onnx.ModelProto) -> dict[str, list[str]]:
    """op type -> names of the nodes with no converter (TVM's importer plus dlc.onnx_ops)."""
    from dlc.onnx_ops import convert_map

    supported = set(convert_map()) | {"If", "Constant"}
    found: dict[str, list[str]] = {}
    for node in _all_nodes(model.graph):
        custom_domain = node.domain not in STANDARD_DOMAINS
        if custom_domain or node.op_type not in supported:
            op = f"{node.domain}.{node.op_type}" if custom_domain else node.op_type
            found.setdefault(op, []).append(node.name or f"<unnamed {node.op_type}>")
    return found


def inspect_model(path: Path | str) -> ModelInfo:
    path = Path(path)
    model = read_onnx(path)
    return ModelInfo(
        path=path,
        sha256=file_sha256(path),
        ir_version=model.ir_version,
        opset=_opset(model),
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        inputs=tuple(_value_spec(v) for v in _graph_inputs(model)),
        outputs=tuple(_value_spec(v) for v in model.graph.output),
        op_counts=dict(Counter(n.op_type for n in _all_nodes(model.graph)).most_common()),
        unsupported_ops={op: len(nodes) for op, nodes in _unsupported_ops(model).items()},
        num_parameters=sum(_numel(init.dims) for init in model.graph.initializer),
    )


def _numel(dims) -> int:
    count = 1
    for d in dims:
        count *= d
    return count


def _resolve_input_shapes(
    model: onnx.ModelProto, path: Path, given: Mapping[str, tuple[int, ...]]
) -> tuple[TensorSpec, ...]:
    """Combine the model's declared input dims with --input-shape; every dim must end up fixed."""
    declared = [_value_spec(v) for v in _graph_inputs(model)]
    names = [spec.name for spec in declared]
    for name in given:
        if name not in names:
            raise InputError(
                f"--input-shape names {name!r}, which is not an input of '{path.name}'",
                hint=f"the model's inputs are: {', '.join(names)}",
            )
    resolved = []
    for spec in declared:
        shape = given.get(spec.name)
        if shape is None:
            dynamic = [(axis, d) for axis, d in enumerate(spec.shape) if isinstance(d, str)]
            if dynamic:
                axis, label = dynamic[0]
                example = "x".join(
                    str(d) if isinstance(d, int) else ("1" if a == 0 else f"<{d}>")
                    for a, d in enumerate(spec.shape)
                )
                raise InputError(
                    f"input '{spec.name}' has a dynamic dimension at axis {axis} ('{label}')",
                    hint=f"pass --input-shape {spec.name}:{example}",
                )
            shape = spec.shape
        elif len(shape) != len(spec.shape):
            raise InputError(
                f"--input-shape gives '{spec.name}' {len(shape)} dimensions; the model declares "
                f"{len(spec.shape)} ({_render_shape(spec.shape)})",
                hint=f"pass --input-shape {spec.name}:" + "x".join("N" for _ in spec.shape),
            )
        else:
            for axis, (want, declared_dim) in enumerate(zip(shape, spec.shape)):
                if isinstance(declared_dim, int) and declared_dim != want:
                    raise InputError(
                        f"--input-shape sets axis {axis} of '{spec.name}' to {want}, but the "
                        f"model fixes it at {declared_dim} ({_render_shape(spec.shape)})",
                        hint="only dynamic dimensions can be set; keep the fixed ones",
                    )
        resolved.append(TensorSpec(spec.name, tuple(shape), spec.dtype))
    _refuse_oversized(resolved)
    return tuple(resolved)


# An axis TVM indexes with int32 must stay below 2**31; and inputs that alone fill a large
# part of memory leave none for the activations (often 10x more): refuse before a build.
_MAX_DIM = 2**31 - 1
_MAX_INPUT_MEMORY_SHARE = 1 / 8


def _refuse_oversized(inputs: list[TensorSpec]) -> None:
    import numpy as np
    import psutil

    memory = psutil.virtual_memory().total
    total = 0
    for spec in inputs:
        if any(d > _MAX_DIM for d in spec.shape):
            raise InputError(
                f"input '{spec.name}' has a dimension over 2^31-1 ({_render_shape(spec.shape)})",
                hint=f"pass a smaller --input-shape {spec.name}:...",
            )
        itemsize = np.dtype(spec.dtype).itemsize if not spec.dtype.startswith("onnx-type") else 1
        size = _numel(spec.shape) * itemsize
        total += size
        if total > memory * _MAX_INPUT_MEMORY_SHARE:
            raise InputError(
                f"input '{spec.name}' ({_render_shape(spec.shape)} {spec.dtype}) would take "
                f"{_gib(size)}; the inputs may use at most {_gib(memory * _MAX_INPUT_MEMORY_SHARE)} "
                f"of this machine's {_gib(memory)}",
                hint=f"pass a smaller --input-shape {spec.name}:...",
            )


def _gib(size: float) -> str:
    return f"{size / 2**30:.1f} GiB"


def _render_shape(shape: tuple[int | str, ...]) -> str:
    return "x".join(str(d) for d in shape)


def fix_input_dims(model: onnx.ModelProto, inputs: tuple[TensorSpec, ...]) -> None:
    by_name = {spec.name: spec for spec in inputs}
    for value in model.graph.input:
        spec = by_name.get(value.name)
        if spec is None:
            continue
        for dim, size in zip(value.type.tensor_type.shape.dim, spec.shape):
            dim.Clear()
            dim.dim_value = size
    # Shapes recorded for intermediate values may hold the old symbols; let inference redo them.
    del model.graph.value_info[:]


def _fold_with_onnxruntime(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """onnxruntime's BASIC offline optimisation; None when onnxruntime cannot load the model."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="dlc-fold-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "folded.onnx"
        if model.ir_version > ORT_MAX_IR_VERSION:  # onnx 1.23 writes IR 14, which ORT 1.31 refuses
            model = onnx.ModelProto.FromString(model.SerializeToString())
            model.ir_version = ORT_MAX_IR_VERSION
        onnx.save(model, str(src))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(dst)
        options.log_severity_level = 3
        try:
            ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
        except Exception as err:
            log.warning("onnxruntime could not fold the model: %s", err)
            return None
        return onnx.load(str(dst))


def load_model(
    path: Path | str, *, input_shapes: Mapping[str, tuple[int, ...]] | None = None, fold: bool = True
) -> LoadedModel:
    """Read and check `path`, fix every input dim, and fold the graph's constant shape arithmetic."""
    import onnx

    path = Path(path)
    model = read_onnx(path)
    inputs = _resolve_input_shapes(model, path, input_shapes or {})
    output_names = tuple(v.name for v in model.graph.output)
    nodes_before = len(model.graph.node)

    fix_input_dims(model, inputs)
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as err:  # inference is an aid; the importer infers again on its own
        log.warning("ONNX shape inference failed, continuing without it: %s", err)
    if fold:
        folded = _fold_with_onnxruntime(model)
        if folded is not None:
            if tuple(v.name for v in folded.graph.output) != output_names:
                raise ModelImportError(
                    "onnxruntime's folding renamed the model's outputs",
                    hint="retry with --no-fold and report this model",
                )
            model = folded
    _raise_on_unsupported_ops(model, path)
    return LoadedModel(
        path=path,
        sha256=file_sha256(path),
        model=model,
        inputs=inputs,
        output_names=output_names,
        opset=_opset(model),
        nodes_before_folding=nodes_before,
        nodes_after_folding=len(model.graph.node),
    )


def _raise_on_unsupported_ops(model: onnx.ModelProto, path: Path) -> None:
    unsupported = _unsupported_ops(model)
    if not unsupported:
        return
    ranked = sorted(unsupported.items(), key=lambda item: (-len(item[1]), item[0]))
    listing = "; ".join(
        f"{op} x{len(nodes)} (first: {', '.join(nodes[:3])})" for op, nodes in ranked
    )
    raise ModelImportError(
        f"'{path.name}' uses {len(unsupported)} operator type(s) that neither TVM's ONNX importer "
        f"nor dlc's converters support: {listing}",
        hint="re-export the model without these operators (e.g. a lower opset or a decomposed "
        "form), or replace them with supported ones",
    )


# ---------------------------------------------------------------- Relax import


def import_model(loaded: LoadedModel) -> ImportedModel:
    """Convert to a Relax IRModule with weights bound as constants."""
    from dlc import onnx_ops
    from dlc.dtypes import NARROW_TYPES
    from dlc.nodemap import import_with_node_names, node_label
    from dlc.onnx_ops.narrow_graph import lower_narrow_types
    from dlc.onnx_ops.shape_inputs import specialise_shape_inputs

    # bfloat16/float8/int4... tensors become integer storage; the specs keep the ONNX dtype,
    # which the manifest records and dlc.runtime converts at the boundary.
    lowered = lower_narrow_types(specialise_shape_inputs(loaded.model, loaded.opset))
    shapes = {spec.name: list(spec.shape) for spec in loaded.inputs}
    dtypes = {spec.name: NARROW_TYPES[spec.dtype].storage if spec.dtype in NARROW_TYPES else spec.dtype
              for spec in loaded.inputs}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the importer re-runs the checker and warns loudly
            with onnx_ops.registered():
                mod = import_with_node_names(lowered.model, shapes, dtypes)
    except Exception as err:
        first_line = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise ModelImportError(
            f"TVM could not import '{loaded.path.name}': {first_line}",
            hint="run with --debug for the importer's traceback; `dlc inspect` lists the ops",
        ) from err
    outputs = tuple(
        TensorSpec(spec.name, spec.shape, lowered.narrow[spec.name]) if spec.name in lowered.narrow else spec
        for spec in _relax_output_specs(mod, loaded.output_names)
    )
    labels = tuple(node_label(node) for node in lowered.model.graph.node)
    return ImportedModel(source=loaded, mod=mod, inputs=loaded.inputs, outputs=outputs, node_labels=labels)


def _relax_output_specs(mod: tvm.IRModule, names: tuple[str, ...]) -> tuple[TensorSpec, ...]:
    from tvm import relax
    from tvm.tirx import IntImm

    ret = mod["main"].ret_ty
    fields = ret.fields if isinstance(ret, relax.TupleType) else [ret]
    specs = []
    for name, info in zip(names, fields):
        if not isinstance(info, relax.TensorType) or info.shape is None:
            specs.append(TensorSpec(name, (), "unknown"))
            continue
        dims = tuple(int(d) if isinstance(d, IntImm) else str(d) for d in info.shape.values)
        specs.append(TensorSpec(name, dims, str(info.dtype)))
    return tuple(specs)

