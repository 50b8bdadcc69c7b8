"""Snakemake script: validate a user's archive and link it into data/raw. Logic: varprune.data.download."""

from varprune.data.download import use_local_archive
from varprune.runlog import to_log_file

with to_log_file(snakemake.log[0]):
    use_local_archive(snakemake.params.archive, snakemake.output[0])
