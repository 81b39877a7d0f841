"""int8 against fp32: `dlc quantize` each model, build both forms for the host, check the
int8 library against ONNX Runtime running the same int8 model value for value (tolerance
0), and time dlc, ONNX Runtime and OpenVINO (when installed) on both forms.

    .venv/bin/python bench/int8.py                       # nudenet-320n, ppocr-cls, ppocr-det, ppocr-rec
    .venv/bin/python bench/int8.py nudenet-320n --out bench/results/int8.md

Timing: dlc.bench.compare_latency (what `dlc bench` runs), alternating blocks in one
process, each engine at its defaults with the same thread count; once on the int8 model
(dlc int8 and dlc fp32 libraries, ORT and OpenVINO on the int8 model), once on the fp32
model (ORT and OpenVINO fp32). Calibration: seeded random samples (`dlc quantize`'s
fallback): fine for speed and for agreement with ONNX Runtime, not for accuracy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perf_table import _header  # noqa: E402  (bench/ is the script's own folder)

DEFAULT_MODELS = ("nudenet-320n", "ppocr-cls", "ppocr-det", "ppocr-rec")


def _measure(name: str, samples: int) -> dict:
    from dlc import build, frontend, pipeline, zoo
    from dlc.bench import compare_latency
    from dlc.quantize import quantize
    from dlc.target import parse_target
    from dlc.verify import verify

    spec = parse_target("host")
    shapes = zoo.MODELS[name].input_shapes
    model = zoo.fetch(name)
    with tempfile.TemporaryDirectory(prefix="dlc-int8-") as tmp:
        int8 = quantize(model, Path(tmp) / "int8.onnx", input_shapes=shapes, samples=samples).path
        libraries = {}
        for label, path in (("fp32", model), ("int8", int8)):
            loaded = frontend.load_model(path, input_shapes=shapes)
            optimized = pipeline.optimize(frontend.import_model(loaded), spec)
            libraries[label] = build.build(optimized, spec, output=Path(tmp) / f"{label}.so")
        exact = verify(int8, libraries["int8"].library, rtol=0.0, atol=0.0)
        close = verify(int8, libraries["int8"].library)
        on_int8 = compare_latency(int8, {"dlc int8": libraries["int8"].library,
                                         "dlc fp32": libraries["fp32"].library})
        on_fp32 = compare_latency(model, {"dlc fp32": libraries["fp32"].library})
    return {"name": name, "exact": exact, "close": close, "int8": on_int8, "fp32": on_fp32}


def _agreement(row: dict) -> str:
    exact, close = row["exact"], row["close"]
    if exact.passed:
        return "bit-exact"
    worst = max(exact.outputs, key=lambda c: c.mismatches)
    verdict = "within 1e-3" if close.passed else "MISMATCH at 1e-3"
    return f"{worst.mismatches}/{worst.size} differ (max {worst.max_abs_error:.3g}), {verdict}"


def _table(rows: list[dict]) -> str:
    has_ov = all(any(l.engine == "openvino" for l in r["int8"].latencies) for r in rows)
    head = ["model", "int8 vs ORT int8", "dlc fp32 ms", "dlc int8 ms", "dlc int8/fp32", "ORT fp32 ms", "ORT int8 ms",
            *(["OpenVINO fp32 ms", "OpenVINO int8 ms"] if has_ov else []), "dlc int8 / ORT int8",
            *(["dlc int8 / OpenVINO int8"] if has_ov else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        a, b = r["int8"], r["fp32"]
        cells = [r["name"], _agreement(r), f"{a.median('dlc fp32'):.3f}", f"{a.median('dlc int8'):.3f}",
                 f"{a.median('dlc int8') / a.median('dlc fp32'):.2f}", f"{b.median('onnxruntime'):.3f}",
                 f"{a.median('onnxruntime'):.3f}",
                 *([f"{b.median('openvino'):.3f}", f"{a.median('openvino'):.3f}"] if has_ov else []),
                 f"{a.ratio('dlc int8'):.2f}",
                 *([f"{a.median('dlc int8') / a.median('openvino'):.2f}"] if has_ov else [])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=list(DEFAULT_MODELS), help="dlc.zoo model names")
    parser.add_argument("--samples", type=int, default=4, help="random calibration samples")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = parser.parse_args()
    rows = []
    for name in args.models:
        print(f"{name}: quantize, build fp32 and int8, verify, time", flush=True)
        rows.append(_measure(name, args.samples))
    text = _header() + "\n\n" + _table(rows) + "\n"
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
