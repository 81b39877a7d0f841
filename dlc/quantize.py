"""int8 models by onnxruntime's static quantisation (QDQ format), calibrated on the user's inputs.

ONNX Runtime's `quantize_static` is the reference tool for this, so dlc does not write its
own: it fixes the input shapes first (as a build does), feeds the calibration samples
(a folder of .npz files, or seeded random inputs with a warning: scales fitted to noise
clip real activations), writes the QDQ model atomically, and then says what it did: which
operators now run between DequantizeLinear and QuantizeLinear pairs, and how far ONNX
Runtime's int8 outputs are from its fp32 outputs on a calibration sample.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from dlc.errors import InputError, ModelImportError

if TYPE_CHECKING:
    import numpy as np
    import onnx

log = logging.getLogger(__name__)

RANDOM_SAMPLES = 8
PER_CHANNEL_OPSET = 13  # DequantizeLinear's `axis`


@dataclass(frozen=True)
class OutputDrift:
    """One output of the int8 model against the fp32 model, both run by ONNX Runtime."""

    name: str
    max_abs_error: float
    fp32_range: float  # max |fp32 output|: what the error is relative to

    @property
    def relative(self) -> float:
        return self.max_abs_error / self.fp32_range if self.fp32_range else 0.0


@dataclass(frozen=True)
class QuantizedModel:
    path: Path
    source: Path
    calibration: str  # where the samples came from
    samples: int
    quantized_ops: dict[str, int]  # op type -> nodes that read a DequantizeLinear output
    size_before: int
    size_after: int
    drift: tuple[OutputDrift, ...]


def read_calibration(folder: Path, names: list[str]) -> list[dict[str, np.ndarray]]:
    """The .npz files in `folder` (sorted), each one sample holding every input by name."""
    from dlc.runtime import read_npz

    if not folder.is_dir():
        raise InputError(f"calibration folder '{folder}' not found",
                         hint="give --calibration a folder of .npz files, one sample each")
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise InputError(f"no .npz files in calibration folder '{folder}'",
                         hint=f"save each sample with numpy.savez(path, {'=..., '.join(names)}=...)")
    samples = []
    for path in files:
        sample = read_npz(path)
        missing = [name for name in names if name not in sample]
        if missing:
            raise InputError(f"calibration file '{path}' lacks input {missing[0]!r}",
                             hint="the model's inputs are: " + ", ".join(names))
        samples.append({name: sample[name] for name in names})
    return samples


class _Samples:
    """onnxruntime's CalibrationDataReader protocol over a list of input dicts."""

    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self._samples = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._samples, None)

    def rewind(self) -> None:  # not needed by MinMax calibration, which reads once
        pass


def quantized_op_types(model: onnx.ModelProto) -> dict[str, int]:
    """Op types of the nodes (outside Q/DQ themselves) that take a dequantized tensor."""
    dequantized = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    counts = Counter(node.op_type for node in model.graph.node
                     if node.op_type not in ("QuantizeLinear", "DequantizeLinear")
                     and any(name in dequantized for name in node.input))
    return dict(counts.most_common())


def _drift(fp32: Path, int8: Path, sample: Mapping[str, np.ndarray]) -> tuple[OutputDrift, ...]:
    import numpy as np

    from dlc.verify import run_onnxruntime

    reference, quantized = run_onnxruntime(fp32, sample), run_onnxruntime(int8, sample)
    drift = []
    for name, a in reference.items():
        a, b = np.asarray(a, dtype=np.float64), np.asarray(quantized[name], dtype=np.float64)
        drift.append(OutputDrift(name, float(np.max(np.abs(a - b))) if a.size else 0.0,
                                 float(np.max(np.abs(a))) if a.size else 0.0))
    return tuple(drift)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _upgraded(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, opset)
    except Exception as err:  # the converter has no adapter for some op of the model
        raise ModelImportError(
            f"per-channel int8 needs opset {opset} and ONNX's converter could not upgrade the model "
            f"from opset {_opset(model)}: {err}", hint="re-export the model at opset 13 or newer") from err


def _no_preprocessing_advice(record: logging.LogRecord) -> bool:
    return "pre-processing" not in record.getMessage()


def quantize(
    model_path: Path | str,
    output: Path | str,
    *,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    calibration: Path | None = None,
    samples: int = RANDOM_SAMPLES,
    seed: int = 0,
    per_channel: bool = True,
) -> QuantizedModel:
    """Write `output`, the QDQ int8 form of `model_path` (shapes fixed, shape arithmetic
    folded), calibrated on the .npz samples in `calibration` or on `samples` seeded random
    inputs."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from dlc.frontend import load_model
    from dlc.verify import make_inputs

    model_path, output = Path(model_path), Path(output)
    if output.resolve() == model_path.resolve():
        raise InputError(f"--output '{output}' would overwrite the model", hint="pick another path")
    loaded = load_model(model_path, input_shapes=input_shapes)
    names = [spec.name for spec in loaded.inputs]
    if calibration is not None:
        data = read_calibration(calibration, names)
        source = f"{len(data)} sample(s) from {calibration}"
    else:
        data = [make_inputs(loaded.inputs, seed=seed + i, model=loaded.model) for i in range(samples)]
        source = f"{samples} seeded random sample(s)"
        log.warning("calibrating on random inputs: the scales fit noise, not your data (give --calibration DIR)")
    model = loaded.model
    if per_channel and _opset(model) < PER_CHANNEL_OPSET:
        # onnxruntime's tool writes DequantizeLinear's `axis` (opset 13) into the model's
        # own older opset, which ONNX Runtime then refuses to load (PP-OCR's opset 11/12).
        model = _upgraded(model, PER_CHANNEL_OPSET)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".dlc-quantize-", dir=output.parent) as scratch:
        fp32 = Path(scratch) / "fp32.onnx"
        onnx.save(model, fp32)
        staged = Path(scratch) / output.name
        try:
            # Its advice to pre-process first is logged on the root logger; the shapes are
            # fixed and the graph folded already.
            logging.getLogger().addFilter(_no_preprocessing_advice)
            # uint8 activations, int8 weights (onnxruntime's default): what AVX-512 VNNI
            # multiplies (u8 x s8) and what ONNX Runtime fuses into QLinearConv on x86 (with
            # int8 activations it fused 7 of nudenet's 64 convs and ran the rest in fp32).
            quantize_static(fp32, staged, _Samples(data), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        except Exception as err:  # onnxruntime's tool raises whatever its passes raise
            raise ModelImportError(f"onnxruntime could not quantize the model: {err}",
                                   hint="run with --debug for its traceback") from err
        finally:
            logging.getLogger().removeFilter(_no_preprocessing_advice)
        quantized = onnx.load(staged)
        drift = _drift(fp32, staged, data[0])
        size_before = fp32.stat().st_size
        os.replace(staged, output)  # never a half-written model at `output`
    return QuantizedModel(output, model_path, source, len(data), quantized_op_types(quantized), size_before,
                          output.stat().st_size, drift)
