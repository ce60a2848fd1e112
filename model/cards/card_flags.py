"""Defines the flags that declare what a model card says about classes and preprocessing, shared by the CLIs that
write cards (model.card for a model trained elsewhere, model.train for one trained here), and reads their values."""

import argparse
import os
import re

from model.recipes import fit_preprocessing

# What --input-shape takes: HxWxC.
_SHAPE = re.compile(r"(\d{1,4})x(\d{1,4})x([13])")


def add_arguments(parser, input_shape: bool = False) -> None:
    """Adds --classes and the fit recipe's --resize and --fill (and --input-shape, for a CLI that builds the model).
    Each defaults to None, so a CLI can tell a value given from one left out."""
    parser.add_argument("--classes", default=None,
                        help="the class names in the model's output order: comma-separated, or a file of one per line")
    if input_shape:
        parser.add_argument("--input-shape", type=shape, default=None, metavar="HxWxC",
                            help="the model's input: height x width x channels, 1 (grey) or 3 (RGB), e.g. 64x64x3")
    parser.add_argument("--resize", default=None, choices=fit_preprocessing.RESIZE_POLICIES,
                        help="how the fit recipe brings a picture to the input's size: pad (fit inside, pad with "
                             "--fill), crop (fill, then centre-crop) or stretch (each axis alone); default pad")
    parser.add_argument("--fill", type=fill_colour, default=None, metavar="R,G,B",
                        help="the colour (0-255 each) of padding and transparent pixels; default 0,0,0 (black)")


def shape(text: str) -> tuple:
    """`64x64x3` -> (64, 64, 3)."""
    match = _SHAPE.fullmatch(text.strip().lower())
    if not match or not all(int(edge) >= 1 for edge in match.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not HxWxC with C 1 or 3, e.g. 64x64x3 or 28x28x1")
    return tuple(int(edge) for edge in match.groups())


def fill_colour(text: str) -> list:
    try:
        colour = [int(part) for part in text.split(",")]
    except ValueError:
        colour = []
    if len(colour) != 3 or not all(0 <= value <= 255 for value in colour):
        raise argparse.ArgumentTypeError(f"{text!r} is not R,G,B: three whole numbers 0-255")
    return colour


def channel_values(text: str) -> list:
    """--mean and --std: one number per channel, separated by commas (1 for grey, 3 for RGB)."""
    import math

    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 3) or not all(math.isfinite(value) for value in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not one number per channel: R,G,B (e.g. 0.485,0.456,0.406) "
                                         "or one number for grey")
    return values


def class_names(text: str) -> tuple:
    """--classes: a file of one name per line (blank lines skipped), or names separated by commas."""
    if os.path.isfile(text):
        from model import reading

        lines = reading.read_regular_file(text, 1 << 20).decode("utf-8").splitlines()
        return tuple(line.strip() for line in lines if line.strip())
    return tuple(name.strip() for name in text.split(","))


def fit_parameters(args) -> dict:
    """The fit recipe's parameters the flags ask for, defaults filled in and checked."""
    given = {"resize": args.resize, "fill": args.fill}
    return fit_preprocessing.checked_parameters({name: value for name, value in given.items() if value is not None})
