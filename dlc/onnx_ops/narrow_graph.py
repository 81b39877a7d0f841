"""The graph side of dlc.onnx_ops.lowbit: before import, every top-level tensor of a narrow
dtype (bfloat16, float8, float4, int4, int2) becomes its integer storage, and every place a
narrow value is converted becomes one of lowbit's dlc-domain nodes.

Cast and CastLike become Decode/Encode/WrapInt/Cast; QuantizeLinear/DequantizeLinear with a
narrow quantised side, or blocked, become lowbit's reference ones; ops that only move
elements keep the storage (BIT_PRESERVING); any other node that takes or makes a narrow
float computes in float32 between a Decode and an Encode (bfloat16 Attention, Einsum).
Initializers, Constants and the graph's inputs and outputs are rewritten to storage; the
returned names say which inputs and outputs were narrow, for the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dlc.dtypes import NARROW_BY_ONNX_TYPE, NarrowType, to_storage
from dlc.onnx_ops.lowbit import DOMAIN


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Every top-level tensor's ONNX elem type that shape inference can tell."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # an aid only: tensors it cannot type stay as they are
        inferred = model
    graph = inferred.graph
    types = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    types.update((init.name, init.data_type) for init in graph.initializer)
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def _storage_tensor(tensor: onnx.TensorProto, narrow: NarrowType) -> onnx.TensorProto:
    return numpy_helper.from_array(to_storage(numpy_helper.to_array(tensor), narrow.name), tensor.name)


def _storage_type(value: onnx.ValueInfoProto, narrow: NarrowType) -> None:
    value.type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(np.dtype(narrow.storage))


@dataclass(frozen=True)
class LoweredModel:
    model: onnx.ModelProto
    narrow: dict[str, str]  # graph input/output name -> its narrow dtype (dlc.dtypes)


# Ops that only move, select or count elements (or read shapes), whose narrow tensors may
# stay storage: the same bits in the same places. Trilu's and Pad's fill of 0 is +0 in
# every narrow format.
BIT_PRESERVING = frozenset({
    "Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Expand", "Concat",
    "Slice", "Gather", "GatherElements", "GatherND", "Split", "Tile", "Shape", "Size",
    "Compress", "ReverseSequence", "Where", "DepthToSpace", "SpaceToDepth", "Trilu", "OneHot",
})


QUANTIZE_OPS = ("QuantizeLinear", "DequantizeLinear")


def _blocked(node: onnx.NodeProto) -> bool:
    return node.op_type in QUANTIZE_OPS and any(a.name == "block_size" and a.i for a in node.attribute)


class _Rewriter:
    def __init__(self, types: dict[str, int]) -> None:
        self.types = types
        self.nodes: list[onnx.NodeProto] = []
        self.count = 0

    def narrow(self, name: str) -> NarrowType | None:
        return NARROW_BY_ONNX_TYPE.get(self.types.get(name, 0)) if name else None

    def fresh(self, base: str) -> str:
        self.count += 1
        return f"{base}__dlc{self.count}"

    def add(self, op_type: str, inputs: list[str], output: str, domain: str = DOMAIN, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], domain=domain, **attrs))
        return output

    def to_float(self, name: str) -> str:
        """A narrow float's storage as float32; any other tensor as it is."""
        narrow = self.narrow(name)
        if narrow is None or not narrow.is_float:
            return name
        return self.add("Decode", [name], self.fresh(name), narrow=narrow.name)

    def cast(self, node: onnx.NodeProto, to: int, saturate: int) -> None:
        source, output = node.input[0], node.output[0]
        value = self.to_float(source)
        target = NARROW_BY_ONNX_TYPE.get(to)
        if target is None:
            self.add("Cast", [value], output, domain="", to=to)
        elif target.is_float:
            self.add("Encode", [value], output, narrow=target.name, saturate=saturate)
        else:
            self.add("WrapInt", [value], output, narrow=target.name)

    def quantize(self, node: onnx.NodeProto, attrs: dict) -> bool:
        """QuantizeLinear/DequantizeLinear on a narrow type or blocked: dlc's reference ones."""
        quantized = node.output[0] if node.op_type == "QuantizeLinear" else node.input[0]
        elem_type = self.types.get(quantized)
        if elem_type is None or not (self.narrow(quantized) or attrs.get("block_size", 0)):
            return False
        narrow = self.narrow(quantized)
        dtype = narrow.name if narrow else helper.tensor_dtype_to_np_dtype(elem_type).name
        if node.op_type == "QuantizeLinear":
            attrs.pop("output_dtype", None)  # the output's type, known from `quantized`
        self.add(f"Reference{node.op_type}", list(node.input), node.output[0], quantized=dtype, **attrs)
        return True

    def rewrite(self, node: onnx.NodeProto) -> None:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        touched = [n for n in (*node.input, *node.output) if self.narrow(n)]
        standard = node.domain in ("", "ai.onnx")
        if standard and node.op_type in QUANTIZE_OPS and self.quantize(node, attrs):
            return
        if not touched or not standard or node.op_type in ("Constant", "If", "Loop", "Scan"):
            self.nodes.append(node)
            return
        if node.op_type == "Cast":
            self.cast(node, attrs["to"], attrs.get("saturate", 1))
        elif node.op_type == "CastLike" and node.input[1] in self.types:
            self.cast(node, self.types[node.input[1]], attrs.get("saturate", 1))
        elif node.op_type in BIT_PRESERVING and len({self.types.get(n) for n in touched}) == 1:
            self.nodes.append(node)  # moves elements without looking at them: storage as is
        else:  # compute in float32 between a Decode and an Encode
            inputs = [self.to_float(name) for name in node.input]
            outputs = []
            encodes = []
            for name in node.output:
                narrow = self.narrow(name)
                if narrow is not None and narrow.is_float:
                    wide = self.fresh(name)
                    outputs.append(wide)
                    encodes.append((wide, name, narrow))
                else:
                    outputs.append(name)
            rewritten = onnx.NodeProto()
            rewritten.CopyFrom(node)
            del rewritten.input[:], rewritten.output[:]
            rewritten.input.extend(inputs)
            rewritten.output.extend(outputs)
            self.nodes.append(rewritten)
            for wide, name, narrow in encodes:
                self.add("Encode", [wide], name, narrow=narrow.name, saturate=0)


def lower_narrow_types(model: onnx.ModelProto) -> LoweredModel:
    """`model` with every narrow-dtype tensor of its top-level graph held as integer storage;
    the model itself when it has none."""
    types = _tensor_types(model)
    if not any(t in NARROW_BY_ONNX_TYPE for t in types.values()) and not any(map(_blocked, model.graph.node)):
        return LoweredModel(model, {})
    lowered = onnx.ModelProto()
    lowered.CopyFrom(model)
    graph = lowered.graph
    rewriter = _Rewriter(types)
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for a in node.attribute:
                if a.name == "value" and (narrow := NARROW_BY_ONNX_TYPE.get(a.t.data_type)):
                    a.t.CopyFrom(_storage_tensor(a.t, narrow))
        rewriter.rewrite(node)
    del graph.node[:]
    graph.node.extend(rewriter.nodes)
    for index, init in enumerate(graph.initializer):
        if narrow := NARROW_BY_ONNX_TYPE.get(init.data_type):
            graph.initializer[index].CopyFrom(_storage_tensor(init, narrow))
    narrow_names = {}
    for value in (*graph.input, *graph.output, *graph.value_info):
        if narrow := NARROW_BY_ONNX_TYPE.get(value.type.tensor_type.elem_type):
            _storage_type(value, narrow)
            narrow_names[value.name] = narrow.name
    boundary = {v.name for v in (*graph.input, *graph.output)}
    if not any(o.domain == DOMAIN for o in lowered.opset_import):
        lowered.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return LoweredModel(lowered, {k: v for k, v in narrow_names.items() if k in boundary})
