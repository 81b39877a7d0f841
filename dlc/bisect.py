"""Find the first ONNX node whose output diverges between dlc and ONNX Runtime.

`dlc verify --bisect`: when a library disagrees with ONNX Runtime, say where. The model is
loaded as `dlc compile` loads it (input dims fixed, shape arithmetic folded), then every
node output with a known tensor type becomes a graph output. ONNX Runtime returns all of
them in one run; dlc compiles that exposed graph once and returns them too. Walking the
nodes in topological order, the first node whose output disagrees while all of its inputs
agree is the one whose conversion or kernel is wrong.

Exposing every intermediate keeps each one in memory, so kernels that fused in the real
build may not fuse here; a divergence that only fusion causes shows up as none found.

An int8 (QDQ) model exposes only its QuantizeLinear outputs: an exposed fp32 tensor inside
a DequantizeLinear -> op -> QuantizeLinear group stops ONNX Runtime fusing the group into
its int8 kernel (QLinearConv...), so the reference would no longer be what `verify` runs.
The first quantized tensor that differs is reported with the quantized tensors its group
reads.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from dlc.errors import DlcError
from dlc.verify import DEFAULT_ATOL, DEFAULT_RTOL, OutputComparison, compare, make_inputs

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from dlc.target import TargetSpec

ORT_MAX_IR_VERSION = 10  # onnxruntime 1.31 refuses newer


@dataclass(frozen=True)
class TensorAgreement:
    name: str
    source: str  # "input", "initializer" or the producing node's name
    comparison: OutputComparison | None  # None for graph inputs and initializers (given to both)
    shape_mismatch: str | None = None

    @property
    def agrees(self) -> bool:
        return self.shape_mismatch is None and (self.comparison is None or self.comparison.passed)


@dataclass(frozen=True)
class NodeDivergence:
    index: int  # position in topological order
    name: str
    op_type: str
    output: TensorAgreement  # the first of its outputs that disagrees
    inputs: tuple[TensorAgreement, ...]


@dataclass(frozen=True)
class BisectReport:
    first: NodeDivergence | None  # None: every exposed intermediate agrees
    nodes: int
    tensors_compared: int
    rtol: float
    atol: float


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def is_qdq(model: onnx.ModelProto) -> bool:
    return any(node.op_type == "QuantizeLinear" for node in model.graph.node)


def _exposed(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `model` whose outputs are its own plus every typed node output (of an int8
    model: every QuantizeLinear output)."""
    import onnx

    quantized_only = is_qdq(model)
    inferred = onnx.shape_inference.infer_shapes(model)
    typed = {
        v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)
        if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type
    }
    exposed = onnx.ModelProto()
    exposed.CopyFrom(inferred)
    names = [o.name for o in exposed.graph.output]
    for node in exposed.graph.node:
        if quantized_only and node.op_type != "QuantizeLinear":
            continue
        for out in node.output:
            if out and out in typed and out not in names:
                exposed.graph.output.append(typed[out])
                names.append(out)
    exposed.ir_version = min(exposed.ir_version, ORT_MAX_IR_VERSION)
    return exposed, names


def _agreement(name: str, source: str, ours: np.ndarray, theirs: np.ndarray, rtol: float, atol: float):
    if ours.shape != theirs.shape:
        return TensorAgreement(name, source, None, f"shape {list(ours.shape)} vs ONNX Runtime's {list(theirs.shape)}")
    return TensorAgreement(name, source, compare(name, ours, theirs, rtol=rtol, atol=atol))


def bisect(
    model_path: Path | str,
    target: TargetSpec,
    *,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    inputs: Mapping[str, np.ndarray | float] | None = None,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
    fold: bool = True,
) -> BisectReport:
    """Compare every intermediate tensor of `model_path` between dlc (built for `target`,
    which must run here) and ONNX Runtime, and name the first node that diverges."""
    import onnx

    from dlc import build, frontend, pipeline
    from dlc.runtime import load_library
    from dlc.verify import run_onnxruntime

    loaded = frontend.load_model(model_path, input_shapes=input_shapes, fold=fold)
    try:
        exposed, names = _exposed(loaded.model)
    except Exception as err:
        raise DlcError(
            f"cannot expose the intermediate tensors of '{loaded.path.name}': {err}",
            hint="bisecting needs ONNX shape inference to type every node output",
        ) from err
    values = make_inputs(loaded.inputs, seed=seed, model=loaded.model, given=dict(inputs or {}))
    with tempfile.TemporaryDirectory(prefix="dlc-bisect-") as tmp:
        path = Path(tmp) / f"{loaded.path.stem}.exposed.onnx"
        onnx.save(exposed, str(path))
        theirs = run_onnxruntime(path, values)
        # Already folded above; folding again could merge the nodes being compared.
        imported = frontend.import_model(frontend.load_model(path, fold=False))
        optimized = pipeline.optimize(imported, target)
        library = build.build(optimized, target, output=Path(tmp) / "exposed.so").library
        ours = load_library(library).run(values)

    producer = {out: (i, node) for i, node in enumerate(exposed.graph.node) for out in node.output}
    initializers = {init.name for init in exposed.graph.initializer}
    checked: dict[str, TensorAgreement] = {}

    def agreement(name: str) -> TensorAgreement:
        if name not in checked:
            if name not in producer:
                checked[name] = TensorAgreement(name, "initializer" if name in initializers else "input", None)
            elif name in ours and name in theirs:
                i, node = producer[name]
                checked[name] = _agreement(name, _node_label(node, i), ours[name], theirs[name], rtol, atol)
            else:  # untyped (not exposed): unknown, counted as agreeing
                checked[name] = TensorAgreement(name, _node_label(*producer[name][::-1]), None)
        return checked[name]

    quantized_only = is_qdq(exposed)

    def group_inputs(node) -> list[str]:
        """A QuantizeLinear's group: the quantized tensors (or graph inputs, initializers)
        reached upstream through the unexposed fp32 ops."""
        found, stack, seen = [], list(node.input[:1]), set()
        while stack:
            name = stack.pop()
            if not name or name in seen:
                continue
            seen.add(name)
            if name not in producer or producer[name][1].op_type == "QuantizeLinear":
                found.append(name)
            else:
                stack.extend(producer[name][1].input)
        return found

    first = None
    for index, node in enumerate(exposed.graph.node):
        bad = next((a for a in (agreement(o) for o in node.output if o) if not a.agrees), None)
        if bad is None:
            continue
        read = group_inputs(node) if quantized_only and node.op_type == "QuantizeLinear" else node.input
        inputs_seen = tuple(agreement(i) for i in read if i)
        if all(a.agrees for a in inputs_seen):
            first = NodeDivergence(index, _node_label(node, index), node.op_type, bad, inputs_seen)
            break
    compared = sum(1 for a in checked.values() if a.comparison is not None or a.shape_mismatch)
    return BisectReport(first, len(exposed.graph.node), compared, rtol, atol)


def describe(report: BisectReport) -> list[str]:
    """The report as lines for the console."""
    if report.first is None:
        return [
            f"every one of the {report.tensors_compared} intermediate tensors agrees with ONNX Runtime "
            f"(rtol {report.rtol:g}, atol {report.atol:g}): the mismatch appears only when kernels fuse",
        ]
    first = report.first
    lines = [f"first divergence: node '{first.name}' ({first.op_type}), #{first.index + 1} of {report.nodes} in "
             f"topological order"]
    lines.append("  output " + _agreement_text(first.output))
    for item in first.inputs:
        lines.append("  input  " + _agreement_text(item))
    return lines


def _agreement_text(item: TensorAgreement) -> str:
    if item.shape_mismatch:
        return f"'{item.name}': {item.shape_mismatch}"
    if item.comparison is None:
        return f"'{item.name}' ({item.source}): given to both"
    c = item.comparison
    verdict = "agrees" if c.passed else f"DIFFERS at {c.mismatches} of {c.size}"
    return f"'{item.name}' (from {item.source}): {verdict}, max abs error {c.max_abs_error:.3g}"
