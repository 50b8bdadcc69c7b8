"""Snakemake script: hand over the model a guarded search selected. Logic: varprune.pruning.selection."""

from varprune.core.runlog import to_log_file
from varprune.pruning.selection import select_model

with to_log_file(snakemake.log[0]):
    select_model(
        decisions=snakemake.input.decisions,
        model=snakemake.input.model,
        dense_model=snakemake.input.dense,
        out_model=snakemake.output.model,
        out_json=snakemake.output.record,
    )
