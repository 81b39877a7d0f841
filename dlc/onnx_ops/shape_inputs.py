"""Inputs that decide an output's shape given at run time: Reduce* axes, TopK's k, OneHot's
depth, Split's sizes, Reshape's shape, Resize's sizes (and CumSum/CumProd's axis),
specialised to the model's declared output shapes.

TVM 0.27's converters take these as constants only ("Only constant axes currently
supported", "TopK k must be a constant", "Dynamic Split not yet supported"): they decide the
output's shape, and dlc compiles for static shapes. When the model declares the output's
shape (a graph output, or read through Cast/Sqrt/Log... to one), the values are known, or
are a few candidates, and `specialise_shape_inputs` rewrites the node:

- Reduce* -> dlc's `OverAxes`: the sets of that many axes whose reduction gives the
  declared shape are each reduced (constant axes, TVM's own converter) and the run-time
  axes pick one. CumSum and CumProd keep the input's shape: every axis is a candidate.
- TopK, OneHot, Split, Reshape, Resize -> the same node reading a constant, behind dlc's
  `ExpectInput`, which passes its data through once the run-time value is checked.

The check is in the library (an assert in a small opaque kernel, as dlc.bounds' index
checks): other values fail the call ("TopK: input 'k' must be [3] ...") instead of
computing for a shape the library was not built for. An empty axes input means no axes,
whatever its type: the node loses it.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import helper
from tvm import relax, te, tirx
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from dlc.onnx_ops.common import attr_str

DOMAIN = "dlc"
OPAQUE_PATTERN = 8  # relax's OpPatternKind.kOpaque: the check stays its own kernel
MAX_CANDIDATES = 8
CUMULATIVE_OPS = ("CumSum", "CumProd")  # axis input from their first opset
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


def _expected_input(node: onnx.NodeProto, shapes: dict, constants: set, opset: int):
    """(input slot, the values the declared output shapes imply, how to compare) for TopK's k,
    OneHot's depth, Split's sizes, Reshape's shape and Resize's sizes given at run time; None
    otherwise."""
    if node.domain not in ("", "ai.onnx"):
        return None
    slots = {"TopK": (1, 10), "OneHot": (1, 9), "Split": (1, 13), "Reshape": (1, 5), "Resize": (3, 11)}
    slot, since = slots.get(node.op_type, (None, None))
    if slot is None or opset < since or len(node.input) <= slot or not node.input[slot]:
        return None
    if node.input[slot] in constants or any(shapes.get(o) is None for o in node.output if o):
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    out = shapes[node.output[0]]
    if node.op_type == "TopK":
        return slot, [out[attrs.get("axis", -1)]], "equal"
    if node.op_type == "OneHot":
        return slot, [out[attrs.get("axis", -1)]], "equal"
    if node.op_type == "Resize":  # sizes: the output's shape along `axes`, unless an aspect policy applies
        if attrs.get("keep_aspect_ratio_policy", b"stretch") not in (b"stretch", "stretch"):
            return None
        return slot, [out[a] for a in attrs.get("axes", range(len(out)))], "equal"
    if node.op_type == "Split":
        axis = attrs.get("axis", 0)
        return slot, [shapes[o][axis] for o in node.output], "equal"
    if shapes.get(node.input[0]) is None or 0 in out:  # Reshape: 0 would mean "copy" in a constant
        return None
    return slot, list(out), "reshape"


def _over_axes(node: onnx.NodeProto, candidates, rank: int, opset: int, *, scalar: bool = False) -> onnx.NodeProto:
    """dlc's OverAxes in place of `node`: its attributes, and dlc_* ones saying how to run it."""
    over = helper.make_node(
        "OverAxes", list(node.input[:2]), list(node.output), name=node.name, domain=DOMAIN,
        dlc_op=node.op_type, dlc_opset=opset, dlc_rank=rank, dlc_scalar=int(scalar),
        dlc_candidates=[a for axes in candidates for a in axes], dlc_count=len(candidates[0]))
    over.attribute.extend(node.attribute)
    return over


def specialise_shape_inputs(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """`model` with the nodes described above rewritten; the model itself if none is."""
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
    added: list[onnx.TensorProto] = []
    inserted: dict[int, onnx.NodeProto] = {}
    for index, node in enumerate(graph.node):
        expected = _expected_input(node, shapes, constants, opset)
        if expected is not None:
            slot, values, kind = expected
            name = f"{node.input[slot]}__dlc_expected{index}"
            added.append(helper.make_tensor(name, onnx.TensorProto.INT64, [len(values)], values))
            checked = f"{node.input[0]}__dlc_checked{index}"
            in_shape = shapes.get(node.input[0]) or ()
            inserted[index] = helper.make_node(
                "ExpectInput", [node.input[0], node.input[slot]], [checked], domain=DOMAIN,
                kind=kind, expected=values, in_shape=list(in_shape),
                message=f"{node.op_type}: input '{node.input[slot]}' must be {values} (the model's declared "
                        "output shape allows no other)")
            fixed = onnx.NodeProto()
            fixed.CopyFrom(node)
            fixed.input[0], fixed.input[slot] = checked, name
            replaced[index] = fixed
            continue
        if node.op_type in CUMULATIVE_OPS and node.domain in ("", "ai.onnx") and node.input[1] not in constants:
            in_shape, axis_shape = shapes.get(node.input[0]), shapes.get(node.input[1])
            if in_shape is not None and axis_shape in ((), (1,)):
                replaced[index] = _over_axes(node, [(d,) for d in range(len(in_shape))], len(in_shape), opset,
                                             scalar=axis_shape == ())
            continue
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
        candidates = _candidates(in_shape, out_shape, axes_shape[0], bool(attrs.get("keepdims", 1)))
        if not candidates or len(candidates) > MAX_CANDIDATES:
            continue
        replaced[index] = _over_axes(node, candidates, len(in_shape), opset)
    if not replaced:
        return model
    specialised = onnx.ModelProto()
    specialised.CopyFrom(model)
    nodes = []
    for index, node in enumerate(graph.node):
        if index in inserted:
            nodes.append(inserted[index])
        nodes.append(replaced.get(index, node))
    del specialised.graph.node[:]
    specialised.graph.node.extend(nodes)
    specialised.graph.initializer.extend(added)
    if not any(o.domain == DOMAIN for o in specialised.opset_import):
        specialised.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return specialised


def _check_kernel(data, values, condition, message: str):
    """te.extern: out = data, asserting first `condition` of `values`' elements (as int64):
    the library refuses the call instead of computing for a shape it was not built for."""
    from tvm.script.ir_builder import IRBuilder
    from tvm.script.ir_builder import tirx as T

    def body(ins, outs):
        src, given, dst = ins[0], ins[1], outs[0]
        indices = [[i] for i in range(int(given.shape[0]))] if len(given.shape) else [[]]
        loaded = [tirx.Cast("int64", tirx.BufferLoad(given, index)) for index in indices]
        with IRBuilder() as ib:
            with T.Assert(condition(loaded), message, "ValueError"):
                with T.frame_scope([T.serial(0, d) for d in src.shape]) as ivs:
                    ivs = list(ivs) if isinstance(ivs, list | tuple) else [ivs]
                    T.buffer_store(dst, tirx.BufferLoad(src, ivs), ivs)
        return ib.get()

    return te.extern([data.shape], [data, values], body, dtype=str(data.dtype), name="input_check")


def _emit_checked(bb, data, values, condition, message: str):
    call = bb.call_te(lambda d, v: _check_kernel(d, v, condition, message), data, values,
                      primfunc_name_hint="input_check")
    kernel = call.args[0]
    bb.update_func(kernel, bb.get()[kernel].with_attrs({"op_pattern": OPAQUE_PATTERN, "tirx.is_scheduled": True}))
    return bb.emit(call)


def _one_of(rank: int, candidates: list[tuple[int, ...]]):
    """The run-time axes (negative ones counted from the end) are one of `candidates`, as sets."""
    def condition(values):
        values = [tirx.Select(v < 0, v + tirx.const(rank, "int64"), v) for v in values]
        return tirx.any(*[
            tirx.all(*[tirx.any(*[v == tirx.const(a, "int64") for a in axes_set]) for v in values])
            for axes_set in candidates
        ])
    return condition


def _equal_to(expected: list[int]):
    def condition(values):
        return tirx.all(*[v == tirx.const(e, "int64") for v, e in zip(values, expected)])
    return condition


def _reshapes_to(expected: list[int], in_shape: list[int]):
    """Reshape's shape input gives `expected`: each entry equal, -1, or 0 copying the input's."""
    def condition(values):
        return tirx.all(*[
            tirx.any(v == tirx.const(e, "int64"), v == tirx.const(-1, "int64"),
                     tirx.all(v == tirx.const(0, "int64"), tirx.const(i < len(in_shape) and in_shape[i] == e, "bool")))
            for i, (v, e) in enumerate(zip(values, expected))
        ])
    return condition


class ExpectInput(OnnxOpConverter):
    """dlc's ExpectInput(data, value): data, once the library has checked that the run-time
    `value` is the one the declared shapes imply (the node after it reads a constant)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        data, value = inputs[0], inputs[1]
        expected = [int(v) for v in attr["expected"]]
        if attr_str(attr, "kind", "equal") == "reshape":
            condition = _reshapes_to(expected, [int(d) for d in attr.get("in_shape", [])])
        else:
            condition = _equal_to(expected)
        return _emit_checked(bb, data, value, condition, attr_str(attr, "message", "unexpected input"))


def _matches(bb, axes, rank: int, axes_set: tuple[int, ...]):
    """A bool scalar: every run-time axis is in `axes_set`."""
    op = relax.op
    values = bb.emit(op.astype(axes, "int64"))
    values = bb.emit(op.where(op.less(values, relax.const(0, "int64")), op.add(values, relax.const(rank, "int64")), values))
    hits = bb.emit(op.equal(op.reshape(values, [-1, 1]), relax.const(np.array([axes_set], dtype="int64"))))
    return bb.emit(op.min(op.astype(op.max(op.astype(hits, "int32"), [1]), "int32"), []))


class OverAxes(OnnxOpConverter):
    """dlc's OverAxes: the op (a Reduce*, CumSum, CumProd) once per candidate axes, constant,
    by its own converter; the run-time axes pick the result, after the library checks they
    are one of the candidates."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        from dlc.onnx_ops import convert_map

        data, axes = inputs[0], inputs[1]
        op_type = attr_str(attr, "dlc_op", "")
        rank, count = attr["dlc_rank"], attr["dlc_count"]
        flat = list(attr["dlc_candidates"])
        candidates = [tuple(flat[i:i + count]) for i in range(0, len(flat), count)]
        message = (f"{op_type}: the axes input must be one of {[list(c) for c in candidates]} "
                   "(the model's declared output shape allows no other)")
        checked = _emit_checked(bb, data, axes, _one_of(rank, candidates), message)
        convert = convert_map()[op_type].get_converter(attr["dlc_opset"])
        op_attrs = {k: v for k, v in attr.items() if not k.startswith("dlc_")}
        results = []
        for axes_set in candidates:
            value = np.array(axes_set[0] if attr["dlc_scalar"] else axes_set, dtype="int64")
            results.append(bb.normalize(convert(bb, [checked, relax.const(value)], dict(op_attrs), params)))
        out = results[-1]
        for axes_set, result in zip(candidates[-2::-1], results[-2::-1]):
            out = bb.emit(relax.op.where(relax.op.astype(_matches(bb, axes, rank, axes_set), "bool"), result, out))
        return out
