"""Snakemake script: the dense_long and transformer_off controls (the rule's name says which).
Logic lives in varprune.engine.controls."""

from varprune.core.runlog import to_log_file
from varprune.engine.controls import train_control
from varprune.engine.train import split_files

with to_log_file(snakemake.log[0]):
    train_control(
        kind=getattr(snakemake.params, "kind", snakemake.rule),
        parent=snakemake.input.model,
        splits_json=snakemake.input.splits,
        preprocessed=split_files(snakemake.input),
        finetune=snakemake.params.finetune,
        rounds=snakemake.params.rounds,
        out_model=snakemake.output.model,
        out_log=snakemake.output.log,
        state_dir=snakemake.params.state_dir,
        threads=snakemake.threads,
        # Read from the config, not a param: it changes what is left on disk, not the outputs.
        keep_state=snakemake.config["train"]["keep_state"],
        # finetune.distill with teacher dense: the dense checkpoint (declared only then).
        dense=getattr(snakemake.input, "teacher", None) or None,
    )
