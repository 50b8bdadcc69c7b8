"""Snakemake script: one NIfTI case (MSD or LiTS) to the converted layout. Logic: varprune.data.nifti.

The label path is a param, not an input: a missing label fails this case's job (naming it)
instead of stopping the whole workflow as a missing input would.
"""

from pathlib import Path

from varprune.core.runlog import to_log_file
from varprune.data.nifti import convert_nifti_case

with to_log_file(snakemake.log[0]):
    convert_nifti_case(snakemake.input.image, snakemake.params.label, snakemake.wildcards.case,
                       Path(snakemake.output.meta).parent, liver_labels=snakemake.params.liver_labels,
                       tumor_labels=snakemake.params.tumor_labels, assume_hu=snakemake.params.assume_hu,
                       geometry=snakemake.params.geometry)
