"""Snakemake script: params and MACs (two counters) of one model. Logic: varprune.engine.cost."""

from varprune.core.runlog import to_log_file
from varprune.engine.cost import write_cost

with to_log_file(snakemake.log[0]):
    write_cost(snakemake.input.model, snakemake.output[0])
