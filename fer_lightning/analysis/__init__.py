"""Analyses of finished runs, each the library behind one command: :mod:`.compare` (two runs' predictions,
paired), :mod:`.report` (a table over results.json files) and :mod:`.cam` (Grad-CAM heat maps)."""
