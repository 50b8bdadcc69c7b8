"""Snakemake script: one IRCADb case from the archive to NIfTI. Logic: varprune.data.convert."""

from pathlib import Path

from varprune.core.runlog import to_log_file
from varprune.data.archive import ExtractionLimits
from varprune.data.convert import convert_case

with to_log_file(snakemake.log[0]):
    convert_case(snakemake.input.archive, snakemake.wildcards.case, Path(snakemake.output.meta).parent,
                 assume_hu=snakemake.params.assume_hu, limits=ExtractionLimits(**snakemake.params.extract))
