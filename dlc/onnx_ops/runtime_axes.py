"""Reduce* whose axes are a run-time input, specialised to the model's declared output shape.

TVM 0.27's reduce converters take constant axes only ("Only constant axes currently
supported"): which axes are reduced decides the output's shape. When the model declares the
reduction's output shape (a graph output), the axes it can have are few: the sets of that
many axes whose reduction gives the declared shape. `specialise_reduce_axes` replaces such a
node with dlc's `ReduceOverAxes`, whose converter reduces over each candidate set (constant
axes, TVM's own converter), picks the one the run-time axes name, and checks in the library
that they name one: other axes fail the call ("ReduceSum: the axes input must be ...") instead
of giving a wrong answer.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import helper
from tvm import relax, te, tirx
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from dlc.onnx_ops.common import attr_str, tvm_convert_map

DOMAIN = "dlc"
OPAQUE_PATTERN = 8  # relax's OpPatternKind.kOpaque: the check stays its own kernel
MAX_CANDIDATES = 8
# op -> the first opset whose axes are an input (ReduceSum's moved at 13, the rest at 18)
REDUCE_OPS = {
    "ReduceSum": 13, "ReduceMean": 18, "ReduceMax": 18, "ReduceMin": 18, "ReduceProd": 18,
    "ReduceL1": 18, "ReduceL2": 18, "ReduceLogSum": 18, "ReduceLogSumExp": 18, "ReduceSumSquare": 18,
}


def _shape(value: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    dims = value.type.tensor_type.shape.dim
    if not value.type.tensor_type.HasField("shape") or any(not d.HasField("dim_value") for d in dims):
        return None
    return tuple(d.dim_value for d in dims)


def _candidates(in_shape, out_shape, count: int, keepdims: bool) -> list[tuple[int, ...]]:
    """Every set of `count` axes whose reduction turns in_shape into out_shape."""
    found = []
    for axes in itertools.combinations(range(len(in_shape)), count):
        if keepdims:
            reduced = tuple(1 if d in axes else size for d, size in enumerate(in_shape))
        else:
            reduced = tuple(size for d, size in enumerate(in_shape) if d not in axes)
        if reduced == tuple(out_shape):
            found.append(axes)
    return found


# Ops whose output has their first input's shape: a reduction's declared shape can be read
# through them (ReduceL2's function body: ReduceSum -> Cast -> Sqrt -> CastLike -> output).
SAME_SHAPE = frozenset({"Cast", "CastLike", "Sqrt", "Log", "Exp", "Abs", "Neg", "Identity", "Reciprocal"})


def _declared_shape(name: str, shapes: dict, consumers: dict) -> tuple[int, ...] | None:
    while shapes.get(name) is None:
        users = consumers.get(name, [])
        if len(users) != 1 or users[0].op_type not in SAME_SHAPE or users[0].input[0] != name:
            return None
        name = users[0].output[0]
    return shapes[name]


def specialise_reduce_axes(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """`model` with each Reduce* whose axes are a run-time input and whose output shape is
    declared (a graph output) replaced by dlc's ReduceOverAxes, and each whose axes input is
    empty by the node without it; the model itself if none."""
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # an aid: without it, inputs' own shapes still serve
        inferred = model
    shapes = {v.name: _shape(v) for v in (*inferred.graph.input, *inferred.graph.value_info, *graph.output)}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    replaced = {}
    for index, node in enumerate(graph.node):
        since = REDUCE_OPS.get(node.op_type)
        if since is None or opset < since or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        axes = node.input[1]
        if not axes or axes in constants:
            continue
        axes_shape = shapes.get(axes)
        if axes_shape == (0,):  # no axes, whatever their values: the node without its axes input
            empty = onnx.NodeProto()
            empty.CopyFrom(node)
            del empty.input[1:]
            replaced[index] = empty
            continue
        in_shape, out_shape = shapes.get(node.input[0]), _declared_shape(node.output[0], shapes, consumers)
        if in_shape is None or out_shape is None or axes_shape is None or len(axes_shape) != 1:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        keepdims = bool(attrs.get("keepdims", 1))
        candidates = _candidates(in_shape, out_shape, axes_shape[0], keepdims)
        if not candidates or len(candidates) > MAX_CANDIDATES:
            continue
        replaced[index] = helper.make_node(
            "ReduceOverAxes", list(node.input[:2]), list(node.output), name=node.name, domain=DOMAIN,
            reduce=node.op_type, keepdims=int(keepdims), opset=opset, rank=len(in_shape),
            candidates=[a for axes in candidates for a in axes], count=axes_shape[0])
    if not replaced:
        return model
    specialised = onnx.ModelProto()
    specialised.CopyFrom(model)
    for index, node in replaced.items():
        specialised.graph.node[index].CopyFrom(node)
    if not any(o.domain == DOMAIN for o in specialised.opset_import):
        specialised.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return specialised


def _check_kernel(data, axes, rank: int, candidates: list[tuple[int, ...]], message: str):
    """te.extern: out = data, asserting first that `axes` (negative ones counted from the end)
    is one of `candidates` as a set."""
    from tvm.script.ir_builder import IRBuilder
    from tvm.script.ir_builder import tirx as T

    def body(ins, outs):
        src, ax, dst = ins[0], ins[1], outs[0]
        values = []
        for i in range(int(ax.shape[0])):
            value = tirx.Cast("int64", tirx.BufferLoad(ax, [i]))
            values.append(tirx.Select(value < 0, value + tirx.const(rank, "int64"), value))
        matches = [
            tirx.all(*[tirx.any(*[v == tirx.const(a, "int64") for a in axes_set]) for v in values])
            for axes_set in candidates
        ]
        with IRBuilder() as ib:
            with T.Assert(tirx.any(*matches), message, "ValueError"):
                with T.frame_scope([T.serial(0, d) for d in src.shape]) as ivs:
                    ivs = list(ivs) if isinstance(ivs, list | tuple) else [ivs]
                    T.buffer_store(dst, tirx.BufferLoad(src, ivs), ivs)
        return ib.get()

    return te.extern([data.shape], [data, axes], body, dtype=str(data.dtype), name="axes_check")


def _matches(bb, axes, rank: int, axes_set: tuple[int, ...]):
    """A bool scalar: every run-time axis is in `axes_set`."""
    op = relax.op
    values = bb.emit(op.astype(axes, "int64"))
    values = bb.emit(op.where(op.less(values, relax.const(0, "int64")), op.add(values, relax.const(rank, "int64")), values))
    hits = bb.emit(op.equal(op.reshape(values, [-1, 1]), relax.const(np.array([axes_set], dtype="int64"))))
    return bb.emit(op.min(op.astype(op.max(op.astype(hits, "int32"), [1]), "int32"), []))


class ReduceOverAxes(OnnxOpConverter):
    """The converter of dlc's ReduceOverAxes (see the module's docstring)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        from dlc.onnx_ops import convert_map

        data, axes = inputs[0], inputs[1]
        reduce = attr_str(attr, "reduce", "")
        rank, count = attr["rank"], attr["count"]
        flat = list(attr["candidates"])
        candidates = [tuple(flat[i:i + count]) for i in range(0, len(flat), count)]
        message = (f"{reduce}: the axes input must be one of {[list(c) for c in candidates]} "
                   "(the model's declared output shape allows no other)")
        call = bb.call_te(lambda d, a: _check_kernel(d, a, rank, candidates, message), data, axes,
                          primfunc_name_hint="axes_check")
        kernel = call.args[0]
        bb.update_func(kernel, bb.get()[kernel].with_attrs({"op_pattern": OPAQUE_PATTERN, "tirx.is_scheduled": True}))
        checked = bb.emit(call)
        convert = convert_map().get(reduce, tvm_convert_map()[reduce]).get_converter(attr["opset"])
        reduce_attrs = {"keepdims": attr["keepdims"], "noop_with_empty_axes": 0}
        results = [
            bb.normalize(convert(bb, [checked, relax.const(np.array(c, dtype="int64"))], dict(reduce_attrs), params))
            for c in candidates
        ]
        out = results[-1]
        for axes_set, result in zip(candidates[-2::-1], results[-2::-1]):
            out = bb.emit(relax.op.where(relax.op.astype(_matches(bb, axes, rank, axes_set), "bool"), result, out))
        return out
