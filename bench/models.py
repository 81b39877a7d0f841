"""Models the benchmarks build with onnx.helper (random weights), beside dlc.zoo's real ones.

`bert_like`: a BERT-shaped encoder. input_ids and token_type_ids int64 [1x128]: Gather from a
30522x384 word table and a 2x384 type table, a constant position Gather, then LAYERS encoder
layers of MatMul/Add, 12-head attention with Softmax, LayerNormalization and a 1536-wide
feed-forward layer. `minilm_l6`: six such layers with GELU, the shape of all-MiniLM-L6.
"""

from __future__ import annotations

from pathlib import Path

SEQ, HIDDEN, HEADS, FFN, VOCAB, POSITIONS = 128, 384, 12, 1536, 30522, 512


def bert_like(path: Path, *, layers: int, activation: str = "relu") -> Path:
    """A BERT-shaped encoder, random weights: see the module docstring. `activation` of the
    feed-forward layer: "relu", or "gelu" as BERT exports spell it (x * 0.5 * (1 + Erf(x / sqrt 2)))."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def weight(name, *shape, scale=0.05):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def layer_norm(x, name):
        gamma = const(f"{name}.gamma", np.ones(HIDDEN, np.float32))
        beta = const(f"{name}.beta", np.zeros(HIDDEN, np.float32))
        return node("LayerNormalization", [x, gamma, beta], name, axis=-1, epsilon=1e-12)

    def dense(x, name, n_in, n_out):
        y = node("MatMul", [x, weight(f"{name}.w", n_in, n_out)], f"{name}.mm")
        return node("Add", [y, weight(f"{name}.b", n_out, scale=0.01)], name)

    head_dim = HIDDEN // HEADS
    const("heads_shape", np.array([1, SEQ, HEADS, head_dim], np.int64))
    const("hidden_shape", np.array([1, SEQ, HIDDEN], np.int64))
    const("scale", np.array(1.0 / np.sqrt(head_dim), np.float32))
    const("position_ids", np.arange(SEQ, dtype=np.int64).reshape(1, SEQ))
    const("sqrt2", np.array(np.sqrt(2.0), np.float32))
    const("one", np.array(1.0, np.float32))
    const("half", np.array(0.5, np.float32))

    words = node("Gather", [weight("word_emb", VOCAB, HIDDEN), "input_ids"], "words", axis=0)
    types = node("Gather", [weight("type_emb", 2, HIDDEN), "token_type_ids"], "types", axis=0)
    positions = node("Gather", [weight("pos_emb", POSITIONS, HIDDEN), "position_ids"], "positions", axis=0)
    x = node("Add", [node("Add", [words, types], "emb.wt"), positions], "emb.sum")
    x = layer_norm(x, "emb.ln")
    for i in range(layers):
        p = f"l{i}"

        def heads(t, perm, name):
            return node("Transpose", [node("Reshape", [t, "heads_shape"], f"{name}.r")], name, perm=perm)

        q = heads(dense(x, f"{p}.q", HIDDEN, HIDDEN), [0, 2, 1, 3], f"{p}.qh")
        k = heads(dense(x, f"{p}.k", HIDDEN, HIDDEN), [0, 2, 3, 1], f"{p}.kh")
        v = heads(dense(x, f"{p}.v", HIDDEN, HIDDEN), [0, 2, 1, 3], f"{p}.vh")
        scores = node("Mul", [node("MatMul", [q, k], f"{p}.qk"), "scale"], f"{p}.scores")
        attn = node("Softmax", [scores], f"{p}.attn", axis=-1)
        ctx = node("Transpose", [node("MatMul", [attn, v], f"{p}.av")], f"{p}.ctx_t", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, "hidden_shape"], f"{p}.ctx")
        x = layer_norm(node("Add", [x, dense(ctx, f"{p}.o", HIDDEN, HIDDEN)], f"{p}.res1"), f"{p}.ln1")
        hidden = dense(x, f"{p}.ffn1", HIDDEN, FFN)
        if activation == "gelu":
            erf = node("Erf", [node("Div", [hidden, "sqrt2"], f"{p}.gelu.div")], f"{p}.gelu.erf")
            half = node("Mul", [node("Add", [erf, "one"], f"{p}.gelu.add"), "half"], f"{p}.gelu.half")
            ffn = node("Mul", [hidden, half], f"{p}.gelu")
        else:
            ffn = node("Relu", [hidden], f"{p}.relu")
        x = layer_norm(node("Add", [x, dense(ffn, f"{p}.ffn2", FFN, HIDDEN)], f"{p}.res2"), f"{p}.ln2")
    node("Identity", [x], "last_hidden_state")

    graph = helper.make_graph(
        nodes, "bert_like",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, SEQ]),
         helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, [1, SEQ])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [1, SEQ, HIDDEN])],
        inits,
    )
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def minilm_l6(path: Path) -> Path:
    return bert_like(path, layers=6, activation="gelu")


# Built by `bench/` scripts by name, next to the zoo's downloads.
SYNTHETIC = {"minilm-l6": minilm_l6}
