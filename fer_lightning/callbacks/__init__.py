"""Lightning (and one Hydra) callbacks: atomic checkpoints, pre-emption, replayable seeds, progress lines, run
figures, the model summary and the config history of a run."""
