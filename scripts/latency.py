"""Snakemake script: every model of a run timed side by side. Logic: varprune.latency."""

from varprune.latency import write_latency
from varprune.runlog import to_log_file

with to_log_file(snakemake.log[0]):
    write_latency(
        dict(zip(snakemake.params.models, snakemake.input.models, strict=True)),
        snakemake.output[0],
        snakemake.params.cost,
    )
