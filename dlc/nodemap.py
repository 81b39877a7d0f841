"""Carry ONNX node names from import through fusion to the kernels of a library.

TVM's ONNX importer records no spans and names every binding `lv`, so nothing in a built
library says which ONNX nodes a kernel came from. Two hooks recover it:

1. import: every converter's result is bound at once (not when its consumer is converted),
   so the bindings emitted while converting node k are exactly those up to node k's output;
   each binding is then renamed `onnx<k>`. Most Relax passes keep a binding's name when
   they rewrite its value (LegalizeOps, FoldConstant).
   Graph passes that re-create bindings (ConvertLayout re-emits every op whose layout it
   changes) are wrapped to give them back the names they replaced (`keep_names`).
2. fusion: FuseOps renames the bindings it groups and calls one function for every
   identical group, so a pass instrument snapshots the module before FuseOps and before
   FuseTIR, and each fused call is matched to the named bindings it replaced; FuseTIR then
   turns each fused function into a kernel of the same name.

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
        branch_depth = 0  # inside an If's branch, which must stay one expression

        def _convert_operator(self, op_name, inputs, attrs, opset):
            result = super()._convert_operator(op_name, inputs, attrs, opset)
            if isinstance(result, relax.Call) and not self.branch_depth:  # bind now: the binding is this node's
                result = self.bb.emit(result)
            return result

        def _convert_subgraph(self, bb, graph):
            self.branch_depth += 1
            try:
                return super()._convert_subgraph(bb, graph)
            finally:
                self.branch_depth -= 1

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

    for binding in (b for block in mod["main"].body.blocks for b in block.bindings):
        if binding.var not in names and isinstance(binding.value, relax.Var) and binding.value in names:
            names[binding.var] = names[binding.value]  # the graph's output, an alias of the last node's
    mod["main"] = _rename(mod["main"], names)
    return mod


def _rename(func, names: dict):
    from tvm import relax

    @relax.expr_functor.mutator
    class Rename(relax.PyExprMutator):
        def visit_var_def_(self, var):
            return relax.Var(names[var], var.ty) if var in names else var

        def visit_dataflow_var_def_(self, var):
            return relax.DataflowVar(names[var], var.ty) if var in names else var

    return Rename().visit_expr(func)


def keep_names(passes: list) -> list:
    """Each graph pass wrapped so that a binding it re-creates under a fresh name (ConvertLayout
    re-emits every op whose layout it changes) gets back the name of the binding it replaced,
    found by aligning main's bindings before and after by operator, in order."""
    import tvm

    def wrap(inner):
        @tvm.transform.module_pass(opt_level=0, name=f"KeepNames({inner.info.name})")
        def run(mod, _ctx):
            before = [(_key(b.value), b.var.name) for b in _bindings(mod["main"])]
            mod = inner(mod)
            names, position = {}, 0
            for binding in _bindings(mod["main"]):
                key, name = _key(binding.value), binding.var.name
                window = range(position, min(position + 8, len(before)))
                if _NAME.match(name):
                    position = next((j + 1 for j in window if before[j][1] == name), position)
                    continue
                j = next((j for j in window if before[j][0] == key and _NAME.match(before[j][1])), None)
                if j is not None:
                    names[binding.var], position = before[j][1], j + 1
            if names:
                mod["main"] = _rename(mod["main"], names)
            return mod

        return run

    return [wrap(p) for p in passes]


def _bindings(func) -> list:
    return [b for block in func.body.blocks for b in block.bindings]


def _key(value) -> str:
    """What a binding computes, as far as alignment needs: the operator or kernel it calls."""
    from tvm import relax

    if isinstance(value, relax.Call):
        if isinstance(value.op, relax.GlobalVar):
            return value.op.name_hint
        if getattr(value.op, "name", "") == "relax.call_tir":
            return value.args[0].name_hint
        return getattr(value.op, "name", type(value.op).__name__)
    return type(value).__name__


class FusionSnapshot:
    """A pass instrument that keeps the module as it was just before FuseOps and FuseTIR."""

    def __init__(self) -> None:
        import tvm

        snapshot = self

        @tvm.instrument.pass_instrument
        class Instrument:
            def run_before_pass(self, mod, info):
                if info.name == "FuseOps":
                    snapshot.before_fuse_ops = mod
                elif info.name == "FuseTIR":
                    snapshot.mod = mod

        self.mod = None
        self.before_fuse_ops = None
        self.instrument = Instrument()


def kernel_nodes(snapshot: FusionSnapshot, kernels: list[str]) -> dict[str, tuple[int, ...]]:
    """ONNX node indexes per kernel name, read from the modules FuseOps and FuseTIR were given."""
    from tvm import relax

    fused, flat = snapshot.mod, snapshot.before_fuse_ops
    if fused is None or flat is None:
        return {name: () for name in kernels}
    # FuseOps renames the bindings it groups and calls one function for every identical group,
    # so the names inside a fused function are its first group's only. Each call is matched to
    # the bindings it replaced instead: FuseOps keeps their order, so the next unclaimed
    # bindings that call the same kernels, in order, are this call's.
    unclaimed = [(_key(b.value), _nodes_of(b.var)) for b in _bindings(flat["main"])]
    claimed = [False] * len(unclaimed)
    first = 0
    bindings = _bindings(fused["main"])
    position = {b.var: i for i, b in enumerate(bindings)}
    kernel_at, nodes_at, args_at = [], [], []
    consumers: dict[int, list[int]] = defaultdict(list)
    for i, binding in enumerate(bindings):
        value, kernel, keys = binding.value, None, []
        if isinstance(value, relax.Call) and isinstance(value.op, relax.GlobalVar):
            func = fused[value.op]
            if isinstance(func, relax.Function):  # a fused group
                kernel, keys = value.op.name_hint, [_key(b.value) for b in _bindings(func)]
        elif isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.call_tir":
            kernel = value.args[0].name_hint
            keys = [kernel]
        nodes, j = set(), first
        for key in keys:
            j = next((k for k in range(j, len(unclaimed)) if not claimed[k] and unclaimed[k][0] == key), None)
            if j is None:
                break
            claimed[j] = True
            nodes |= unclaimed[j][1]
        while first < len(claimed) and claimed[first]:
            first += 1
        args = [position[a] for a in _arg_vars(value) if a in position]
        for j in args:
            consumers[j].append(i)
        kernel_at.append(kernel)
        nodes_at.append(nodes)
        args_at.append(args)
    # Bindings that passes created (layout transposes) have no node: they take their consumer's
    # (a transpose feeding a Reshape belongs to the Reshape), walking backwards so chains of
    # them resolve, else their producers'.
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
