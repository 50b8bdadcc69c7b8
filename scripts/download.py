"""Snakemake script: download the IRCADb archive with resume. Logic: varprune.data.download."""

from varprune.core.runlog import to_log_file
from varprune.data.download import download_archive

with to_log_file(snakemake.log[0]):
    download_archive(
        snakemake.params.url,
        snakemake.output[0],
        retries=snakemake.params.download["retries"],
        timeout=snakemake.params.download["timeout_s"],
    )
