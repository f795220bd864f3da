"""``python -m fer_lightning.report <dir>``: one Markdown table from every results.json under a folder.

Runs are grouped by dataset × modality × experiment; each row gives mean ± standard deviation over the group's
runs (seeds, folds), the number of runs, the mean test n, and the study's published accuracy where it has one.
Results written by ``fer_lightning.evaluate`` are left out unless ``--include-evaluations`` (they re-test a
training run's checkpoint and would count it twice).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fer_lightning.analysis.results_table import report
from fer_lightning.app import report_errors


@report_errors
def main(argv: list[str] | None = None) -> None:
    """``python -m fer_lightning.report DIR``: prints the table of every results.json under ``DIR`` and writes
    ``report.md`` and ``report.csv`` there."""
    parser = argparse.ArgumentParser(prog="python -m fer_lightning.report", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a folder holding run dirs (searched recursively for results.json)")
    parser.add_argument(
        "--include-evaluations", action="store_true", help="also count results written by fer_lightning.evaluate"
    )
    args = parser.parse_args(argv)
    report(args.dir, args.include_evaluations)


if __name__ == "__main__":
    main()
