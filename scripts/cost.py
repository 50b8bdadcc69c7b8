"""Snakemake script: params, MACs (two counters) and CPU latency of one model. Logic: varprune.cost."""

from varprune.cost import write_cost
from varprune.runlog import to_log_file

with to_log_file(snakemake.log[0]):
    settings = snakemake.params.cost
    write_cost(
        snakemake.input.model,
        snakemake.output[0],
        threads=settings["threads"],
        runs=settings["runs"],
        warmup=settings["warmup"],
    )
