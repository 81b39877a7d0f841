"""Index checks: a bad index from the caller raises an error instead of reading out of bounds.

TVM lowers relax.take (ONNX Gather), gather_elements, gather_nd, scatter_nd and
scatter_elements to kernels that load and store at the index they are given, unchecked
(take in "fast" mode: "Fast mode segfaults when there are out-of-bounds indices"). The
ONNX importer maps negative indices to index + size, but an index outside [-size, size-1]
still reaches the kernel: token id 2000000000 into a 1000-row table killed the process
with SIGSEGV, where ONNX Runtime refuses it.

So before legalisation, each of those operators whose indices are not a constant gets a
small kernel in front of it that copies the indices and asserts every one is in range.
The check is in the library itself, so a C/C++ caller is protected too: the failed assert
makes the packed function return an error, which the VM raises (in Python: IndexError
with the message below). Constant indices are left alone: they cost nothing at run time.

The check loop is serial on purpose: in TVM 0.27 an assert inside a parallel loop fails
only its worker closure; the call returns no error (seen: the check passed, then the
gather crashed). The kernel is marked opaque and scheduled, so fusion and dlc's default
schedules leave it as written, and `dlc tune` does not search it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tvm

# relax operator -> the ONNX operator it usually comes from (the name users know)
ONNX_NAMES = {
    "relax.take": "Gather",
    "relax.gather_elements": "GatherElements",
    "relax.gather_nd": "GatherND",
    "relax.scatter_nd": "ScatterND",
    "relax.scatter_elements": "ScatterElements",
}
OPAQUE = 8  # relax's OpPatternKind.kOpaque: FuseOps never fuses the check into a neighbour
CHECK_KERNEL = "index_check"


@dataclass(frozen=True)
class _Bound:
    """Values at `coordinate` (None: every element) must index data axis `axis` (None: the
    flattened data): in [0, size-1], or [-size, size-1] when the kernel maps negatives."""

    axis: int | None
    lower_is_minus_extent: bool  # scatter_elements' kernel adds size to a negative index
    coordinate: int | None = None  # gather_nd / scatter_nd: slot of the last indices axis

    def extent(self, shape):
        if self.axis is not None:
            return shape[self.axis]
        size = 1
        for dim in shape:
            size = size * dim
        return size


def _bounds(call) -> list[_Bound] | None:
    """What the kernel for `call` assumes about its indices; None if it cannot go wrong."""
    name = call.op.name
    data, indices = call.args[0], call.args[1]
    if data.ty.shape is None or indices.ty.shape is None:
        return None  # unknown rank: LegalizeOps cannot lower the operator either
    rank = len(data.ty.shape)
    if name == "relax.take":
        if call.attrs.mode != "fast":  # "wrap" and "clip" cannot read out of bounds
            return None
        return [_Bound(None if call.attrs.axis is None else int(call.attrs.axis) % rank, False)]
    if name in ("relax.gather_elements", "relax.scatter_elements"):
        return [_Bound(int(call.attrs.axis) % rank, name == "relax.scatter_elements")]
    # gather_nd / scatter_nd: indices[..., j] selects on data axis first + j
    first = int(call.attrs.batch_dims) if name == "relax.gather_nd" else 0
    slots = int(indices.ty.shape[-1])
    return [_Bound(first + j, False, coordinate=j) for j in range(slots)]


def _message(op: str, what: str, bound: _Bound, shape, onnx_range: bool) -> str:
    """The assert's text. `onnx_range`: the importer already mapped negative indices, so
    the user's valid range is ONNX's [-size, size-1] even though the kernel sees [0, size-1]."""
    from tvm import tirx

    negative = onnx_range or bound.lower_is_minus_extent
    extent = bound.extent(shape)
    axis = "the flattened data" if bound.axis is None else f"data axis {bound.axis}"
    if isinstance(extent, tirx.IntImm | int):
        size = int(extent)
        valid = f"[{-size if negative else 0}, {size - 1}]"
        detail = f"{axis} has size {size}"
    else:
        valid = "[-size, size-1]" if negative else "[0, size-1]"
        detail = f"size = {axis}"
    if bound.coordinate is not None:
        what = f"coordinate {bound.coordinate} of {what}"
    return f"index out of bounds in {op}: {what} must be in {valid} ({detail})"


def _check_kernel(indices, data, shape, bounds: list[_Bound], messages: list[str]):
    """te.extern: out = indices, asserting each value is within its bound, in serial loops.
    `data` is passed (unread) only when a size is symbolic, to bind it; then the sizes come
    from its shape, else from `shape`."""
    import contextlib

    from tvm import te, tirx
    from tvm.script.ir_builder import IRBuilder
    from tvm.script.ir_builder import tirx as T

    shape = list(data.shape) if data is not None else shape
    by_slot = bounds[0].coordinate is not None
    dtype = str(indices.dtype)

    def in_range(value, bound: _Bound):
        value = tirx.Cast("int64", value)  # a uint64 past int64's range wraps negative: refused too
        extent = bound.extent(shape)
        if isinstance(extent, tirx.IntImm | int):
            extent = tirx.const(int(extent), "int64")
        else:
            extent = tirx.Cast("int64", extent)
        lower = -extent if bound.lower_is_minus_extent and not dtype.startswith("uint") else 0
        return tirx.all(value >= lower, value < extent)

    def body(ins, outs):
        src, dst = ins[0], outs[0]
        with IRBuilder() as ib:
            with T.frame_scope([T.serial(0, d) for d in (src.shape[:-1] if by_slot else src.shape)]) as ivs:
                ivs = list(ivs) if isinstance(ivs, list | tuple) else [ivs]
                slots = [[*ivs, j] for j in range(len(bounds))] if by_slot else [ivs]
                with T.seq_scope() if len(slots) > 1 else contextlib.nullcontext():
                    for index, bound, text in zip(slots, bounds, messages):
                        value = tirx.BufferLoad(src, index)
                        with T.Assert(in_range(value, bound), text, "IndexError"):
                            T.buffer_store(dst, value, index)
        return ib.get()

    inputs = [indices] if data is None else [indices, data]
    return te.extern([indices.shape], inputs, body, dtype=dtype, name=CHECK_KERNEL)


def index_check_pass() -> tvm.transform.Pass:
    """A module pass that puts an index check in front of every gather/scatter whose
    indices are not a constant (run it before LegalizeOps)."""
    import tvm
    from tvm import relax, tirx
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class InsertIndexChecks(PyExprMutator):
        params: tuple = ()

        def _source(self, indices) -> tuple[str, bool]:
            """How to name the indices, and whether they are the importer's negative-index
            normalisation where(x < 0, x + size, x) of some x (then name x)."""
            raw, onnx_range = indices, False
            value = self.lookup_binding(indices) if isinstance(indices, relax.Var) else None
            if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.where":
                cond = self.lookup_binding(value.args[0]) if isinstance(value.args[0], relax.Var) else None
                if (isinstance(cond, relax.Call) and getattr(cond.op, "name", "") == "relax.less"
                        and cond.args[0].same_as(value.args[2])):
                    raw, onnx_range = value.args[2], True
            if isinstance(raw, relax.Var) and any(raw.same_as(p) for p in self.params):
                return f"every index in '{raw.name}'", onnx_range
            return "every index", onnx_range

        def visit_call_(self, call):
            call = super().visit_call_(call)
            op = getattr(call.op, "name", None)
            if op not in ONNX_NAMES or isinstance(call.args[1], tvm.ir.expr.Constant):
                return call
            bounds = _bounds(call)
            if not bounds:
                return call
            data, indices = call.args[0], call.args[1]
            shape = list(data.ty.shape)
            what, onnx_range = self._source(indices)
            messages = [_message(ONNX_NAMES[op], what, b, shape, onnx_range) for b in bounds]
            static = all(isinstance(dim, tirx.IntImm) for dim in shape)
            scalar = len(indices.ty.shape) == 0  # one index (Gather of a row): checked as [1]
            if scalar:
                indices = self.builder_.emit(relax.op.reshape(indices, [1]))
            check = self.builder_.call_te(
                lambda ind, *sizes: _check_kernel(ind, None if static else sizes[0], shape, bounds, messages),
                indices, *([] if static else [data]), primfunc_name_hint=CHECK_KERNEL)
            gvar = check.args[0]
            func = self.builder_.get()[gvar]
            self.builder_.update_func(gvar, func.with_attrs({"op_pattern": OPAQUE, "tirx.is_scheduled": True}))
            checked = self.builder_.emit(check)
            if scalar:
                checked = self.builder_.emit(relax.op.reshape(checked, []))
            args = [data, checked, *call.args[2:]]
            return relax.Call(call.op, args, call.attrs, call.ty_args, call.span)

    @tvm.transform.module_pass(opt_level=0, name="DlcIndexChecks")
    def insert(mod, _ctx):
        rewriter = InsertIndexChecks(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.params = tuple(func.params)
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()

    return insert
