"""Snakemake script: one-shot curves. Logic lives in varprune.pruning.oneshot."""

from varprune.core.runlog import to_log_file
from varprune.engine.train import split_files
from varprune.pruning.oneshot import run_oneshot

with to_log_file(snakemake.log[0]):
    run_oneshot(
        dense_model=snakemake.input.model,
        preprocessed=split_files(snakemake.input),
        methods=snakemake.params.methods,
        pruning=snakemake.params.pruning,
        oneshot=snakemake.params.oneshot,
        out_csv=snakemake.output[0],
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
