"""Snakemake script: one case from NIfTI to model-ready arrays. Logic: varprune.data.preprocess."""

from varprune.core.runlog import to_log_file
from varprune.data.preprocess import PreprocessSpec, preprocess_case

with to_log_file(snakemake.log[0]):
    preprocess_case(
        snakemake.input.ct,
        snakemake.input.liver,
        snakemake.wildcards.case,
        PreprocessSpec.from_config(snakemake.params.preprocess),
        snakemake.output[0],
        assume_hu=snakemake.params.assume_hu,
    )
