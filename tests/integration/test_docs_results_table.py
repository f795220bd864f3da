"""tools/results_table.py run as a command: writes the report of its files, and --check fails when stale."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.helpers.tools import results_table


@pytest.mark.slow
def test_results_table_writes_the_report_of_the_files_and_check_fails_when_stale(tmp_path):
    runs = tmp_path / "results" / "sweep"
    shutil.copytree(REPO / "docs" / "results" / "toy_sweep", runs)
    page = tmp_path / "page.md"
    page.write_text("# t\n\n<!-- results: results/sweep -->\nan old table\n<!-- /results -->\n\nafter\n")
    tool = [sys.executable, str(REPO / "tools" / "results_table.py")]

    stale = subprocess.run([*tool, "--check", "--root", str(tmp_path), str(page)], capture_output=True, text=True)
    assert stale.returncode == 1 and "differs from its files" in stale.stderr
    assert "an old table" in page.read_text()

    done = subprocess.run([*tool, "--root", str(tmp_path), str(page)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected = results_table.table(runs)
    assert expected.startswith("| dataset | modality |") and "| synthetic | fusion |" in expected
    assert page.read_text() == f"# t\n\n<!-- results: results/sweep -->\n{expected}<!-- /results -->\n\nafter\n"
    again = subprocess.run([*tool, "--check", "--root", str(tmp_path), str(page)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr


@pytest.mark.slow
@pytest.mark.parametrize("missing", ["no block", "no files"])
def test_results_table_refuses_a_page_without_its_files(tmp_path, missing):
    page = tmp_path / "page.md"
    page.write_text("# t\n" if missing == "no block" else "<!-- results: nowhere -->\n<!-- /results -->\n")
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "results_table.py"), str(page)], capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
