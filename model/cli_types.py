"""Defines the argparse value types every CLI of the project shares (model/ and pipeline/ alike: it lives here because
pipeline/ may import model/, never the reverse), so every CLI rejects bad numbers the same way."""

import argparse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return value


def count_or_auto(text: str) -> int:
    """A whole number of at least 0, where 0 means "choose for me"."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not a whole number of 0 or more (0 chooses automatically)")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return value


def seconds(text: str) -> float:
    """A number of seconds of 0 or more (0 usually turns the thing off)."""
    value = float(text)
    if not value >= 0.0 or value == float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds of 0 or more")
    return value


def yes_no(text: str) -> bool:
    """true/false, yes/no, 1/0 (any case) -> bool."""
    value = text.strip().lower()
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def help_texts(doc: str) -> dict:
    """ArgumentParser's description and epilog from a CLI module's docstring: its first paragraph, and the rest (the
    examples) as written."""
    first, _, rest = doc.strip().partition("\n\n")
    return {"description": first, "epilog": rest or None, "formatter_class": argparse.RawDescriptionHelpFormatter}
