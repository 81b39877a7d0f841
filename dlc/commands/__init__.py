"""Command groups of the `dlc` CLI that live outside dlc/cli.py, one module per group.

Each module declares flags, calls one function of a stage module and prints; heavy modules
are imported inside the commands, so `dlc --help` stays instant.
"""

import click

from dlc.errors import InputError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def parse_input_shapes(values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    from dlc.frontend import parse_input_shape

    shapes: dict[str, tuple[int, ...]] = {}
    for text in values:
        name, shape = parse_input_shape(text)
        if name in shapes and shapes[name] != shape:
            raise InputError(
                f"--input-shape gives '{name}' twice ({shapes[name]} and {shape})",
                hint="pass each input once",
            )
        shapes[name] = shape
    return shapes


input_shape_option = click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    metavar="NAME:1x3x224x224",
    help="Fix an input's shape (repeatable); also NAME:[1,3,224,224].",
)
