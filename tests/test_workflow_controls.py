"""The controls, one-shot curves and paired comparisons in the workflow (tiny run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from varprune.core.layout import report_files
from varprune.model.network import load_model
from varprune.report import FIGURES, build_report
from varprune.study.stats import COMPARISON_COLUMNS

from .workflow_helpers import (
    budget_met,
    edited_config,
    merged_config,
    model_jobs,
    scheduled,
    snakemake,
)

pytestmark = pytest.mark.workflow
METHODS = ("variable", "fixed", "global", "random")
TARGETS = (0.04, 0.07)  # tests/config/tiny.yaml
ONESHOT_TARGETS = (0.04, 0.06)


def test_dense_long_gets_exactly_the_fine_tuning_the_last_cycle_had(done_run):
    results = done_run / "results" / "tiny"
    long = pd.read_csv(results / "dense_long" / "train_log.csv")
    _, spec, provenance = load_model(results / "dense_long" / "model.pt")
    _, dense_spec, _ = load_model(results / "dense" / "model.pt")
    assert spec == dense_spec and provenance["kind"] == "dense_long" and provenance["rounds"] == len(TARGETS)
    for method in METHODS:
        cycles = [pd.read_csv(results / method / f"cycle{k}" / "finetune_log.csv") for k in (1, 2)]
        assert len(long) == sum(len(c) for c in cycles)
        assert long.step.iloc[-1] == sum(int(c.step.iloc[-1]) for c in cycles)
    assert long.epoch.tolist() == list(range(1, len(long) + 1))
    off = pd.read_csv(results / "transformer_off" / "train_log.csv")  # the headroom compares equal training
    assert off.epoch.tolist() == long.epoch.tolist() and off.step.tolist() == long.step.tolist()


def test_transformer_off_has_no_msa_or_ffn_and_is_evaluated_like_any_model(done_run):
    results = done_run / "results" / "tiny"
    _, spec, provenance = load_model(results / "transformer_off" / "model.pt")
    assert provenance["kind"] == "transformer_off"
    assert all(layer.inner == 0 and layer.ffn == 0 for layer in spec.layers)
    off = json.loads((results / "transformer_off" / "cost.json").read_text())
    dense = json.loads((results / "dense" / "cost.json").read_text())
    assert off["macs_transformer"] == 0
    assert off["macs_full"] == dense["macs_full"] - dense["macs_transformer"]
    metrics = pd.read_csv(results / "transformer_off" / "metrics.csv")
    assert metrics.dice.between(0, 1).all()


def test_oneshot_table_has_every_method_and_target_and_matches_cycle_one(done_run):
    results = done_run / "results" / "tiny"
    table = pd.read_csv(results / "oneshot.csv")
    assert list(table.columns) == ["method", "target", "macs_reduction", "val_dice", "test_dice"]
    assert table[table.method == "dense"].macs_reduction.tolist() == [0.0]
    off = table[table.method == "transformer_off"]  # the far end: no MSA/FFN, no fine-tuning
    assert len(off) == 1 and off.val_dice.between(0, 1).all() and off.test_dice.between(0, 1).all()
    cost = json.loads((results / "dense" / "cost.json").read_text())
    assert off.macs_reduction.iloc[0] == pytest.approx(cost["macs_transformer"] / cost["macs_full"], abs=1e-6)
    pruned = table[~table.method.isin(["dense", "transformer_off"])]
    assert sorted(zip(pruned.method, pruned.target, strict=True)) == sorted(
        (m, t) for m in METHODS for t in ONESHOT_TARGETS)
    dense_macs = json.loads((results / "dense" / "cost.json").read_text())["macs_full"]
    for row in pruned.itertuples():
        assert budget_met(row.macs_reduction, row.target, dense_macs), row
        assert pd.notna(row.val_dice) and pd.notna(row.test_dice), row  # unreachable: left empty
    # Cycle 1 prunes the dense model to 0.04 with the same scores and draw: before its
    # fine-tuning it is the one-shot model at 0.04 (validation batches differ in size only).
    for method in METHODS:
        before = json.loads((results / method / "cycle1" / "oneshot.json").read_text())
        assert set(before) == {"val_dice_before", "val_dice_after"}
        oneshot = table[(table.method == method) & (table.target == 0.04)].val_dice.iloc[0]
        assert before["val_dice_before"] == pytest.approx(oneshot, abs=1e-3)


def test_comparison_pairs_every_method_with_the_controls_at_every_budget(done_run):
    report = done_run / "results" / "tiny" / "report"
    table = pd.read_csv(report / "comparison.csv")
    assert list(table.columns) == COMPARISON_COLUMNS
    pairs = {("variable", "fixed"), ("variable", "global"), ("variable", "random"), ("fixed", "random"),
             ("global", "random"), *((m, "dense_long") for m in METHODS)}
    for budget in TARGETS:
        at = table[table.budget == budget]
        assert set(zip(at.method_a, at.method_b, strict=True)) == pairs
        assert set(at.metric) == {"dice", "hd95_mm"}
    # One test case: the interval is the difference itself and no test can reach significance.
    dice = table[table.metric == "dice"]
    assert (dice.n_cases == 1).all() and (dice.ci_low == dice.ci_high).all()
    assert dice.verdict.str.contains("cannot reach p < 0.05").all()
    assert (table.outcome == "inconclusive").all() and (dice.margin == 0.005).all()
    page = (report / "report.html").read_text(encoding="utf-8")
    assert "Verdicts on test Dice" in page and "inconclusive: no difference can be seen" in page
    assert page.index("What the numbers support") < page.index("<h2>Summary</h2>")
    assert "Transformer headroom" in page and "dense_long" in page


def test_a_study_with_three_seeds_expands_to_every_replicate_job(done_run, tmp_path):
    config = edited_config(tmp_path, **{"replicates.seeds": [0, 1, 2]})
    models = 3 + len(METHODS) * len(TARGETS)  # dense, dense_long, transformer_off and every cycle
    expected = {"train": 3, "dense_long": 3, "transformer_off": 3, "oneshot": 3,
                "prune_cycle": 3 * len(METHODS) * len(TARGETS), "evaluate": 3 * models, "cost": 3 * models,
                "latency": 3, "export": len(METHODS), "report": 1}
    assert expected == model_jobs(config)  # the helper's count agrees with this one written out
    assert scheduled(done_run, config=config) == expected


def test_a_replicate_trains_with_its_own_seed(done_run, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(done_run, workdir, symlinks=True, ignore=shutil.ignore_patterns("results"))
    config = edited_config(tmp_path, **{"replicates.seeds": [0, 1]})
    snakemake(workdir, "results/tiny/seed1/dense/model.pt", config=config)
    _, _, provenance = load_model(workdir / "results" / "tiny" / "seed1" / "dense" / "model.pt")
    assert provenance["config"]["train"]["seed"] == 1
    seed1 = pd.read_csv(workdir / "results" / "tiny" / "seed1" / "dense" / "train_log.csv")
    seed0 = pd.read_csv(done_run / "results" / "tiny" / "dense" / "train_log.csv")
    assert seed1.loss.tolist() != seed0.loss.tolist()


def _scattered(files: dict[str, str], dest: Path) -> dict[str, str]:
    """Every given run file copied under a meaningless name: a reader that rebuilt paths from a
    run folder instead of taking the files it is given would not find them."""
    dest.mkdir(parents=True)
    moved = {}
    for index, (key, path) in enumerate(files.items()):
        target = dest / f"{index:03d}{Path(path).suffix}"
        (shutil.copytree if Path(path).is_dir() else shutil.copy)(path, target)
        moved[key] = str(target)
    return moved


def test_the_report_pools_replicates_and_reads_only_the_files_it_is_given(done_run, tmp_path):
    config = merged_config()
    assert tuple(config["pruning"]["methods"]) == METHODS
    # Two replicates that agree (the plumbing, not the statistics, is tested), both read from the
    # finished run's folder but handed over under scattered names.
    run = done_run / "results" / "tiny"
    files = report_files([run, run], METHODS, len(TARGETS), config["export"]["formats"])
    files = _scattered(files, tmp_path / "given")
    cases = json.loads((done_run / "data" / "splits.json").read_text())["test"][:2]
    files["cases_ct"] = [str(done_run / "data" / "nifti" / c / "ct.nii.gz") for c in cases]
    files["cases_liver"] = [str(done_run / "data" / "nifti" / c / "liver.nii.gz") for c in cases]
    out = tmp_path / "report"
    figures = {name: str(out / f"{name}.png") for name in FIGURES}
    table = build_report(files, config, {}, out / "summary.csv", out / "report.html", figures,
                         out / "comparison.csv")
    assert (table.replicates == 2).all()
    comparison = pd.read_csv(out / "comparison.csv")
    assert (comparison.n_replicates == 2).all()
    single = pd.read_csv(done_run / "results" / "tiny" / "report" / "summary.csv")
    assert table.dice_mean.to_numpy() == pytest.approx(single.dice_mean.to_numpy())
