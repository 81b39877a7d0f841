"""Graph passes: simplify, choose per-target layouts, legalise to TIR, fuse into kernels.

The sequence after graph simplification (dispatch, LegalizeOps, AnnotateTIROpPattern,
FoldConstant, FuseOps, FuseTIR) is the one MetaSchedule's `compile_relax` runs before it
looks kernels up in a tuning database, so tasks extracted from `OptimizedModel.mod` have
the same workload keys as the kernels `build` later compiles.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from dlc.errors import BuildError, InputError

if TYPE_CHECKING:
    import tvm

    from dlc.frontend import ImportedModel
    from dlc.target import TargetSpec

log = logging.getLogger(__name__)

PAD_FEATURES = True  # _pad_output_features; off only for A/B builds


@dataclass(frozen=True)
class OptimizedModel:
    """A Relax module whose operators are all fused TIR kernels, ready to schedule and build."""

    source: ImportedModel
    mod: tvm.IRModule
    kernels: int
    # The layout `optimize` chose: "NHWC", or "model's own (<why>)" for the build to report.
    layout: str = "not recorded"
    # Kernel name -> labels of the ONNX nodes it computes (dlc.nodemap), for profiles.
    kernel_nodes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


# Convolutions run channels-last on CPUs: the output channel becomes the innermost,
# contiguous axis, so the default conv schedule (dlc.schedules.contraction) vectorises
# over it with HWIO weights as plain vector loads and the input pixel as a broadcast.
# Measured on nudenet 320n (field notes): NCHW 72-76 ms, NHWC/HWIO 42-51 ms, NHWC/OHWI 91.
# conv2d_transpose is pinned to NCHW: it would otherwise follow its NHWC input, and its
# legalisation only handles NCHW (PP-OCR det's upsampling then fails to build).
CPU_CONV_LAYOUT = {"relax.nn.conv2d": ["NHWC", "HWIO"], "relax.nn.conv2d_transpose": ["NCHW", "IOHW"]}


def _fast_math_pass():
    """exp, sigmoid, tanh, erf and softmax on fp32 as TVM's polynomial approximations
    (topi.fast_exp etc.: arithmetic only, so they vectorise). The exact forms lower to one
    scalar libm `expf` call per element: a YOLOv8 conv with its SiLU epilogue spent most
    of its time there. ONNX Runtime's MLAS approximates the same way; the error is ~1e-7
    relative, far inside verify's tolerance."""
    import tvm
    from tvm import te, topi
    from tvm.relax.expr_functor import PyExprMutator, mutator

    def fast_sigmoid(x):
        e = topi.fast_exp(topi.negative(x))
        one = tvm.tirx.const(1.0, x.dtype)
        return te.compute(x.shape, lambda *i: one / (one + e(*i)), name="fast_sigmoid")

    rewrites = {
        "relax.exp": topi.fast_exp,
        "relax.sigmoid": fast_sigmoid,
        "relax.tanh": topi.fast_tanh,
        "relax.erf": topi.fast_erf,
        "relax.nn.softmax": lambda x, axis: topi.nn.fast_softmax(x, axis),
    }

    @mutator
    class FastMath(PyExprMutator):
        def visit_call_(self, call):
            name = getattr(call.op, "name", None)
            dtype = getattr(call.ty, "dtype", None)
            if name not in rewrites or dtype != "float32":
                return super().visit_call_(call)
            args = [self.visit_expr(call.args[0])]
            if name == "relax.nn.softmax":
                args.append(int(call.attrs.axis))
            return self.builder_.call_te(rewrites[name], *args, primfunc_name_hint=name.split(".")[-1])

    return _relax_rewrite_pass(FastMath, "DlcFastMath")


def _fold_constant_transposes():
    """Fold `permute_dims(constant)` with numpy. ConvertLayout leaves one per weight and
    bias; FoldConstant would build and run a TVM kernel for each (4.8 s of PP-OCR cls's
    compile, against ~0.1 s here)."""
    import numpy as np
    from tvm import relax

    def fold(call, _builder):
        value = _constant_array(call.args[0])
        if value is None:
            return None
        axes = call.attrs.axes
        # The dtype said: relax.const narrows a float64 array to float32 by default.
        return relax.const(np.ascontiguousarray(
            np.transpose(value, None if axes is None else [int(a) for a in axes])), str(value.dtype))

    return _rewrite_calls("relax.permute_dims", fold, "DlcFoldConstantTransposes")


def _conv_transpose_as_conv():
    """ConvTranspose whose kernel equals its stride (no padding, dilation, groups or output
    padding; the upsampling of U-Nets and PP-OCR det) as a 1x1 conv2d to C_out x k x k
    channels and a pixel shuffle (depth-to-space): the same sums, without the stride-dilated input TVM's
    conv2d_transpose multiplies through (3/4 zeros at stride 2), and the conv2d gets the
    channels-last rule."""
    import numpy as np
    from tvm import relax

    def as_conv(call, builder):
        data, weight = call.args
        attrs = call.attrs
        w = _constant_array(weight)  # [C_in, C_out, k, k]
        if w is None or w.ndim != 4:
            return None
        k = list(w.shape[2:])
        plain = (
            str(attrs.data_layout) == "NCHW" and str(attrs.kernel_layout) == "IOHW"
            and str(attrs.out_layout) == "NCHW" and int(attrs.groups) == 1
            and k[0] == k[1] and [int(s) for s in attrs.strides] == k
            and all(int(p) == 0 for p in attrs.padding)
            and all(int(p) == 0 for p in attrs.output_padding)
            and all(int(d) == 1 for d in attrs.dilation)
        )
        if not plain:
            return None
        c_in, c_out = w.shape[:2]
        # Output channel (co, a, b) -> co*k*k + a*k + b: pixel_shuffle's order.
        w1x1 = np.ascontiguousarray(w.transpose(1, 2, 3, 0).reshape(c_out * k[0] * k[1], c_in, 1, 1))
        out_dtype = attrs.out_dtype if attrs.out_dtype not in (None, "", "void") else str(w.dtype)
        # Pixel shuffle as reshape / transpose / reshape (topi has no pixel_shuffle to
        # legalise relax.nn.pixel_shuffle with in TVM 0.27).
        y = builder.emit(relax.op.nn.conv2d(data, relax.const(w1x1), out_dtype=str(out_dtype)))
        n, _, h, width = (int(d) for d in y.ty.shape)
        y = builder.emit(relax.op.reshape(y, [n, c_out, k[0], k[1], h, width]))
        y = builder.emit(relax.op.permute_dims(y, [0, 1, 4, 2, 5, 3]))
        return relax.op.reshape(y, [n, c_out, h * k[0], width * k[1]])

    return _rewrite_calls("relax.nn.conv2d_transpose", as_conv, "DlcConvTransposeAsConv")


def _pad_output_features(multiple: int):
    """Matmuls and channels-last convs with constant weights whose output features are not a
    whole number of the widest vector register (PP-OCRv4 rec's 6625-class head, det's
    24-channel convs) compute `multiple`-padded features with zero weights, then slice. The
    contraction rule vectorises over that axis: an odd width leaves it partial vectors or
    ymm where zmm would do (rec's head ran at 66 GFLOP/s). The slice joins the next kernel's
    loops, or costs one copy where the next kernel is itself a contraction."""
    import numpy as np
    import tvm
    from tvm import relax

    def padded(call, builder):
        if len(call.args) != 2:
            return None
        data, weight = call.args
        w = _constant_array(weight)
        if w is None or w.ndim < 2:
            return None
        attrs = call.attrs
        if call.op.name == "relax.nn.conv2d" and not (
            str(attrs.data_layout) == "NHWC" and str(attrs.kernel_layout) == "HWIO"
            and str(attrs.out_layout) == "NHWC" and int(attrs.groups) == 1
        ):
            return None
        features = w.shape[-1]
        target = -(-features // multiple) * multiple
        # Only when the waste is small: 24 -> 32 channels (a third more sums) still ran
        # faster in zmm than 24 in ymm; 8 -> 16 would double the work.
        if features < multiple or target == features or target * 3 > features * 4:
            return None
        wide = np.pad(w, [(0, 0)] * (w.ndim - 1) + [(0, target - features)])
        y = builder.emit(relax.Call(call.op, [data, relax.const(wide)], attrs))
        axis = len(y.ty.shape) - 1
        return relax.op.strided_slice(y, axes=[axis], begin=[0], end=[features])

    return tvm.transform.Sequential([
        relax.transform.CanonicalizeBindings(),  # the weights as constants, not variables
        _rewrite_calls("relax.matmul", padded, "DlcPadMatmulFeatures"),
        _rewrite_calls("relax.nn.conv2d", padded, "DlcPadConvFeatures"),
    ], name="DlcPadOutputFeatures")


# Elementwise binary operators whose size-1 constant operand can be a scalar.
_BROADCAST_BINARY = ("add", "subtract", "multiply", "divide", "maximum", "minimum", "power")


def _size_one_constants_as_scalars():
    """`x * c` with c a constant of shape (1,) (PP-OCR det's HardSigmoid and scales) as a
    rank-0 constant: ConvertLayout cannot move a rank-1 operand to another layout, so each
    such chain ran in NCHW between NHWC convs, with a transpose on either side (~5 ms of
    det's 25). The result is the same: the other operand has at least its rank. Clip, which
    has no layout rule either, becomes maximum and minimum with scalar bounds."""
    import tvm
    from tvm import relax

    def scalar(call, _builder):
        args = list(call.args)
        changed = False
        for i, arg in enumerate(args):
            value = _constant_array(arg)
            other = args[1 - i]
            if (value is not None and value.ndim >= 1 and value.size == 1
                    and len(getattr(other.ty, "shape", None) or ()) >= value.ndim):
                args[i] = relax.const(value.reshape(()), str(value.dtype))
                changed = True
        return relax.Call(call.op, args, call.attrs) if changed else None

    def clip_as_max_min(call, builder):
        x, low, high = call.args
        dtype = str(getattr(x.ty, "dtype", ""))
        bounds = [getattr(b, "value", None) for b in (low, high)]
        if not dtype.startswith("float") or not all(isinstance(b, (int, float)) for b in bounds):
            return None
        floor = builder.emit(relax.op.maximum(x, relax.const(float(bounds[0]), dtype)))
        return relax.op.minimum(floor, relax.const(float(bounds[1]), dtype))

    return tvm.transform.Sequential(
        [_rewrite_calls(f"relax.{op}", scalar, f"DlcScalar_{op}") for op in _BROADCAST_BINARY]
        + [_rewrite_calls("relax.clip", clip_as_max_min, "DlcClipAsMaxMin")],
        name="DlcSizeOneConstantsAsScalars")


def _constant_array(expr):
    """The numpy value of a tensor constant, or None (TVM's IntImm/FloatImm are Constants too)."""
    import tvm

    value = getattr(expr, "value", None) if isinstance(expr, tvm.ir.expr.Constant) else None
    return value.numpy() if hasattr(value, "numpy") else None


def _rewrite_calls(op_name: str, rewrite, name: str, *, bindings: bool = False):
    """A module pass that offers every call of `op_name` (its arguments already rewritten)
    to `rewrite(call, builder)`, which returns the replacement or None to keep the call.
    With `bindings`, `rewrite(call, builder, lookup)`: `lookup(var)` is the value a variable
    is bound to, for rewrites that match a pattern of producers."""
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class RewriteCalls(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if getattr(call.op, "name", None) != op_name:
                return call
            extra = (self.lookup_binding,) if bindings else ()
            replacement = rewrite(call, self.builder_, *extra)
            return call if replacement is None else replacement

    return _relax_rewrite_pass(RewriteCalls, name)


def _relax_rewrite_pass(mutator_class, name: str):
    """A module pass that runs a PyExprMutator over every Relax function."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name=name)
    def rewrite(mod, _ctx):
        rewriter = mutator_class(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()

    return rewrite


def _layout_passes(target: TargetSpec | None, *, layout: bool = True):
    """`layout`: convert convolutions to CPU_CONV_LAYOUT; `optimize` decides when it is worth it."""
    from tvm import relax

    if target is None or target.kind != "llvm":
        return []
    convert = [
        relax.transform.ConvertLayout(CPU_CONV_LAYOUT),
        _fold_constant_transposes(),  # the weights and biases, once, at compile time
        relax.transform.DeadCodeElimination(["main"]),
    ]
    from dlc.schedules.cpu import cpu_params

    from dlc.int8 import fused_multiply_adds, vnni_convs

    multiple = cpu_params(target).widest_lanes
    pad = [_pad_output_features(multiple)] if PAD_FEATURES else []
    # Fast math, the VNNI convs and the fmas after ConvertLayout, which cannot see through
    # the call_tir they make.
    return ((convert if layout else []) + pad + (vnni_convs(target) if layout else []) + fused_multiply_adds()
            + [_fast_math_pass()])


def _graph_ops(mod: tvm.IRModule) -> set[str]:
    """The names of the operators the module's Relax functions call."""
    from tvm import relax

    found: set[str] = set()

    def visit(expr):
        if isinstance(expr, relax.Call):
            found.add(getattr(expr.op, "name", ""))

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    found.discard("")
    return found


def _unlowered_layout_ops(mod: tvm.IRModule) -> list[str]:
    """Layout-carrying operators (relax.nn.*, relax.image.*) legalisation left as graph ops."""
    return sorted(op for op in _graph_ops(mod) if op.startswith(("relax.nn.", "relax.image.")))


def _layout_plan(mod: tvm.IRModule, target: TargetSpec) -> str:
    """"NHWC" where channels-last is worth trying, else "model's own (why not)"."""
    ops = _graph_ops(mod)
    if target.kind != "llvm":
        return f"model's own (no layout rule for '{target.kind}' targets)"
    if "relax.nn.conv2d" not in ops:
        return "model's own (no conv2d to gain from)"
    if "relax.stack" in ops:
        # The importer's variadic Max/Min/Sum/Mean. Its layout rule raises; on scalars it
        # divides by zero in C++ (SIGFPE), which no except clause catches.
        log.warning("channels-last layout cannot convert a model with relax.stack (variadic "
                    "Max/Min/Sum/Mean); keeping the model's layout")
        return "model's own (ConvertLayout cannot handle relax.stack)"
    return "NHWC"


def _graph_passes(target: TargetSpec | None = None, *, layout: bool = True):
    from tvm import relax

    from dlc.bounds import index_check_pass
    from dlc.int8 import integer_qdq

    return [
        integer_qdq(target),  # before FoldConstant turns int8 weights into fp32 ones
        relax.transform.DecomposeOpsForInference(),  # batch norm etc. to elementwise ops
        relax.transform.CanonicalizeBindings(),
        relax.transform.FoldConstant(),
        relax.transform.DeadCodeElimination(["main"]),
        _conv_transpose_as_conv(),
        _size_one_constants_as_scalars(),
        *_layout_passes(target, layout=layout),
        index_check_pass(),  # after FoldConstant: only non-constant indices get a check
    ]


def _fusion_passes(target: tvm.target.Target):
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    return [
        *cpu.library_dispatch_passes(target),
        *cpu.legalize_passes(target),  # LegalizeOps ... FuseOps, FuseTIR
        relax.transform.DeadCodeElimination(["main"]),
    ]


def count_kernels(mod: tvm.IRModule) -> int:
    from tvm.tirx import PrimFunc

    return sum(isinstance(func, PrimFunc) for func in mod.functions.values())


def _dump(mod: tvm.IRModule, dump_dir: Path | None, name: str) -> None:
    if dump_dir is None:
        return
    try:
        dump_dir.mkdir(parents=True, exist_ok=True)
        (dump_dir / name).write_text(mod.script(show_meta=False))
    except OSError as err:
        raise InputError(
            f"cannot write IR to '{dump_dir}': {err.strerror}", hint="pick a writable --dump-ir DIR"
        ) from err


def optimize(
    imported: ImportedModel, target: TargetSpec, *, dump_ir: Path | None = None
) -> OptimizedModel:
    """Simplify the imported graph and fuse it into TIR kernels for `target`.

    Convolutions go channels-last only where there is a conv2d to gain from. TVM's
    ConvertLayout runs the layout rule of every operator in the module, and many of those
    raise (or, for relax.stack of scalars, kill the process with SIGFPE), so a conv-less
    graph skips it, and a graph it fails on keeps the model's own layout.
    """
    import tvm

    from dlc.nodemap import FusionSnapshot, keep_names, kernel_nodes

    tvm_target = target.to_tvm()
    mod = imported.mod
    snapshot = FusionSnapshot()
    _dump(mod, dump_ir, "01-imported.py")
    layout = _layout_plan(mod, target)

    def run(convert: bool):
        passes = keep_names(_graph_passes(target, layout=convert)) + _fusion_passes(tvm_target)
        return tvm.transform.Sequential(passes)(mod)

    try:
        with tvm_target, tvm.transform.PassContext(opt_level=3, instruments=[snapshot.instrument]):
            fused = None
            if layout == "NHWC":
                try:
                    fused = run(True)
                except Exception as err:  # a layout rule that raises: keep the model unconverted
                    reason = (str(err).strip().splitlines() or [type(err).__name__])[-1]
                    log.warning("channels-last layout failed (%s); keeping the model's layout", reason)
                    layout = f"model's own (channels-last failed: {reason})"
                else:
                    left = _unlowered_layout_ops(fused)
                    if left:
                        # An op whose legalisation does not take the channels-last layout: keep
                        # the model's own layout rather than fail the build (slower convs).
                        log.warning("channels-last layout leaves %s without a kernel; keeping the "
                                    "model's layout", left)
                        layout = f"model's own (channels-last leaves {', '.join(left)} without a kernel)"
                        fused = None
            mod = fused if fused is not None else run(False)
    except Exception as err:
        raise BuildError(
            f"graph passes failed: {(str(err).strip().splitlines() or [type(err).__name__])[-1]}",
            hint="run with --debug and --dump-ir DIR to see the IR they failed on",
        ) from err
    _dump(mod, dump_ir, "02-fused.py")
    kernels = count_kernels(mod)
    log.info("fused into %d kernels, layout %s", kernels, layout)
    labels = imported.node_labels
    nodes = kernel_nodes(snapshot, _kernel_names(mod))
    named = {k: tuple(labels[i] for i in v if i < len(labels)) for k, v in nodes.items()}
    return OptimizedModel(source=imported, mod=mod, kernels=kernels, layout=layout, kernel_nodes=named)


def _kernel_names(mod: tvm.IRModule) -> list[str]:
    from tvm.tirx import PrimFunc

    return [gvar.name_hint for gvar, func in mod.functions.items() if isinstance(func, PrimFunc)]
