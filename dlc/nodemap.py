"""Carry ONNX node names from import through fusion to the kernels of a library.

TVM's ONNX importer records no spans and names every binding `lv`, so nothing in a built
library says which ONNX nodes a kernel came from. Two hooks recover it:

1. import: every converter's result is bound at once (not when its consumer is converted),
   so the bindings emitted while converting node k are exactly those up to node k's output;
   each binding is then renamed `onnx<k>`. Relax passes keep a binding's name when they
   rewrite its value (LegalizeOps, ConvertLayout, FoldConstant), and FuseOps moves bindings
   into the fused functions with their names.
2. fusion: a pass instrument snapshots the module just before FuseTIR, where each fused
   function still lists its bindings; FuseTIR then turns it into a kernel of the same name.

Bindings that passes create (a layout transpose, a decomposed batch norm) carry no node;
their kernel takes the nodes of the kernel that consumes its output, else of its producers.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx
    import tvm

_NAME = re.compile(r"onnx(\d+)$")


def node_label(node: onnx.NodeProto) -> str:
    """`name (OpType)`; an unnamed node goes by its first output."""
    return f"{node.name or (node.output[0] if node.output else '?')} ({node.op_type})"


def import_with_node_names(model: onnx.ModelProto, shapes, dtypes) -> tvm.IRModule:
    """`relax.frontend.onnx.from_onnx`, with every binding of main named after its ONNX node."""
    from tvm import relax
    from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

    class Importer(ONNXGraphImporter):
        def _convert_operator(self, op_name, inputs, attrs, opset):
            result = super()._convert_operator(op_name, inputs, attrs, opset)
            if isinstance(result, relax.Call):  # bind now, so the binding is this node's
                result = self.bb.emit(result)
            return result

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    importer = Importer(shapes, dtypes)
    mod = importer.from_onnx(model.graph, opset)
    node_of = {}
    for index, node in enumerate(model.graph.node):
        for output in node.output:
            value = importer._nodes.get(output)  # noqa: SLF001 (the importer's tensor table)
            if isinstance(value, relax.Var):
                node_of.setdefault(value, index)
    names, pending = {}, []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            pending.append(binding.var)
            if binding.var in node_of:
                names.update((var, f"onnx{node_of[binding.var]}") for var in pending)
                pending = []

    @relax.expr_functor.mutator
    class Rename(relax.PyExprMutator):
        def visit_var_def_(self, var):
            return relax.Var(names[var], var.ty) if var in names else var

        def visit_dataflow_var_def_(self, var):
            return relax.DataflowVar(names[var], var.ty) if var in names else var

    mod["main"] = Rename().visit_expr(mod["main"])
    return mod


class FusionSnapshot:
    """A pass instrument that keeps the module as it was just before FuseTIR."""

    def __init__(self) -> None:
        import tvm

        snapshot = self

        @tvm.instrument.pass_instrument
        class Instrument:
            def run_before_pass(self, mod, info):
                if info.name == "FuseTIR":
                    snapshot.mod = mod

        self.mod = None
        self.instrument = Instrument()


def kernel_nodes(before_fuse_tir: tvm.IRModule | None, kernels: list[str]) -> dict[str, tuple[int, ...]]:
    """ONNX node indexes per kernel name, read from the module FuseTIR was given."""
    from tvm import relax

    if before_fuse_tir is None:
        return {name: () for name in kernels}
    bindings = [b for block in before_fuse_tir["main"].body.blocks for b in block.bindings]
    position = {b.var: i for i, b in enumerate(bindings)}
    kernel_at, nodes_at, args_at = [], [], []
    consumers: dict[int, list[int]] = defaultdict(list)
    for i, binding in enumerate(bindings):
        value, nodes, kernel = binding.value, _nodes_of(binding.var), None
        if isinstance(value, relax.Call) and isinstance(value.op, relax.GlobalVar):
            func = before_fuse_tir[value.op]
            if isinstance(func, relax.Function):  # a fused group: its bindings keep their names
                kernel = value.op.name_hint
                for block in func.body.blocks:
                    for inner in block.bindings:
                        nodes |= _nodes_of(inner.var)
        elif isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.call_tir":
            kernel = value.args[0].name_hint
        args = [position[a] for a in _arg_vars(value) if a in position]
        for j in args:
            consumers[j].append(i)
        kernel_at.append(kernel)
        nodes_at.append(nodes)
        args_at.append(args)
    # Consumers first (a transpose feeding a Reshape belongs to the Reshape), walking backwards
    # so chains of unnamed bindings resolve; then producers, walking forwards.
    for i in reversed(range(len(bindings))):
        if not nodes_at[i]:
            nodes_at[i] = next((set(nodes_at[j]) for j in consumers[i] if nodes_at[j]), set())
    for i in range(len(bindings)):
        if not nodes_at[i]:
            nodes_at[i] = set().union(*(nodes_at[j] for j in args_at[i]))
    found: dict[str, set[int]] = defaultdict(set)
    for kernel, nodes in zip(kernel_at, nodes_at):
        if kernel is not None:
            found[kernel] |= nodes
    return {name: tuple(sorted(found.get(name, ()))) for name in kernels}


def _nodes_of(var) -> set[int]:
    match = _NAME.match(var.name)
    return {int(match.group(1))} if match else set()


def _arg_vars(value) -> list:
    from tvm import relax

    if not isinstance(value, relax.Call):
        return []
    args = list(value.args)
    if args and isinstance(args[0], relax.GlobalVar):  # call_tir(kernel, (args...), ...)
        args = args[1:]
    flat = []
    for arg in args:
        flat.extend(arg.fields if isinstance(arg, relax.Tuple) else [arg])
    return [arg for arg in flat if isinstance(arg, relax.Var)]
