"""Snakemake script: every model of a run timed side by side. Logic: varprune.engine.latency."""

from varprune.core.runlog import to_log_file
from varprune.engine.latency import write_latency

with to_log_file(snakemake.log[0]):
    write_latency(
        dict(zip(snakemake.params.models, snakemake.input.models, strict=True)),
        snakemake.output[0],
        snakemake.params.cost,
    )
