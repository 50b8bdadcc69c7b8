"""Snakemake script: the transformer_off control. Logic lives in varprune.controls."""

from varprune.controls import train_transformer_off
from varprune.runlog import to_log_file

with to_log_file(snakemake.log[0]):
    train_transformer_off(
        parent=snakemake.input.model,
        splits_json=snakemake.input.splits,
        preprocessed_dir=snakemake.params.preprocessed,
        finetune=snakemake.params.finetune,
        rounds=snakemake.params.rounds,
        out_model=snakemake.output.model,
        out_log=snakemake.output.log,
        state_dir=snakemake.params.state_dir,
        threads=snakemake.threads,
    )
