"""Snakemake script: validate a user's archive and link it into data/raw. Logic: varprune.data.download."""

from varprune.core.runlog import to_log_file
from varprune.data.download import use_local_archive

with to_log_file(snakemake.log[0]):
    use_local_archive(snakemake.params.archive, snakemake.output[0])
