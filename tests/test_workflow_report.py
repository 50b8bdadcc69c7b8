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
        ("dense", 0), ("dense_long", 0), ("transformer_off", 0), ("variable", 1), ("variable", 2),
        ("fixed", 1), ("fixed", 2), ("global", 1), ("global", 2), ("random", 1), ("random", 2)]
    assert table.macs_full_reduction.iloc[0] == pytest.approx(0.0, abs=1e-12)
    pruned = table[table.cycle > 0]
    targets = {1: 0.04, 2: 0.07}  # tests/config/tiny.yaml
    for row in pruned.itertuples():
        assert row.target == targets[row.cycle]
        assert budget_met(row.macs_full_reduction, targets[row.cycle], table.macs_full.iloc[0]), row
        assert 0 < row.macs_transformer_reduction < 1
    assert (pruned.params < table.params.iloc[0]).all()
    long = table[table.method == "dense_long"].iloc[0]
    assert table.dice_vs_dense_long.to_numpy() == pytest.approx((table.dice_mean - long.dice_mean).to_numpy())
    assert pruned.val_dice_before_finetune.between(0, 1).all()
    for metric in ("dice", "voe", "rvd", "assd_mm", "msd_mm", "hd95_mm"):
        assert f"{metric}_mean" in table and f"{metric}_std" in table
    for key in ("latency_ms", "latency_ms_reduction", "macs_thop_reduction", "params_reduction"):
        assert key in table


def test_html_report_is_self_contained(done_run):
    page = (done_run / "results" / "tiny" / "report" / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 6
    assert "src='http" not in page and 'src="http' not in page
    assert "data source" in page and "synthetic" in page and "git commit" in page


def test_changing_report_options_reruns_the_report_alone(done_run, tmp_path):
    config = edited_config(tmp_path, **{"report.cases": 1})
    assert scheduled(done_run, config=config) == {"report": 1}


def test_snakemake_report_collects_the_figures(done_run, tmp_path):
    out = tmp_path / "report.zip"
    snakemake(done_run, "--report", str(out))
    names = zipfile.ZipFile(out).namelist()
    assert sum(name.endswith(".png") for name in names) >= 6
