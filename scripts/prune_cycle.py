"""Snakemake script: one pruning cycle. Logic lives in varprune.pruning.cycle."""

from varprune.core.runlog import to_log_file
from varprune.engine.train import split_files
from varprune.pruning.cycle import run_cycle

with to_log_file(snakemake.log[0]):
    run_cycle(
        parent=snakemake.input.model,
        splits_json=snakemake.input.splits,
        preprocessed=split_files(snakemake.input),
        method=snakemake.wildcards.method,
        cycle=int(snakemake.wildcards.k),
        pruning=snakemake.params.pruning,
        finetune=snakemake.params.finetune,
        out_model=snakemake.output.model,
        out_sequence=snakemake.output.sequence,
        out_log=snakemake.output.log,
        state_dir=snakemake.params.state_dir,
        out_oneshot=snakemake.output.oneshot,
        threads=snakemake.threads,
        # Read from the config, not a param: it changes what is left on disk, not the outputs.
        keep_state=snakemake.config["train"]["keep_state"],
        # finetune.distill with teacher dense: the dense checkpoint (declared only then).
        dense=getattr(snakemake.input, "teacher", None) or None,
    )
