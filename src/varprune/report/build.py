"""What the report reads and writes: the run's files as given (`varprune.core.layout` names them),
summary.csv and comparison.csv, the figures and report.html. Everything comes from the
pipeline's files, so the report is rebuilt without rerunning any model."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from varprune.core.atomic import atomic_path, write_json, write_text
from varprune.core.layout import Model, RunFiles, proposed_method
from varprune.model.spec import ModelSpec
from varprune.report.figures import (
    FIGURES,
    CaseImages,
    Predictions,
    plot_cases,
    plot_curves,
    plot_oneshot,
    plot_sequence,
    plot_tradeoff,
    plot_widths,
)
from varprune.report.page import provenance, render_html
from varprune.report.settings import ReportSettings
from varprune.report.tables import export_sizes, read_logs, read_sequences
from varprune.study.compare import (
    comparison_table,
    headroom,
    int8_table,
    metrics_long,
    oneshot_long,
    summary_table,
)

log = logging.getLogger(__name__)

# Input names of the example cases' images (the first `report.cases` test cases), besides the
# run files that RunFiles names.
CASE_CT, CASE_LIVER = "cases_ct", "cases_liver"


def case_images(ct: Sequence[str | os.PathLike], liver: Sequence[str | os.PathLike]) -> list[CaseImages]:
    """Pair data/nifti/{case}/ct.nii.gz with data/nifti/{case}/liver.nii.gz, in the order given."""
    pairs = [(Path(c), Path(m)) for c, m in zip(ct, liver, strict=True)]
    for c, m in pairs:
        if c.parent.name != m.parent.name:
            raise ValueError(f"{c} and {m}: CT and liver mask of different cases given to the report")
    return [CaseImages(c.parent.name, c, m) for c, m in pairs]


def _write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def build_report(files: Mapping[str, str | os.PathLike | Sequence[str]], config: dict, settings: dict,
                 out_summary: str | os.PathLike, out_html: str | os.PathLike, out_figures: dict[str, str],
                 out_comparison: str | os.PathLike | None = None,
                 repo: str | os.PathLike | None = None,
                 out_provenance: str | os.PathLike | None = None) -> pd.DataFrame:
    """Write summary.csv, comparison.csv, the figures and report.html for one run.

    `files`: the rule's inputs by name (`varprune.core.layout.report_files` plus the example cases'
    images). The tables and statistics pool every replicate given; the illustrations
    (sequences, widths, curves, cases, deployment files) show the first.
    """
    run = RunFiles(files)
    opts = ReportSettings.from_config(settings)
    methods = config["pruning"]["methods"]
    targets = list(config["pruning"]["cycle_targets"])
    cycles = len(targets)
    table = summary_table(run, methods, targets)
    int8 = int8_table(run, table)
    # INT8 rows (export.quantize) follow the fp32 ones; without them summary.csv is unchanged.
    _write_csv(pd.concat([table.assign(format="pytorch"), int8], ignore_index=True) if len(int8) else table,
               out_summary)
    long = metrics_long(run, methods, targets)
    margins = (config.get("stats") or {}).get("equivalence_margin")
    comparison = comparison_table(long, methods, margins=margins)
    if out_comparison is not None:
        _write_csv(comparison, out_comparison)

    figures = {name: Path(out_figures[name]) for name in FIGURES}
    plot_tradeoff(table, opts, figures["tradeoff"])
    oneshot = oneshot_long(run).groupby(["method", "target"], as_index=False)[
        ["macs_reduction", "val_dice", "test_dice"]].mean()
    plot_oneshot(oneshot, table, opts, figures["oneshot"])
    sequences = read_sequences(run, methods, cycles)
    plot_sequence(sequences, opts, figures["sequence"])
    plot_widths(sequences, opts, figures["widths"], _stage_names(config))
    plot_curves(read_logs(run, methods, cycles), opts, figures["curves"])
    shown = Model(proposed_method(methods), cycles)
    preds = {name: Predictions(run.path(0, model, "pred"), run.path(0, model, "metrics"))
             for name, model in (("dense", Model("dense")), (f"{shown.method} cycle {cycles}", shown))}
    plot_cases(case_images(files[CASE_CT], files[CASE_LIVER]), preds, tuple(config["preprocess"]["window"]),
               opts, figures["cases"])

    prov = provenance(config, Path(repo) if repo else None)
    page = render_html(table, figures, prov, config, config["run"], export_sizes(run, cycles), comparison,
                       headroom(long), int8)
    write_text(out_html, page)
    if out_provenance is not None:  # what `varprune results-page` stamps a docs page with
        write_json(out_provenance, {**prov, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                                    "config": config})
    log.info("report for run %s: %d models, %d paired comparisons -> %s", config["run"], len(table),
             len(comparison), out_html)
    return table


def _stage_names(config: Mapping) -> list[str] | None:
    """Names of the dense model's decoder channel groups (figure labels), if the config builds one."""
    try:
        return ModelSpec.from_config(config["model"], config["preprocess"]["input_size"]).stage_names
    except (KeyError, TypeError, ValueError):
        return None
