"""``python -m fer_lightning.compare A B``: is model A more accurate than model B on the same test samples?

A and B are ``predictions.csv`` files written by ``fer_lightning.train`` or ``fer_lightning.evaluate`` (or the run
dirs holding them). The accuracy difference gets a paired percentile bootstrap 95 % interval (scipy; the same
samples resampled for both), far tighter than two separate intervals; the discordant counts (A right where B is
wrong, and the reverse) are McNemar's.
``--by conditions.csv --column visible_condition`` adds the same comparison for each value of a per-sample column
(the synthetic dataset writes ``<data_dir>/synthetic/conditions.csv``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fer_lightning.analysis.compare import compare, format_table
from fer_lightning.app import report_errors


@report_errors
def main(argv: list[str] | None = None) -> None:
    """``python -m fer_lightning.compare A B [--by CSV --column NAME]``: prints the paired comparison table."""
    parser = argparse.ArgumentParser(prog="python -m fer_lightning.compare", description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="predictions.csv of model A (or its evaluation folder)")
    parser.add_argument("b", type=Path, help="predictions.csv of model B, tested on the same samples")
    parser.add_argument("--by", type=Path, help="a CSV with sample_id and a column to group by")
    parser.add_argument("--column", help="the column of --by to group by")
    args = parser.parse_args(argv)
    print(format_table(compare(args.a, args.b, args.by, args.column)))


if __name__ == "__main__":
    main()
