"""Snakemake script: params and MACs (two counters) of one model. Logic: varprune.cost."""

from varprune.cost import write_cost
from varprune.runlog import to_log_file

with to_log_file(snakemake.log[0]):
    write_cost(snakemake.input.model, snakemake.output[0])
