"""Snakemake script: the run's report. Logic: varprune.report."""

from pathlib import Path

from varprune.core.runlog import to_log_file
from varprune.report import FIGURES, build_report

with to_log_file(snakemake.log[0]):
    build_report(
        files=dict(snakemake.input.items()),
        config=snakemake.params.config,
        settings=snakemake.params.report,
        out_summary=snakemake.output.summary,
        out_html=snakemake.output.html,
        out_figures={name: getattr(snakemake.output, name) for name in FIGURES},
        out_comparison=snakemake.output.comparison,
        out_provenance=snakemake.output.provenance,
        repo=Path(snakemake.scriptdir).parent,
    )
