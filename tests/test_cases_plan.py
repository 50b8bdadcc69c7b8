"""Cases, replicates and splits as the workflow plans them at parse time (varprune.workflow.cases)."""

from __future__ import annotations

import copy

import pytest
import yaml

from varprune.workflow.cases import case_ids, checked_replicates, checked_splits, patient_numbers
from varprune.workflow.checks import ConfigError

from .workflow_helpers import REPO

CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))


def _config(**sections) -> dict:
    config = copy.deepcopy(CONFIG)
    for section, values in sections.items():
        config[section].update(values)
    return config


def test_cases_are_every_patient_of_the_source_or_the_chosen_ones():
    assert case_ids(_config(), {}) == [f"ircad{p:02d}" for p in range(1, CONFIG["synthetic"]["patients"] + 1)]
    assert patient_numbers(_config(data={"source": "ircadb"})) == list(range(1, 21))
    assert case_ids(_config(data={"patients": [12, 3]}), {}) == ["ircad03", "ircad12"]
    assert case_ids(_config(data={"source": "nifti"}), {"liver_7": ("a", "b")}) == ["liver_7"]


def test_the_default_split_is_6_4_10_and_folds_test_every_patient_once():
    cases = case_ids(_config(), {})
    (split,) = checked_splits(cases, _config(), []).values()
    assert [len(split[s]) for s in ("train", "val", "test")] == [6, 4, 10]
    config = _config(split={"mode": "kfold", "folds": 5}, replicates={"folds": "all"})
    folds = sorted({r.fold for r in checked_replicates(config)})
    splits = checked_splits(cases, config, folds)
    tested = sorted(case for split in splits.values() for case in split["test"])
    assert folds == [0, 1, 2, 3, 4] and tested == cases


def test_impossible_splits_and_replicates_name_the_key():
    with pytest.raises(ConfigError, match="Invalid config: split: "):
        checked_splits(["ircad01", "ircad02"], _config(split={"ratios": [1, 1, 0]}), [])
    with pytest.raises(ConfigError, match="Invalid config: replicates.folds: "):
        checked_replicates(_config(replicates={"folds": "all"}))  # folds without split.mode kfold


def test_a_whole_run_builds_every_model_of_every_replicate_and_one_report():
    from varprune.core.layout import final_outputs

    folders = ["results/r/seed0", "results/r/seed1"]
    planned = final_outputs("r", folders, ["data/splits.json"] * 2, ["variable", "fixed"], 3, guarded=False)
    assert planned[0] == "data/splits.json" and planned[-1] == "results/r/report/report.html"
    assert "results/r/seed1/fixed/cycle3/cost.json" in planned and "results/r/seed0/oneshot.csv" in planned
    models = 2 * (1 + 2 + 2 * 3)  # per replicate: dense, dense_long and transformer_off, 2 methods x 3 cycles
    assert len(planned) == 1 + models * 3 + 2 + 1
    guarded = final_outputs("r", folders, ["data/splits.json"], ["variable"], 0, guarded=True)
    assert "results/r/seed1/variable/selected/selected.json" in guarded
    assert not any(path.endswith("oneshot.csv") for path in guarded)
