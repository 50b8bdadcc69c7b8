"""Snakemake script: judge one guarded cycle and plan the next. Logic: varprune.pruning.selection."""

from varprune.core.runlog import to_log_file
from varprune.pruning.selection import judge_cycle

with to_log_file(snakemake.log[0]):
    judge_cycle(
        cycle=int(snakemake.wildcards.k),
        oneshot_json=snakemake.input.oneshot,
        cycle_model=snakemake.input.cycle,
        reference_model=snakemake.input.reference,
        previous=snakemake.input.previous,
        fallback_model=snakemake.input.fallback,
        dense_model=snakemake.input.dense,
        guard=snakemake.params.guard,
        pruning=snakemake.params.pruning,
        out_json=snakemake.output[0],
    )
