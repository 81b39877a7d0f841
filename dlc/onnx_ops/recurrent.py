"""RNN, GRU and LSTM, unrolled over the fixed sequence length."""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from dlc.onnx_ops.common import ConstantExpr, dtype_of, static_shape


def _activation(bb: relax.BlockBuilder, name: str, alpha: float | None, beta: float | None, dtype: str):
    """The ONNX recurrent-net activation `name` as a function of one Relax expression."""
    op = relax.op
    key = name.lower()

    def const(value):
        return relax.const(value, dtype)

    table = {
        "sigmoid": lambda x: op.sigmoid(x),
        "tanh": lambda x: op.tanh(x),
        "relu": lambda x: op.nn.relu(x),
        "hardsigmoid": lambda x: op.clip(
            op.add(op.multiply(const(0.2 if alpha is None else alpha), x), const(0.5 if beta is None else beta)),
            0.0, 1.0),
        "leakyrelu": lambda x: op.nn.leakyrelu(x, 0.01 if alpha is None else alpha),
        "affine": lambda x: op.add(op.multiply(const(1.0 if alpha is None else alpha), x),
                                   const(0.0 if beta is None else beta)),
        "scaledtanh": lambda x: op.multiply(const(1.0 if alpha is None else alpha),
                                            op.tanh(op.multiply(const(1.0 if beta is None else beta), x))),
        "softsign": lambda x: op.divide(x, op.add(const(1.0), op.abs(x))),
        "softplus": lambda x: op.log(op.add(const(1.0), op.exp(x))),
        "elu": lambda x: op.where(op.greater(x, const(0.0)), x,
                                  op.multiply(const(1.0 if alpha is None else alpha),
                                              op.subtract(op.exp(x), const(1.0)))),
        "thresholdedrelu": lambda x: op.where(op.greater(x, const(1.0 if alpha is None else alpha)), x,
                                              op.zeros_like(x)),
    }
    if key not in table:
        raise ValueError(f"recurrent activation {name!r} is not supported")
    fn = table[key]
    return lambda x: bb.emit(fn(x))


class _Recurrent(OnnxOpConverter):
    """Shared unrolling for RNN, GRU and LSTM: per direction, the input projection of every
    step in one matmul, then one step at a time (the hidden state feeds the next step)."""

    gates = 1
    default_activations: tuple[str, ...] = ()

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):  # v14's `layout` is read as an attribute
        return cls._convert(bb, inputs, attr)

    @classmethod
    def _convert(cls, bb, inputs, attr):
        op = relax.op
        name = cls.__name__
        x, w, r = inputs[0], inputs[1], inputs[2]
        bias = inputs[3] if len(inputs) > 3 else None
        seq_lens = inputs[4] if len(inputs) > 4 else None
        init_h = inputs[5] if len(inputs) > 5 else None
        extra = list(inputs[6:])  # LSTM: initial_c, P
        layout = attr.get("layout", 0)
        direction = attr.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        hidden = attr.get("hidden_size")
        clip = attr.get("clip")
        if layout == 1:  # batch-major: [batch, seq, input] -> [seq, batch, input]
            x = bb.emit(op.permute_dims(x, [1, 0, 2]))
        seq, batch, _ = static_shape(x, f"{name} input X")
        num_dirs, gate_rows, _ = static_shape(w, f"{name} weight W")
        hidden = hidden or gate_rows // cls.gates
        if seq_lens is not None and _is_full_length(seq_lens, seq):
            seq_lens = None
        dtype = dtype_of(x)

        names = attr.get("activations")
        names = [n.decode() if isinstance(n, bytes) else n for n in names] if names else []
        per_dir = len(cls.default_activations)
        if not names:
            names = list(cls.default_activations) * num_dirs
        alphas = list(attr.get("activation_alpha", []))
        betas = list(attr.get("activation_beta", []))
        acts = [
            _activation(bb, n, alphas[i] if i < len(alphas) else None, betas[i] if i < len(betas) else None,
                        dtype)
            for i, n in enumerate(names)
        ]

        def clipped(value):
            return bb.emit(op.clip(value, -clip, clip)) if clip is not None else value

        ys, last_h, last_c = [], [], []
        for d in range(num_dirs):
            reverse = direction == "reverse" or (direction == "bidirectional" and d == 1)
            w_d = bb.emit(op.squeeze(op.strided_slice(w, [0], [d], [d + 1]), [0]))
            r_d = bb.emit(op.squeeze(op.strided_slice(r, [0], [d], [d + 1]), [0]))
            # Every step's input projection at once: [seq*batch, input] x [input, gates*H].
            flat = op.reshape(x, [seq * batch, -1])
            xw = op.matmul(flat, op.permute_dims(w_d, [1, 0]))
            if bias is not None:
                b_d = op.squeeze(op.strided_slice(bias, [0], [d], [d + 1]), [0])
                w_bias = op.strided_slice(b_d, [0], [0], [cls.gates * hidden])
                xw = op.add(xw, w_bias)
                r_bias = bb.emit(op.strided_slice(b_d, [0], [cls.gates * hidden], [2 * cls.gates * hidden]))
            else:
                r_bias = None
            xw = bb.emit(op.reshape(xw, [seq, batch, cls.gates * hidden]))
            r_t = bb.emit(op.permute_dims(r_d, [1, 0]))
            state = {
                "h": _initial(bb, init_h, d, batch, hidden, dtype),
                "c": _initial(bb, extra[0] if extra else None, d, batch, hidden, dtype),
            }
            peep = None
            if len(extra) > 1 and extra[1] is not None:
                peep = bb.emit(op.squeeze(op.strided_slice(extra[1], [0], [d], [d + 1]), [0]))
            outs = []
            steps = range(seq - 1, -1, -1) if reverse else range(seq)
            for t in steps:
                x_t = bb.emit(op.squeeze(op.strided_slice(xw, [0], [t], [t + 1]), [0]))
                new = cls._step(bb, x_t, r_t, r_bias, state, peep, acts[d * per_dir:(d + 1) * per_dir],
                                hidden, clipped, attr)
                if seq_lens is None:
                    state = new
                    outs.append(state["h"])
                    continue
                # Past a batch entry's length its state holds and its output is zero; a reverse
                # pass starts, in effect, at that entry's own last step.
                live = bb.emit(op.expand_dims(op.less(relax.const(t, dtype_of(seq_lens)), seq_lens), [1]))
                state = {k: bb.emit(op.where(live, new[k], state[k])) for k in state}
                outs.append(bb.emit(op.where(live, new["h"], op.zeros_like(new["h"]))))
            if reverse:
                outs.reverse()
            ys.append(bb.emit(op.stack(outs, axis=0)))  # [seq, batch, H]
            last_h.append(state["h"])
            last_c.append(state["c"])
        y = bb.emit(op.stack(ys, axis=1))  # [seq, num_dirs, batch, H]
        y_h = bb.emit(op.stack(last_h, axis=0))
        y_c = bb.emit(op.stack(last_c, axis=0))
        if layout == 1:
            y = bb.emit(op.permute_dims(y, [2, 0, 1, 3]))
            y_h = bb.emit(op.permute_dims(y_h, [1, 0, 2]))
            y_c = bb.emit(op.permute_dims(y_c, [1, 0, 2]))
        return relax.Tuple([y, y_h, y_c] if cls is LSTM else [y, y_h])

    @staticmethod
    def _gate(bb, value, index, hidden):
        return bb.emit(relax.op.strided_slice(value, [1], [index * hidden], [(index + 1) * hidden]))


def _is_full_length(seq_lens: relax.Expr, seq: int) -> bool:
    """sequence_lens that only restate the sequence length: no masking needed."""
    if isinstance(seq_lens, ConstantExpr):
        return bool(np.all(seq_lens.value.numpy() == seq))
    return False


def _initial(bb, value, d, batch, hidden, dtype):
    if value is None:
        return bb.emit(relax.op.zeros((batch, hidden), dtype))
    return bb.emit(relax.op.squeeze(relax.op.strided_slice(value, [0], [d], [d + 1]), [0]))


class RNN(_Recurrent):
    """Not in TVM 0.27's Relax importer. H = f(X W^T + H R^T + Wb + Rb)."""

    gates = 1
    default_activations = ("Tanh",)

    @classmethod
    def _step(cls, bb, x_t, r_t, r_bias, state, peep, acts, hidden, clipped, attr):
        op = relax.op
        pre = op.add(x_t, op.matmul(state["h"], r_t))
        if r_bias is not None:
            pre = op.add(pre, r_bias)
        return {"h": acts[0](clipped(bb.emit(pre))), "c": state["c"]}


class GRU(_Recurrent):
    """Not in TVM 0.27's Relax importer. Gates z, r, h (ONNX order), linear_before_reset."""

    gates = 3
    default_activations = ("Sigmoid", "Tanh")

    @classmethod
    def _step(cls, bb, x_t, r_t, r_bias, state, peep, acts, hidden, clipped, attr):
        op = relax.op
        f, g = acts
        h = state["h"]
        hr = bb.emit(op.matmul(h, r_t))
        if r_bias is not None:
            hr = bb.emit(op.add(hr, r_bias))
        x_z, x_r, x_h = (cls._gate(bb, x_t, i, hidden) for i in range(3))
        h_z, h_r, h_h = (cls._gate(bb, hr, i, hidden) for i in range(3))
        z = f(clipped(bb.emit(op.add(x_z, h_z))))
        reset = f(clipped(bb.emit(op.add(x_r, h_r))))
        if attr.get("linear_before_reset", 0):
            candidate = op.add(x_h, op.multiply(reset, h_h))
        else:
            # (r * H) R_h^T + Rb_h: the reset applies before the recurrent projection.
            r_h = op.strided_slice(r_t, [1], [2 * hidden], [3 * hidden])
            candidate = op.add(x_h, op.matmul(op.multiply(reset, h), r_h))
            if r_bias is not None:
                candidate = op.add(candidate, op.strided_slice(r_bias, [0], [2 * hidden], [3 * hidden]))
        h_new = g(clipped(bb.emit(candidate)))
        one = relax.const(1.0, dtype_of(h))
        h_next = bb.emit(op.add(op.multiply(op.subtract(one, z), h_new), op.multiply(z, h)))
        return {"h": h_next, "c": state["c"]}


class LSTM(_Recurrent):
    """Not in TVM 0.27's Relax importer (silero VAD and most speech models need it).
    Gates i, o, f, c (ONNX order), peepholes, input_forget, clip."""

    gates = 4
    default_activations = ("Sigmoid", "Tanh", "Tanh")

    @classmethod
    def _step(cls, bb, x_t, r_t, r_bias, state, peep, acts, hidden, clipped, attr):
        op = relax.op
        f, g, h_act = acts
        h, c = state["h"], state["c"]
        pre = op.add(x_t, op.matmul(h, r_t))
        if r_bias is not None:
            pre = op.add(pre, r_bias)
        pre = bb.emit(pre)
        x_i, x_o, x_f, x_c = (cls._gate(bb, pre, i, hidden) for i in range(4))
        if peep is not None:
            p_i, p_o, p_f = (bb.emit(op.strided_slice(peep, [0], [i * hidden], [(i + 1) * hidden]))
                             for i in range(3))
            x_i = bb.emit(op.add(x_i, op.multiply(p_i, c)))
            x_f = bb.emit(op.add(x_f, op.multiply(p_f, c)))
        i_gate = f(clipped(x_i))
        if attr.get("input_forget", 0):
            f_gate = bb.emit(op.subtract(relax.const(1.0, dtype_of(c)), i_gate))
        else:
            f_gate = f(clipped(x_f))
        c_tilde = g(clipped(x_c))
        c_next = bb.emit(op.add(op.multiply(f_gate, c), op.multiply(i_gate, c_tilde)))
        if peep is not None:
            x_o = bb.emit(op.add(x_o, op.multiply(p_o, c_next)))
        o_gate = f(clipped(x_o))
        h_next = bb.emit(op.multiply(o_gate, h_act(c_next)))
        return {"h": h_next, "c": c_next}
