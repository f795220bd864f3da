"""The run layer: a run built from a config or a checkpoint, fitted, tested and reported in one place.

Commands (``fer_lightning.train``, ``evaluate``, ``predict`` ...) are thin shells over this package.
"""

from fer_lightning.runs.engine import Run, evaluate_checkpoint, train_and_test
from fer_lightning.runs.instantiate import build_datamodule, build_model
from fer_lightning.runs.predictor import Predictor
from fer_lightning.runs.results import PREDICTIONS, RESULTS, TestOutcome, read_results
from fer_lightning.runs.run_checkpoint import RunCheckpoint, load_run_checkpoint, read_checkpoint

__all__ = [
    "PREDICTIONS",
    "RESULTS",
    "Predictor",
    "Run",
    "RunCheckpoint",
    "TestOutcome",
    "build_datamodule",
    "build_model",
    "evaluate_checkpoint",
    "load_run_checkpoint",
    "read_checkpoint",
    "read_results",
    "train_and_test",
]
