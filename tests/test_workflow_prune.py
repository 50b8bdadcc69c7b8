"""Pruning cycles in the workflow: one job and checkpoint per cycle, exact reruns, bad configs."""

from __future__ import annotations

import csv
import json

import pytest

from varprune.model.network import load_model
from varprune.pruning.cycle import SEQUENCE_COLUMNS

from .workflow_helpers import budget_met, edited_config, merged_config, model_jobs, scheduled, snakemake

pytestmark = pytest.mark.workflow
METHODS = tuple(merged_config()["pruning"]["methods"])


def test_every_cycle_of_every_method_has_its_checkpoint_sequence_and_evaluation(done_run):
    results = done_run / "results" / "tiny"
    dense_cost = json.loads((results / "dense" / "cost.json").read_text())
    for method in METHODS:
        for k, target in ((1, 0.04), (2, 0.07)):
            folder = results / method / f"cycle{k}"
            model, spec, provenance = load_model(folder / "model.pt")
            assert provenance["method"] == method and provenance["cycle"] == k
            parent = "dense" if k == 1 else f"{method}/cycle1"
            assert provenance["parent"] == f"results/tiny/{parent}/model.pt"
            with open(folder / "sequence.csv") as fh:
                reader = csv.DictReader(fh)
                rows = list(reader)
            assert reader.fieldnames == SEQUENCE_COLUMNS
            assert len(rows) == 24 and {r["block"] for r in rows} == {"msa", "ffn"}
            ffn_after = [int(r["channels_after"]) for r in rows if r["block"] == "ffn"]
            assert ffn_after == [layer.ffn for layer in spec.layers]
            cost = json.loads((folder / "cost.json").read_text())
            reduction = 1 - cost["macs_full"] / dense_cost["macs_full"]
            assert budget_met(reduction, target, dense_cost["macs_full"]), (method, k, reduction)
            assert (folder / "metrics.csv").exists() and (folder / "finetune_log.csv").exists()


def test_appending_a_target_adds_one_cycle_per_method(done_run, tmp_path):
    config = edited_config(tmp_path, **{"pruning.cycle_targets": [0.04, 0.07, 0.09]})
    # The controls follow: dense_long and transformer_off get one fine-tuning round per cycle.
    n = len(METHODS)
    assert scheduled(done_run, config=config) == {
        "prune_cycle": n, "dense_long": 1, "transformer_off": 1, "evaluate": n + 2, "cost": n + 2,
        "latency": 1, "export": model_jobs()["export"], "report": 1}


def test_editing_the_second_target_reruns_the_second_cycles(done_run, tmp_path):
    config = edited_config(tmp_path, **{"pruning.cycle_targets": [0.04, 0.08]})
    n = len(METHODS)
    assert scheduled(done_run, config=config) == {
        "prune_cycle": n, "evaluate": n, "cost": n, "latency": 1, "export": model_jobs()["export"],
        "report": 1}


def test_changing_the_finetuning_budget_reruns_cycles_not_data_or_dense(done_run, tmp_path):
    config = edited_config(tmp_path, **{"finetune.epochs": 2})
    everything = model_jobs()  # all but the dense model and its one-shot curve (no fine-tuning there)
    assert scheduled(done_run, config=config) == {
        **{rule: n for rule, n in everything.items() if rule not in ("train", "oneshot")},
        "evaluate": everything["evaluate"] - 1, "cost": everything["cost"] - 1}


@pytest.mark.parametrize(
    "change, key",
    [
        ({"pruning.cycle_targets": [0.04, 0.999]}, "pruning.cycle_targets"),
        ({"pruning.methods": ["variable", "magic"]}, "pruning.methods"),
    ],
)
def test_a_bad_pruning_config_is_refused_before_any_job(tmp_path, change, key):
    """Two cases through Snakemake; all of them are unit tests in tests/test_checks.py."""
    result = snakemake(tmp_path, "-n", config=edited_config(tmp_path, **change), check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0 and key in text, text
    assert "Job stats" not in text
