"""Replicates of a run (varprune.study.replicates): seeds and folds, their folders, and how the paired
statistics label them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from varprune.data.splits import make_splits
from varprune.study.replicates import Replicate, fold_list, pairing_label, replicate_of, replicates_of
from varprune.study.stats import comparison_rows

KFOLD = {"mode": "kfold", "folds": 3, "seed": 0, "val_ratio": 0.25}


def test_folds_and_seeds_make_one_folder_each_and_read_back():
    reps = replicates_of({"seeds": [0, 2], "folds": "all"}, KFOLD)
    assert [r.run("study") for r in reps] == [f"study/fold{f}-seed{s}" for f in range(3) for s in (0, 2)]
    assert all(replicate_of(r.run("study")) == r for r in reps)
    folds_only = replicates_of({"seeds": None, "folds": [2, 0]}, KFOLD)
    assert [r.run("x") for r in folds_only] == ["x/fold0", "x/fold2"]
    assert [r.run("x") for r in replicates_of({"seeds": [1]}, {"mode": "ratios"})] == ["x/seed1"]
    assert replicates_of({"seeds": None}, {"mode": "ratios"}) == [Replicate()]
    assert replicate_of("default") == Replicate() and Replicate().run("default") == "default"
    assert Replicate(fold=1).splits == "data/splits/fold1.json"
    assert Replicate(seed=3).splits == "data/splits.json"
    labels = [pairing_label(f"results/s/{f}", i) for i, f in enumerate(("fold1-seed2", "fold0", "seed4"))]
    assert labels == [2, 0, 2]  # folds: their seed; any other folder: its position
    assert pairing_label("results/default", 0) == 0 and pairing_label("/tmp/given/x", 5) == 5


@pytest.mark.parametrize("folds, split, message", [
    ("all", {"mode": "ratios"}, "needs split.mode kfold"),
    ([0, 3], KFOLD, r"\[3\] are not folds of split.folds 3"),
    ([1, 1], KFOLD, "names a fold twice"),
    ("some", KFOLD, "must be all or a non-empty list"),
    ("all", {**KFOLD, "test_extra": 2}, "exclude each other"),
])
def test_impossible_fold_replicates_are_refused_naming_the_key(folds, split, message):
    with pytest.raises(ValueError, match=message):
        replicates_of({"folds": folds}, split)
    assert fold_list(None, 3) is None


def test_the_ircadb_study_tests_every_patient_once_per_seed():
    """config/ircadb.yaml: 5 folds × 3 seeds over the 20 patients, 4 validation cases per fold."""
    preset = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "ircadb.yaml").read_text())
    reps = replicates_of(preset["replicates"], preset["split"])
    assert len(reps) == 15 and {r.seed for r in reps} == {0, 1, 2} and {r.fold for r in reps} == set(range(5))
    cases = [f"ircad{p:02d}" for p in range(1, 21)]
    splits = [make_splits(cases, {**preset["split"], "fold": f}) for f in range(5)]
    tested = [case for split in splits for case in split["test"]]
    assert sorted(tested) == cases  # once each
    for split in splits:
        assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
        assert len(split["val"]) == 4 and len(split["train"]) == 12


def test_pooled_folds_pair_each_patient_over_its_seeds():
    """Two folds × two seeds: the comparison counts every patient once and each patient's two seeds
    as its replicates (labels from the folders, not their order)."""
    rows = []
    for fold, fold_cases in ((0, ["a", "b", "c"]), (1, ["d", "e", "f"])):
        for seed in (0, 1):
            label = pairing_label(f"results/s/fold{fold}-seed{seed}", 2 * fold + seed)
            for i, case in enumerate(fold_cases):
                for method, shift in (("variable", 0.01), ("fixed", 0.0)):
                    rows.append({"method": method, "budget": 0.5, "replicate": label, "case": case,
                                 "dice": 0.8 + 0.01 * i + shift + 0.001 * seed})
    out = comparison_rows(pd.DataFrame(rows), [("variable", "fixed")], ["dice"])
    assert out.n_cases.tolist() == [6] and out.n_replicates.tolist() == [2]
    assert out.mean_diff.iloc[0] == pytest.approx(0.01)
