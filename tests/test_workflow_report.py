"""The report: summary table, self-contained HTML, Snakemake's own report, rerun of the report alone."""

from __future__ import annotations

import zipfile

import pandas as pd
import pytest

from .workflow_helpers import budget_met, edited_config, scheduled, snakemake

pytestmark = pytest.mark.workflow


@pytest.mark.quick  # the same tiny run as the quick tier's end-to-end test: no extra time
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
    # latency from the run's one latency job: every model timed side by side, eager and onnxruntime,
    # with the spread of its round medians; dense and dense_long (one network) read alike
    timed = pd.read_csv(done_run / "results" / "tiny" / "latency.csv").set_index("model")
    folders = [m if c == 0 else f"{m}/cycle{c}" for m, c in zip(table.method, table.cycle, strict=True)]
    assert sorted(timed.index) == sorted(folders)
    assert table.latency_ms.tolist() == pytest.approx([timed.latency_ms[f] for f in folders])
    assert (table.latency_spread_ms >= 0).all() and (table.latency_onnx_ms > 0).all()
    assert (table.latency_onnx_spread_ms >= 0).all()
    dense, long = (table.set_index("method").loc[name] for name in ("dense", "dense_long"))
    assert table.latency_noise_ms.iloc[0] == pytest.approx(abs(dense.latency_ms - long.latency_ms))


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


def test_the_results_page_is_generated_from_the_run_and_stamped(done_run, tmp_path):
    """docs/results pages come from a run's report files (varprune results-page), with the commit
    and date the report was built at, every Dice comparison and the side-by-side latency."""
    import json

    from varprune.app.cli import main

    report = done_run / "results" / "tiny" / "report"
    out = tmp_path / "docs" / "tiny.md"
    assert main(["results-page", str(report), "-o", str(out), "--title", "Tiny"]) == 0
    page = out.read_text(encoding="utf-8")
    prov = json.loads((report / "provenance.json").read_text())
    assert page.startswith("# Tiny\n") and prov["git commit"] in page and prov["date"] in page
    comparison = pd.read_csv(report / "comparison.csv")
    dice = comparison[comparison.metric == "dice"]
    section = page.split("## Every comparison (test Dice)")[1].split("## Every comparison (HD95)")[0]
    assert section.count("\n| ") == len(dice) + 1  # a header and one row per comparison
    first = dice.iloc[0]
    assert f"{first.method_a} − {first.method_b} | {100 * first.mean_diff:+.2f} |" in section
    summary = pd.read_csv(report / "summary.csv")
    assert f"dense {summary.latency_ms.iloc[0]:.2f} ms" in page
    (tmp_path / "empty").mkdir()
    assert main(["results-page", str(tmp_path / "empty"), "-o", str(tmp_path / "x.md")]) == 1
    assert not (tmp_path / "x.md").exists()
