"""Snakemake script: the report of a guarded run. Logic: varprune.report.guarded."""

from pathlib import Path

from varprune.core.runlog import to_log_file
from varprune.report.guarded import build_guarded_report

with to_log_file(snakemake.log[0]):
    build_guarded_report(
        files=dict(snakemake.input.items()),
        config=snakemake.params.config,
        settings=snakemake.params.report,
        out_csv=snakemake.output.table,
        out_html=snakemake.output.html,
        out_figure=snakemake.output.search,
        repo=Path(snakemake.scriptdir).parent,
    )
