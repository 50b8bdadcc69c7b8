"""Snakemake script: export one checkpoint, verified against PyTorch. Logic: varprune.export."""

from varprune.export import export_model
from varprune.runlog import to_log_file

with to_log_file(snakemake.log[0]):
    export_model(snakemake.input.model, snakemake.wildcards.fmt, snakemake.output[0])
