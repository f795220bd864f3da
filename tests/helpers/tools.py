"""The scripts under tools/ (not a package), imported as modules."""

from __future__ import annotations

import sys

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import results_table

__all__ = ["results_table"]
