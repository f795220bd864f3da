"""The model summary, printed only when asked (verbose)."""

from __future__ import annotations

import logging

from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

log = logging.getLogger(__name__)

class ModelSummary(LightningModelSummary):
    """Lightning's table of layers and parameter counts (shown with ``trainer.enable_model_summary``, which
    ``verbose=true`` sets), without its FLOPs column and total where they are 0: Lightning counts FLOPs only for
    a model with an ``example_input_array``, which these models do not define."""

    @staticmethod
    def summarize(
        summary_data,
        total_parameters,
        trainable_parameters,
        model_size,
        total_training_modes,
        total_flops,
        **summarize_kwargs,
    ) -> None:
        if not total_flops:
            summary_data = [column for column in summary_data if column[0] != "FLOPs"]
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *summary_data
        )
        if not total_flops:
            table = "\n".join(line for line in table.splitlines() if not line.endswith("Total Flops"))
        log.info("model summary\n%s", table)
