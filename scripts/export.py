"""Snakemake script: export one checkpoint, verified against PyTorch. Logic: varprune.engine.export."""

from varprune.core.runlog import to_log_file
from varprune.engine.export import export_model

with to_log_file(snakemake.log[0]):
    export_model(snakemake.input.model, snakemake.wildcards.fmt, snakemake.output[0])
