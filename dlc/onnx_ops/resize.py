"""Resize where TVM's kernel is wrong or refuses."""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from dlc.onnx_ops.common import attr_str, constant, dtype_of, static_shape, tvm_converter


class Resize(OnnxOpConverter):
    """TVM's Resize turns `scales` into sizes and then maps coordinates with out/in, which is
    not the scale when in*scale is not whole (downsampling by 0.6), and it has no `axes`,
    `keep_aspect_ratio_policy`, `antialias` or half_pixel_symmetric. Those cases, with float
    data and constant roi/scales/sizes, become one small matrix per resized axis, built at
    import by ONNX's own reference interpolation applied to the identity (interpolation is
    linear in the data and separable by axis), then a matmul along that axis. Everything
    else (the usual 2x nearest/linear upsample) stays TVM's resize kernel."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        return tvm_converter("Resize", 10)(bb, inputs, attr, params)

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        plan = cls._plan(inputs, attr)
        if plan is None:
            return tvm_converter("Resize", 18)(bb, inputs, attr, params)
        return cls._by_matrices(bb, inputs[0], plan)

    @classmethod
    def _plan(cls, inputs, attr):
        """[(axis, matrix, bias)] when TVM's kernel would be wrong or refuse, else None."""
        x = inputs[0]
        if dtype_of(x) not in ("float32", "float64", "float16"):
            return None
        shape = static_shape(x, "Resize input")
        rank = len(shape)
        consts = [constant(inputs[i]) if len(inputs) > i and inputs[i] is not None else None for i in (1, 2, 3)]
        given = [len(inputs) > i and inputs[i] is not None for i in (1, 2, 3)]
        if any(g and c is None for g, c in zip(given, consts)):
            return None  # a run-time roi/scales/sizes: TVM's converter says what it cannot take
        roi, scales, sizes = (c if c is not None and c.size else None for c in consts)
        axes = attr.get("axes")
        policy = attr_str(attr, "keep_aspect_ratio_policy", "stretch")
        coord = attr_str(attr, "coordinate_transformation_mode", "half_pixel")
        antialias = attr.get("antialias", 0)
        axes = [a % rank for a in axes] if axes is not None else list(range(rank))
        scales_full = [1.0] * rank
        sizes_full = list(shape)
        roi_full = [0.0] * rank + [1.0] * rank
        if scales is not None:
            for i, a in enumerate(axes):
                scales_full[a] = float(scales[i])
        if sizes is not None:
            for i, a in enumerate(axes):
                sizes_full[a] = int(sizes[i])
        if roi is not None:
            for i, a in enumerate(axes):
                roi_full[a], roi_full[rank + a] = float(roi[i]), float(roi[len(axes) + i])
        if sizes is not None:
            scales_full = [sizes_full[i] / shape[i] for i in range(rank)]
            if policy != "stretch":
                pick = min if policy == "not_larger" else max
                scale = pick(scales_full[a] for a in axes)
                scales_full = [scale if i in axes else 1.0 for i in range(rank)]
                sizes_full = [int(scale * shape[i] + 0.5) if i in axes else shape[i] for i in range(rank)]
        else:
            sizes_full = [int(scales_full[i] * shape[i]) for i in range(rank)]
        inexact = any(sizes_full[i] != scales_full[i] * shape[i] for i in range(rank))
        tvm_can = (
            not antialias and coord != "half_pixel_symmetric" and attr.get("axes") is None
            and policy == "stretch" and not inexact and rank in (3, 4, 5)
            and all(sizes_full[i] == shape[i] for i in range(2)) and min(sizes_full[2:]) > 1
        )
        if tvm_can:
            return None
        coeffs = cls._coefficients(attr, attr_str(attr, "mode", "nearest"), antialias)
        plan = []
        for a in range(rank):
            trivial_roi = roi_full[a] == 0.0 and roi_full[rank + a] == 1.0
            if scales_full[a] == 1.0 and sizes_full[a] == shape[a] and trivial_roi:
                continue
            plan.append((a, *cls._axis_matrix(shape[a], scales_full[a], sizes_full[a], coeffs,
                                               [roi_full[a], roi_full[rank + a]], coord, attr)))
        return plan

    @staticmethod
    def _coefficients(attr, mode, antialias):
        from onnx.reference.ops import op_resize as ref

        if mode == "nearest":
            nearest = attr_str(attr, "nearest_mode", "round_prefer_floor")
            return lambda ratio, scale: ref._nearest_coeffs(ratio, mode=nearest)
        if mode == "cubic":
            a = attr.get("cubic_coeff_a", -0.75)
            fn = ref._cubic_coeffs_antialias if antialias else ref._cubic_coeffs
            return lambda ratio, scale: fn(ratio, scale, A=a)
        return ref._linear_coeffs_antialias if antialias else ref._linear_coeffs

    @staticmethod
    def _axis_matrix(length, scale, out_length, coeffs, roi, coord, attr):
        """out = M @ in + b along one axis: M from the identity, b (extrapolated positions of
        tf_crop_and_resize) from zeros."""
        from onnx.reference.ops import op_resize as ref

        def interpolate(data, extrapolation):
            return ref._interpolate_1d_along_axis(
                data, 0, scale, out_length, coeffs, roi=roi, extrapolation_value=extrapolation,
                coordinate_transformation_mode=coord, exclude_outside=bool(attr.get("exclude_outside", 0)),
            )

        matrix = interpolate(np.eye(length), 0.0)
        bias = interpolate(np.zeros((length, 1)), attr.get("extrapolation_value", 0.0))[:, 0]
        return matrix, (bias if np.any(bias) else None)

    @staticmethod
    def _by_matrices(bb, x, plan):
        op = relax.op
        dtype = dtype_of(x)
        rank = len(static_shape(x, "Resize input"))
        for axis, matrix, bias in plan:
            order = [i for i in range(rank) if i != axis] + [axis]
            back = [order.index(i) for i in range(rank)]
            moved = bb.emit(op.permute_dims(x, order))
            y = op.matmul(moved, relax.const(matrix.T.astype(dtype), dtype))
            if bias is not None:
                y = op.add(y, relax.const(bias.astype(dtype), dtype))
            x = bb.emit(op.permute_dims(bb.emit(y), back))
        return x
