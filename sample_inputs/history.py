"""Writes a made-up history of earlier nights under an output folder, so that the report of a run over
sample_inputs/ has nights to compare with: each night a complete partition as far as the report reads one (its
manifest's counts and _SUCCESS), its predicted classes drawn from an even mix of 1,000 images.

    python sample_inputs/history.py OUTPUT [--nights 14] [--until 2026-11-22] [--seed 3]
"""

import argparse
import datetime
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from model.vocabulary import CLASS_NAMES  # noqa: E402
from pipeline.outputs import partitions  # noqa: E402


def write_history(output: str, nights: int, until: datetime.date, seed: int, per_night: int = 1000,
                  low_confidence_share: float = 0.05) -> list:
    """Writes the nights (the last on `until`); returns their dates."""
    generator = np.random.default_rng(seed)
    dates = [until - datetime.timedelta(days=back) for back in range(nights - 1, -1, -1)]
    for date in dates:
        folder = os.path.join(output, f"dt={date}")
        os.makedirs(folder, exist_ok=True)
        per_class = generator.multinomial(per_night, [1 / len(CLASS_NAMES)] * len(CLASS_NAMES))
        counts = {"scored": per_night, "per_class": dict(zip(CLASS_NAMES, map(int, per_class))),
                  "low_confidence": int(generator.binomial(per_night, low_confidence_share))}
        with open(os.path.join(folder, partitions.MANIFEST), "w", encoding="utf-8") as stream:
            json.dump({"run_id": f"history-{date}", "run_date": str(date), "counts": counts}, stream)
        with open(os.path.join(folder, partitions.SUCCESS), "w", encoding="utf-8") as stream:
            stream.write(f"history-{date}")
    return [str(date) for date in dates]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--nights", type=int, default=14)
    parser.add_argument("--until", type=datetime.date.fromisoformat,
                        default=datetime.date.today() - datetime.timedelta(days=1))
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    dates = write_history(args.output, args.nights, args.until, args.seed)
    print(f"wrote {len(dates)} nights under {args.output} ({dates[0]} to {dates[-1]})")


if __name__ == "__main__":
    main()
