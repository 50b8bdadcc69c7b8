"""Snakemake script: write the synthetic cohort as 3Dircadb1.zip. Logic: varprune.data.synthetic."""

from varprune.core.runlog import to_log_file
from varprune.data.synthetic import SyntheticSpec, write_synthetic_archive

with to_log_file(snakemake.log[0]):
    write_synthetic_archive(snakemake.output[0], SyntheticSpec(**snakemake.params.synthetic),
                            workers=snakemake.threads)
