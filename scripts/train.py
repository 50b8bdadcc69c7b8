"""Snakemake script: train the dense segmenter. Logic: varprune.engine.train."""

from varprune.core.runlog import to_log_file
from varprune.engine.train import split_files, train_dense

with to_log_file(snakemake.log[0]):
    train_dense(
        splits_json=snakemake.input.splits,
        preprocessed=split_files(snakemake.input),
        model_cfg=snakemake.params.model,
        train_cfg=snakemake.params.train,
        preprocess_cfg=snakemake.params.preprocess,
        out_model=snakemake.output.model,
        out_log=snakemake.output.log,
        state_dir=snakemake.params.state_dir,
        threads=snakemake.threads,
        # Read from the config, not a param: it changes what is left on disk, not the outputs.
        keep_state=snakemake.config["train"]["keep_state"],
    )
