"""The report: summary table, self-contained HTML, Snakemake's own report, rerun of the report alone."""

from __future__ import annotations

import zipfile

import pandas as pd
import pytest

from .workflow_helpers import budget_met, edited_config, scheduled, snakemake

pytestmark = pytest.mark.workflow


def test_summary_has_one_row_per_model_with_reductions_and_metrics(done_run):
    table = pd.read_csv(done_run / "results" / "tiny" / "report" / "summary.csv")
    assert list(zip(table.method, table.cycle, strict=True)) == [
        ("dense", 0), ("variable", 1), ("variable", 2), ("fixed", 1), ("fixed", 2),
        ("global", 1), ("global", 2)]
    assert table.macs_full_reduction.iloc[0] == pytest.approx(0.0, abs=1e-12)
    targets = {1: 0.04, 2: 0.07}  # tests/config/tiny.yaml
    for row in table.iloc[1:].itertuples():
        assert budget_met(row.macs_full_reduction, targets[row.cycle], table.macs_full.iloc[0]), row
    assert (table.params.iloc[1:] < table.params.iloc[0]).all()
    for metric in ("dice", "voe", "rvd", "assd_mm", "msd_mm", "hd95_mm"):
        assert f"{metric}_mean" in table and f"{metric}_std" in table
    for key in ("latency_ms", "latency_ms_reduction", "macs_thop_reduction", "params_reduction"):
        assert key in table


def test_html_report_is_self_contained(done_run):
    page = (done_run / "results" / "tiny" / "report" / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 5
    assert "src='http" not in page and 'src="http' not in page
    assert "data source" in page and "synthetic" in page and "git commit" in page


def test_changing_report_options_reruns_the_report_alone(done_run, tmp_path):
    config = edited_config(tmp_path, **{"report.cases": 1})
    assert scheduled(done_run, config=config) == {"report": 1, "all": 1}


def test_snakemake_report_collects_the_figures(done_run, tmp_path):
    out = tmp_path / "report.zip"
    snakemake(done_run, "--report", str(out))
    names = zipfile.ZipFile(out).namelist()
    assert sum(name.endswith(".png") for name in names) >= 5
