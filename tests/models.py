"""Tiny ONNX models built with onnx.helper for the tests (ONNX IR 10: onnxruntime 1.31 refuses 14)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10
OPSET = 17


def _save(graph: onnx.GraphProto, path: Path, opset: int = OPSET) -> Path:
    model = helper.make_model(
        graph, ir_version=IR_VERSION, opset_imports=[helper.make_opsetid("", opset)], producer_name="dlc-tests"
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def save_graph(path: Path, nodes, inputs, outputs, initializers=(), opset: int = OPSET) -> Path:
    """A one-graph model of `nodes` named after `path`, checked and saved there."""
    return _save(helper.make_graph(nodes, path.stem, inputs, outputs, list(initializers)), path, opset)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def conv_relu_pool(path: Path, *, weight_seed: int = 1, channels: int = 8, size: int = 16) -> Path:
    """Conv(3->8, 3x3) + bias, Relu, MaxPool 2x2, GlobalAveragePool: the CNN building blocks."""
    rng = np.random.default_rng(weight_seed)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p"], ["y"], name="gap"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_relu_pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 1, 1])],
        [
            _init("w", rng.standard_normal((channels, 3, 3, 3)).astype(np.float32)),
            _init("b", rng.standard_normal(channels).astype(np.float32)),
        ],
    )
    return _save(graph, path)


def conv_relu_pool_wide(path: Path) -> Path:
    """conv_relu_pool with other shapes (3->16 channels over 32x32; whole vectors, so no padded
    features with AVX2 or AVX-512, as 8): its kernels are of the same classes, for
    transferring records between the two."""
    return conv_relu_pool(path, weight_seed=3, channels=16, size=32)


def matmul_softmax(path: Path) -> Path:
    """MatMul + Add + Softmax, two outputs (logits and probabilities)."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "b"], ["logits"], name="add"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "matmul_softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 10]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, [2, 10]),
        ],
        [
            _init("w", rng.standard_normal((16, 10)).astype(np.float32)),
            _init("b", rng.standard_normal(10).astype(np.float32)),
        ],
    )
    return _save(graph, path)


def computed_reshape(path: Path) -> Path:
    """Reshape whose target is computed at run time: Shape -> Slice -> Concat (as PaddleOCR exports).

    x: [batch, 4, 6] -> [batch, 24]; the batch dim is dynamic in the file.
    """
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Slice", ["shape", "zero", "one"], ["batch"], name="slice"),
        helper.make_node("Concat", ["batch", "minus_one"], ["new_shape"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "new_shape"], ["flat"], name="reshape"),
        helper.make_node("Relu", ["flat"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "computed_reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 24])],
        [
            _init("zero", np.array([0], np.int64)),
            _init("one", np.array([1], np.int64)),
            _init("minus_one", np.array([-1], np.int64)),
        ],
    )
    return _save(graph, path)


def range_from_shape(path: Path) -> Path:
    """YOLOv8-style anchors: Range's limit from Shape -> Gather -> Cast, then Sub and Add.

    Without folding, TVM's importer keeps the limit as a run-time value, the anchors lose their
    static shape and the Sub cannot be lowered ("CodeGenVM cannot emit ... R.subtract").
    """
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "axis2"], ["width"], name="gather", axis=0),
        helper.make_node("Cast", ["width"], ["width_f"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Range", ["start", "width_f", "step"], ["grid"], name="range"),
        helper.make_node("Sub", ["grid", "half"], ["centres"], name="sub"),
        helper.make_node("Add", ["x", "centres"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "range_from_shape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, "w"])],
        [
            _init("axis2", np.array(2, np.int64)),
            _init("start", np.array(0.0, np.float32)),
            _init("step", np.array(1.0, np.float32)),
            _init("half", np.array(0.5, np.float32)),
        ],
    )
    return _save(graph, path)


def token_embedding(path: Path) -> Path:
    """int64 token ids -> Gather from a 50-row table -> ReduceMean: ids must stay below 50."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed", axis=0),
        helper.make_node("ReduceMean", ["emb"], ["y"], name="mean", axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "token_embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [_init("table", rng.standard_normal((50, 8)).astype(np.float32))],
    )
    return _save(graph, path)


def scalar_input(path: Path) -> Path:
    """A rank-0 int64 input (a sample rate, as silero VAD's `sr`) whose value picks the branch."""
    nodes = [
        helper.make_node("Constant", [], ["rate"], value=numpy_helper.from_array(np.array(16000, np.int64))),
        helper.make_node("Equal", ["sr", "rate"], ["is_16k"], name="is_16k"),
        helper.make_node("Cast", ["sr"], ["srf"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "srf"], ["scaled"], name="scale"),
        helper.make_node("Neg", ["x"], ["negated"], name="neg"),
        helper.make_node("Where", ["is_16k", "scaled", "negated"], ["y"], name="pick"),
    ]
    graph = helper.make_graph(
        nodes,
        "scalar_input",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    return _save(graph, path)


def empty_like(path: Path) -> Path:
    """CastLike whose `like` input is an empty tensor (declared dim 0): static, not dynamic."""
    nodes = [helper.make_node("CastLike", ["x", "like"], ["y"], name="castlike")]
    graph = helper.make_graph(
        nodes,
        "empty_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("like", TensorProto.DOUBLE, [0])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2, 3])],
    )
    return _save(graph, path)


def deep_convs(path: Path, *, layers: int = 40) -> Path:
    """A stack of 3x3 convs with distinct shapes, so building takes seconds, not a blink."""
    rng = np.random.default_rng(5)
    nodes, inits, channels, name = [], [], 4, "x"
    for i in range(layers):
        out = 4 + i  # distinct shapes: no two kernels are alike
        inits += [_init(f"w{i}", rng.standard_normal((out, channels, 3, 3)).astype(np.float32) * 0.2),
                  _init(f"b{i}", rng.standard_normal(out).astype(np.float32))]
        nodes += [helper.make_node("Conv", [name, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        channels, name = out, f"r{i}"
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(
        nodes,
        "deep_convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 32, 32])],
        inits,
    )
    return _save(graph, path)


def unsupported_ops(path: Path) -> Path:
    """Two custom-domain ops and one standard op TVM has no converter for."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("FancyOp", ["a"], ["b"], name="fancy_1", domain="com.example"),
        helper.make_node("FancyOp", ["b"], ["c"], name="fancy_2", domain="com.example"),
        helper.make_node("StringNormalizer", ["s"], ["t"], name="normalise"),
    ]
    graph = helper.make_graph(
        nodes,
        "unsupported_ops",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("s", TensorProto.STRING, [2]),
        ],
        [
            helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("t", TensorProto.STRING, [2]),
        ],
    )
    model = helper.make_model(
        graph,
        ir_version=IR_VERSION,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.example", 1)],
    )
    onnx.save(model, str(path))
    return path


def depthwise_grouped_conv(path: Path) -> Path:
    """MobileNet-style block: depthwise 3x3 (group=C, stride 2), HardSwish, grouped 1x1
    (group=2), residual Add, then a dense conv to 18 channels (not a multiple of a vector)."""
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Conv", ["x", "w_dw", "b_dw"], ["dw"], name="depthwise", group=16,
                         pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("HardSwish", ["dw"], ["act"], name="hardswish"),
        helper.make_node("Conv", ["act", "w_g", "b_g"], ["g"], name="grouped", group=2),
        helper.make_node("Add", ["g", "act"], ["res"], name="residual"),
        helper.make_node("Conv", ["res", "w_o"], ["y"], name="conv18", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "depthwise_grouped_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 20, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 18, 10, 10])],
        [
            _init("w_dw", rng.standard_normal((16, 1, 3, 3)).astype(np.float32)),
            _init("b_dw", rng.standard_normal(16).astype(np.float32)),
            _init("w_g", (rng.standard_normal((16, 8, 1, 1)) * 0.3).astype(np.float32)),
            _init("b_g", rng.standard_normal(16).astype(np.float32)),
            _init("w_o", (rng.standard_normal((18, 16, 3, 3)) * 0.1).astype(np.float32)),
        ],
    )
    return _save(graph, path)


def attention_block(path: Path) -> Path:
    """Batch-matmul of two activations (q @ k^T), Softmax, batch-matmul with v, LayerNorm,
    then a Gemm (dense, transB) with bias: the transformer kernels."""
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="k_proj"),
        helper.make_node("Transpose", ["k"], ["kt"], name="k_t", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="qk"),
        helper.make_node("Softmax", ["scores"], ["attn"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["attn", "x"], ["ctx"], name="attn_v"),
        helper.make_node("LayerNormalization", ["ctx", "gamma", "beta"], ["norm"], name="layernorm", axis=-1),
        helper.make_node("Reshape", ["norm", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w_fc", "b_fc"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "attention_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 12, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [24, 40])],
        [
            _init("wq", (rng.standard_normal((32, 32)) * 0.2).astype(np.float32)),
            _init("wk", (rng.standard_normal((32, 32)) * 0.2).astype(np.float32)),
            _init("gamma", rng.standard_normal(32).astype(np.float32)),
            _init("beta", rng.standard_normal(32).astype(np.float32)),
            _init("flat_shape", np.array([24, 32], np.int64)),
            _init("w_fc", (rng.standard_normal((40, 32)) * 0.2).astype(np.float32)),
            _init("b_fc", rng.standard_normal(40).astype(np.float32)),
        ],
    )
    return _save(graph, path)


def pooling(path: Path) -> Path:
    """MaxPool 3x3/2 with padding, AveragePool 2x2, GlobalAveragePool and ReduceMean over
    the channels, each its own output."""
    nodes = [
        helper.make_node("MaxPool", ["x"], ["mp"], name="maxpool", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["mp"], ["ap"], name="avgpool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["x"], ["gap"], name="gap"),
        helper.make_node("ReduceMean", ["x"], ["mean"], name="channel_mean", axes=[1], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes,
        "pooling",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24, 18, 18])],
        [
            helper.make_tensor_value_info("ap", TensorProto.FLOAT, [1, 24, 4, 4]),
            helper.make_tensor_value_info("gap", TensorProto.FLOAT, [1, 24, 1, 1]),
            helper.make_tensor_value_info("mean", TensorProto.FLOAT, [1, 1, 18, 18]),
        ],
    )
    return _save(graph, path)


def conv_silu_softmax(path: Path) -> Path:
    """YOLOv8's Conv + SiLU (x * Sigmoid(x)), then Softmax over the channel axis (not the
    last one) and an Exp: the ops dlc rewrites to their vectorisable fast forms."""
    rng = np.random.default_rng(6)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], ["s"], name="sigmoid"),
        helper.make_node("Mul", ["c", "s"], ["silu"], name="silu"),
        helper.make_node("Softmax", ["silu"], ["y"], name="softmax", axis=1),
        helper.make_node("Exp", ["x"], ["e"], name="exp"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_silu_softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 12, 12]),
            helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 8, 12, 12]),
        ],
        [
            _init("w", (rng.standard_normal((16, 8, 3, 3)) * 0.3).astype(np.float32)),
            _init("b", rng.standard_normal(16).astype(np.float32)),
        ],
    )
    return _save(graph, path)


def conv_transpose(path: Path) -> Path:
    """Conv, then two ConvTranspose 2x upsamplings: kernel 3 with padding, right after the
    conv (TVM 0.27 has no channels-last legalisation for it, so it must stay NCHW beside an
    NHWC conv), then kernel 2 = stride 2 with a bias (PP-OCR det's neck), which dlc rewrites
    as a 1x1 conv and a pixel shuffle."""
    rng = np.random.default_rng(7)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ConvTranspose", ["r", "wt3"], ["u"], name="upsample_k3", strides=[2, 2],
                         pads=[1, 1, 1, 1], output_padding=[1, 1]),
        helper.make_node("ConvTranspose", ["u", "wt", "bt"], ["y"], name="upsample", strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_transpose",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 40, 40])],
        [
            _init("w", (rng.standard_normal((16, 8, 3, 3)) * 0.3).astype(np.float32)),
            _init("wt3", (rng.standard_normal((16, 4, 3, 3)) * 0.3).astype(np.float32)),
            _init("wt", (rng.standard_normal((4, 2, 2, 2)) * 0.3).astype(np.float32)),
            _init("bt", rng.standard_normal(2).astype(np.float32)),
        ],
    )
    return _save(graph, path)


def odd_features(path: Path) -> Path:
    """Output features that are no whole number of vector registers: a MatMul to 100 columns
    (+ bias, Softmax) and a 3x3 Conv to 40 channels (+ bias, Relu) then a 1x1 Conv to 24
    (as PP-OCRv4 rec's 6625-class head and det's 24-channel convs): dlc pads them."""
    rng = np.random.default_rng(11)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "b"], ["logits"], name="add"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
        helper.make_node("Conv", ["img", "wc", "bc"], ["c"], name="conv3x3", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w1"], ["y"], name="conv1x1"),
    ]
    graph = helper.make_graph(
        nodes,
        "odd_features",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 32]),
         helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 8, 12, 12])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [6, 100]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 12, 12])],
        [
            _init("w", (rng.standard_normal((32, 100)) * 0.3).astype(np.float32)),
            _init("b", rng.standard_normal(100).astype(np.float32)),
            _init("wc", (rng.standard_normal((40, 8, 3, 3)) * 0.3).astype(np.float32)),
            _init("bc", rng.standard_normal(40).astype(np.float32)),
            _init("w1", (rng.standard_normal((24, 40, 1, 1)) * 0.3).astype(np.float32)),
        ],
    )
    return _save(graph, path)


def scaled_convs(path: Path) -> Path:
    """Conv, then a scale and a shift by shape-(1,) constants and a HardSwish (PP-OCR det's
    pattern), then another Conv: the chain between the convs must stay
    channels-last, not go back to NCHW between two transposes."""
    rng = np.random.default_rng(12)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c1", "scale"], ["s"], name="scale"),
        helper.make_node("Add", ["s", "shift"], ["t"], name="shift"),
        helper.make_node("HardSwish", ["t"], ["hs"], name="hardswish"),
        helper.make_node("Conv", ["hs", "w2"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes,
        "scaled_convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 10, 10])],
        [
            _init("w1", (rng.standard_normal((16, 8, 3, 3)) * 0.3).astype(np.float32)),
            _init("scale", np.array([0.2], np.float32)),
            _init("shift", np.array([0.5], np.float32)),
            _init("w2", (rng.standard_normal((16, 16, 1, 1)) * 0.3).astype(np.float32)),
        ],
    )
    return _save(graph, path)


def gather_table(path: Path) -> Path:
    """Issue 8's model: Gather(table[1000x4] initializer, ids[1x16] int64 input)."""
    rng = np.random.default_rng(8)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"], name="gather", axis=0)],
        "gather_table",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 4])],
        [_init("table", rng.standard_normal((1000, 4)).astype(np.float32))],
    )
    return _save(graph, path)


def index_ops(path: Path) -> Path:
    """GatherElements, GatherND, ScatterND and ScatterElements on x[3x5], each with its own
    int64 index input (ge_idx, nd_idx, snd_idx, se_idx) and constant updates."""
    nodes = [
        helper.make_node("GatherElements", ["x", "ge_idx"], ["ge"], name="gather_elements", axis=1),
        helper.make_node("GatherND", ["x", "nd_idx"], ["nd"], name="gather_nd"),
        helper.make_node("ScatterND", ["x", "snd_idx", "snd_upd"], ["snd"], name="scatter_nd"),
        helper.make_node("ScatterElements", ["x", "se_idx", "se_upd"], ["se"], name="scatter_elements", axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "index_ops",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5]),
            helper.make_tensor_value_info("ge_idx", TensorProto.INT64, [3, 2]),
            helper.make_tensor_value_info("nd_idx", TensorProto.INT64, [2, 2]),
            helper.make_tensor_value_info("snd_idx", TensorProto.INT64, [2, 1]),
            helper.make_tensor_value_info("se_idx", TensorProto.INT64, [1, 5]),
        ],
        [
            helper.make_tensor_value_info("ge", TensorProto.FLOAT, [3, 2]),
            helper.make_tensor_value_info("nd", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("snd", TensorProto.FLOAT, [3, 5]),
            helper.make_tensor_value_info("se", TensorProto.FLOAT, [3, 5]),
        ],
        [
            _init("snd_upd", np.arange(100, 110, dtype=np.float32).reshape(2, 5)),
            _init("se_upd", np.arange(200, 205, dtype=np.float32).reshape(1, 5)),
        ],
    )
    return _save(graph, path)


def constant_indices(path: Path) -> Path:
    """Gather and GatherElements of an input with constant indices (negative ones too)."""
    nodes = [
        helper.make_node("Gather", ["x", "cols"], ["g"], name="gather", axis=1),
        helper.make_node("GatherElements", ["x", "picks"], ["ge"], name="gather_elements", axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "constant_indices",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 6])],
        [
            helper.make_tensor_value_info("g", TensorProto.FLOAT, [4, 3]),
            helper.make_tensor_value_info("ge", TensorProto.FLOAT, [2, 6]),
        ],
        [
            _init("cols", np.array([-1, 0, 2], np.int64)),
            _init("picks", np.array([[3, -1, 0, 1, -4, 2], [0, 0, 0, 0, 0, 0]], np.int64)),
        ],
    )
    return _save(graph, path)


def int8_block(path: Path) -> Path:
    """YOLOv8-shaped fp32 block for `dlc quantize`: a 3-channel stride-2 stem, SiLU, a 3x3
    conv, a residual and a per-channel Add, a 1x1 conv to 18 channels (no whole 16-channel block), Concat,
    Softmax over the channel axis, and AveragePool -> Flatten -> Gemm -> Softmax over 100
    classes: every QDQ group dlc runs as integer kernels."""
    rng = np.random.default_rng(8)

    def conv(name, x, cin, cout, k, stride=1):
        pad = k // 2
        return [helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], name=name,
                                 strides=[stride, stride], pads=[pad] * 4)], [
            _init(f"{name}_w", (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)),
            _init(f"{name}_b", (rng.standard_normal(cout) * 0.1).astype(np.float32))]

    def silu(x):
        return [helper.make_node("Sigmoid", [x], [f"{x}_sig"]), helper.make_node("Mul", [x, f"{x}_sig"], [f"{x}_silu"])]

    nodes, inits = [], []
    for name, x, cin, cout, k, stride in (("stem", "x", 3, 16, 3, 2), ("mid", "stem_silu", 16, 16, 3, 1),
                                          ("head", "res", 16, 18, 1, 1)):
        n, i = conv(name, x, cin, cout, k, stride)
        nodes += n + (silu(name) if name != "head" else [])
        inits += i
        if name == "mid":  # a residual Add, then a per-channel (broadcast) one
            nodes += [helper.make_node("Add", ["stem_silu", "mid_silu"], ["res0"]),
                      helper.make_node("Add", ["res0", "shift"], ["res"])]
    nodes += [helper.make_node("Concat", ["stem_silu", "mid_silu"], ["z"], axis=1),
              helper.make_node("Softmax", ["head"], ["y"], axis=1),
              helper.make_node("AveragePool", ["res"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("Flatten", ["pool"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
              helper.make_node("Softmax", ["logits"], ["p"], axis=1)]
    inits += [_init("shift", rng.standard_normal((1, 16, 1, 1)).astype(np.float32)),
              _init("fc_w", (rng.standard_normal((100, 1024)) / 32).astype(np.float32)),
              _init("fc_b", (rng.standard_normal(100) * 0.1).astype(np.float32))]
    graph = helper.make_graph(
        nodes, "int8_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 18, 16, 16]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 32, 16, 16]),
         helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 100])], inits)
    return _save(graph, path)
