"""`dlc quantize`: an int8 (QDQ) model by onnxruntime's static quantisation (dlc.quantize)."""

from __future__ import annotations

from pathlib import Path

import click

from dlc.commands import CONTEXT, input_shape_option, parse_input_shapes


@click.command("quantize", context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="The int8 model [MODEL.int8.onnx].")
@input_shape_option
@click.option("--calibration", type=click.Path(path_type=Path), metavar="DIR",
              help="A folder of .npz files, one input sample each (default: seeded random inputs, with a warning).")
@click.option("--samples", type=click.IntRange(min=1), default=8, show_default=True,
              help="Random calibration samples when no --calibration is given.")
@click.option("--per-tensor", is_flag=True, help="One weight scale per tensor instead of per output channel.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random calibration inputs.")
def quantize_command(model, output, input_shapes, calibration, samples, per_tensor, seed):
    """Quantize MODEL (.onnx) to int8 (QDQ format) with onnxruntime's static quantisation."""
    from dlc import display
    from dlc.quantize import quantize

    output = output or model.with_suffix(".int8.onnx")
    console = display.make_console()
    with display.step(console, f"quantized {model} -> {output}"):
        result = quantize(model, output, input_shapes=parse_input_shapes(input_shapes), calibration=calibration,
                          samples=samples, seed=seed, per_channel=not per_tensor)
    ops = ", ".join(f"{op} {n}" for op, n in result.quantized_ops.items()) or "none"
    console.print(f"  calibrated on {result.calibration}; int8 operators: {ops}")
    console.print(f"  size {result.size_before / 1e6:.2f} MB -> {result.size_after / 1e6:.2f} MB")
    for out in result.drift:
        console.print(f"  {out.name}: int8 vs fp32 (ONNX Runtime, first sample) max abs error {out.max_abs_error:.3g}, "
                      f"{out.relative:.1%} of the output's range")
    click.echo(str(result.path))
