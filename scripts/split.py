"""Snakemake script: train/val/test split by patient. Logic: varprune.data.splits."""

from varprune.core.runlog import to_log_file
from varprune.data.splits import write_splits

with to_log_file(snakemake.log[0]):
    write_splits(snakemake.params.cases, snakemake.params.split, snakemake.output[0])
