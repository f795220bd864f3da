"""Writes the generated result tables of a Markdown page from the result files they summarise.

Every block

    <!-- results: <dir> -->
    ...
    <!-- /results -->

is replaced by the table ``python -m fer_lightning.report <dir>`` prints for the ``results.json`` files under
``<dir>`` (relative to the repository root, or ``--root``), so a table on the docs site is never retyped by hand.

    python tools/results_table.py docs/benchmarks.md           # rewrite the blocks
    python tools/results_table.py --check docs/benchmarks.md   # exit 1 when a block differs from its files
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fer_lightning.analysis.results_table import find_results, markdown, summarise_runs  # noqa: E402
from fer_lightning.app import report_errors  # noqa: E402
from fer_lightning.errors import FERError  # noqa: E402
from fer_lightning.io import atomic_write_text  # noqa: E402

BLOCK = re.compile(r"(<!-- results: (?P<dir>\S+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.DOTALL)


def table(folder: Path) -> str:
    """The report table of every training result under ``folder``."""
    runs, _ = find_results(folder)
    if not runs:
        raise FERError(f"{folder}: no results.json under it; a results block needs the files it summarises")
    return markdown(summarise_runs(runs))


def render(text: str, root: Path = REPO) -> str:
    """``text`` with every results block's body replaced by its table."""
    return BLOCK.sub(lambda m: m.group(1) + table(root / m.group("dir")) + m.group(4), text)


@report_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python tools/results_table.py", description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="+", type=Path, help="Markdown pages holding results blocks")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    parser.add_argument("--root", type=Path, default=REPO, help="the folder block dirs are relative to (the repo)")
    args = parser.parse_args(argv)
    stale = []
    for page in args.pages:
        text = page.read_text()
        if not BLOCK.search(text):
            raise FERError(f"{page}: holds no '<!-- results: <dir> -->' block")
        new = render(text, args.root)
        if new == text:
            continue
        if args.check:
            stale.append(page)
        else:
            atomic_write_text(page, new)
            print(f"rewrote the results tables of {page}")
    if stale:
        names = ", ".join(str(p) for p in stale)
        print(
            f"error: {names}: a results table differs from its files; run python tools/results_table.py {names}",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
