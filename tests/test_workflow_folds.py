"""Folds as replicates: a 2-fold run in which every patient is tested exactly once, and the report
pools the folds' patients in one paired comparison."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from varprune.model.network import load_model

from .workflow_helpers import edited_config, snakemake

pytestmark = pytest.mark.workflow


def test_a_two_fold_run_tests_every_patient_once_and_compares_them_all(tmp_path):
    config = edited_config(tmp_path, **{
        "synthetic.patients": 6, "split.mode": "kfold", "split.folds": 2, "split.val_ratio": 0.34,
        "replicates.folds": "all", "pruning.methods": ["variable", "fixed"],
        "pruning.cycle_targets": [0.04], "oneshot.targets": [0.04], "train.epochs": 4})
    workdir = tmp_path / "work"
    workdir.mkdir()
    snakemake(workdir, config=config)
    cases = [f"ircad{p:02d}" for p in range(1, 7)]
    splits = [json.loads((workdir / "data" / "splits" / f"fold{f}.json").read_text()) for f in (0, 1)]
    assert sorted(splits[0]["test"] + splits[1]["test"]) == cases  # each patient tested once
    for fold, split in enumerate(splits):
        folder = workdir / "results" / "tiny" / f"fold{fold}"
        tested = pd.read_csv(folder / "variable" / "cycle1" / "metrics.csv").case.tolist()
        assert sorted(tested) == sorted(split["test"])
        provenance = load_model(folder / "dense" / "model.pt")[2]  # trained by its fold's split
        assert provenance["split"]["test"] == split["test"] and provenance["split"]["val"] == split["val"]
        assert set(pd.read_csv(folder / "latency.csv").model) >= {"dense", "dense_long", "variable/cycle1"}
    comparison = pd.read_csv(workdir / "results" / "tiny" / "report" / "comparison.csv")
    dice = comparison[comparison.metric == "dice"]
    assert set(dice.n_cases) == {6} and set(dice.n_replicates) == {1}
    pairs = set(zip(dice.method_a, dice.method_b, strict=True))
    assert {("variable", "fixed"), ("variable", "dense_long")} <= pairs
    summary = pd.read_csv(workdir / "results" / "tiny" / "report" / "summary.csv")
    assert (summary.replicates == 2).all()
