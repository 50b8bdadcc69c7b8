"""The rules' input and params functions (varprune.workflow.inputs) and job requests
(varprune.workflow.requests), called as Snakemake calls them, with a namespace for the wildcards."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import yaml

from varprune.pruning.guard import GuardSettings, decide, plan
from varprune.workflow.cases import case_ids, checked_replicates, checked_splits
from varprune.workflow.checks import ConfigError
from varprune.workflow.inputs import RuleInputs
from varprune.workflow.requests import JobRequests

from .workflow_helpers import REPO

CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))


class Wildcards(SimpleNamespace):
    def items(self):
        return vars(self).items()


def _inputs(read_decision=None, **sections) -> RuleInputs:
    config = copy.deepcopy(CONFIG)
    for section, values in sections.items():
        config[section].update(values)
    replicates = checked_replicates(config)
    folds = sorted({r.fold for r in replicates if r.fold is not None})
    splits = checked_splits(case_ids(config, {}), config, folds)
    return RuleInputs(config, splits, replicates, read_decision or (lambda run, method, k: ""))


def test_cases_name_the_replicates_own_split():
    inputs = _inputs(split={"mode": "kfold", "folds": 5}, replicates={"folds": "all", "seeds": [0, 1]})
    assert inputs.replicate_runs("r") == [f"r/fold{f}-seed{s}" for f in range(5) for s in (0, 1)]
    test_fold2 = inputs.cases("test")(Wildcards(run="r/fold2-seed1"))
    assert test_fold2 == [f"data/preprocessed/{c}.npz" for c in inputs.splits[2]["test"]]
    truth = inputs.cases("test", "data/nifti/{case}/liver.nii.gz")(Wildcards(run="r/fold2-seed0"))
    assert [t.split("/")[2] for t in truth] == inputs.splits[2]["test"]
    assert inputs.split_file(Wildcards(run="r/fold2-seed1")) == "data/splits/fold2.json"
    assert inputs.seeded("train")(Wildcards(run="r/fold2-seed1"))["seed"] == 1


def test_fixed_cycles_chain_from_dense_and_see_their_own_target_and_the_parents():
    inputs = _inputs()
    wildcards = Wildcards(run="default", method="variable", k="2")
    assert inputs.previous_model(Wildcards(run="default", method="variable", k="1")) == \
        "results/default/dense/model.pt"
    assert inputs.previous_model(wildcards) == "results/default/variable/cycle1/model.pt"
    pruning = inputs.cycle_pruning(wildcards)
    assert (pruning["target"], pruning["previous_target"]) == tuple(CONFIG["pruning"]["cycle_targets"][1::-1])
    assert "cycle_targets" not in pruning and "cycle_targets" not in inputs.oneshot_pruning(wildcards)
    assert inputs.state_dir("{method}/cycle{k}")(wildcards) == "results/default/.state/variable/cycle2"
    assert inputs.reference_parent(Wildcards(run="default", k="1")) == "results/default/dense/model.pt"
    assert inputs.reference_parent(Wildcards(run="default", k="3")) == \
        "results/default/dense_long/round2/model.pt"


def test_the_distillation_teacher_is_an_input_only_when_dense_teaches():
    wildcards = Wildcards(run="default")
    assert _inputs().distill_teacher(wildcards) == []
    taught = _inputs(finetune={**CONFIG["finetune"], "distill": {"weight": 0.5, "teacher": "dense",
                                                                "temperature": 1.0}})
    assert taught.distill_teacher(wildcards) == "results/default/dense/model.pt"


def test_guarded_inputs_follow_the_decisions_read_through_the_checkpoint(tmp_path):
    settings = GuardSettings.from_config(CONFIG["pruning"]["guard"])
    decisions = []
    for k, val in enumerate([0.9, 0.8], start=1):  # cycle 1 passes, cycle 2 fails
        target, parent, depth = plan(decisions, settings)
        previous = decisions[-1] if decisions else None
        decisions.append(decide(k, target, parent, depth, val, 0.9, previous, settings, reachable=0.99))
        decisions[-1].write(tmp_path / f"cycle{k}.json")
    asked = []

    def read(run, method, k):
        asked.append((run, method, k))
        return str(tmp_path / f"cycle{k}.json")

    inputs = _inputs(read, pruning={"schedule": "guarded"})
    wildcards = Wildcards(run="g", method="fixed", k="3")
    assert inputs.guarded
    assert inputs.previous_model(wildcards) == "results/g/fixed/cycle1/model.pt"
    assert inputs.guard_fallback(wildcards) == "results/g/fixed/cycle1/model.pt"
    assert inputs.earlier_decisions(wildcards) == ["results/g/fixed/guard/cycle1.json",
                                                   "results/g/fixed/guard/cycle2.json"]
    assert inputs.guard_reference(wildcards).startswith("results/g/dense_long/round")
    assert inputs.cycle_pruning(wildcards)["previous_target"] == pytest.approx(decisions[0].target)
    assert asked and {a[:2] for a in asked} == {("g", "fixed")}


def test_run_level_inputs_name_every_model_once():
    inputs = _inputs()
    latency = inputs.latency_inputs(Wildcards(run="default"))
    assert len(latency) == len(set(latency)) and "results/default/dense/model.pt" in latency
    assert inputs.latency_models() == [path.split("/", 2)[2].rsplit("/", 1)[0] for path in latency]
    report = inputs.report_inputs(Wildcards(run="default"))
    assert len(report["cases_ct"]) == CONFIG["report"]["cases"]
    assert report["cases_ct"][0] == f"data/nifti/{inputs.splits[None]['test'][0]}/ct.nii.gz"
    assert "int8__folder" not in report or CONFIG["export"]["quantize"] == "int8"
    int8 = _inputs(export={"quantize": "int8"})
    assert int8.int8_inputs("default") == {"int8__folder": "results/default/int8"}
    assert all(p.endswith("/model.onnx") for p in int8.int8_sources("model.onnx")(Wildcards(run="default")))
    assert set(int8.quantize_settings()) == {"quantize_mode", "quantize_ops", "calibration_slices",
                                             "max_dice_drop"}
    assert "results/default/report/report.html" in inputs.final_outputs()


def test_jobs_that_time_latency_reserve_a_local_runs_cores_only_when_alone():
    config = copy.deepcopy(CONFIG)
    splits = checked_splits(case_ids(config, {}), config, [])
    threads = config["cost"]["threads"]
    assert JobRequests.for_splits(config, splits, local_cores=8).timing_threads() == max(threads, 8)
    assert JobRequests.for_splits(config, splits, local_cores=None).timing_threads() == threads
    config["cost"]["alone"] = False
    assert JobRequests.for_splits(config, splits, local_cores=8).timing_threads() == threads


def test_job_requests_grow_with_rounds_and_a_bad_override_names_its_key():
    config = copy.deepcopy(CONFIG)
    splits = checked_splits(case_ids(config, {}), config, [])
    jobs = JobRequests.for_splits(config, splits)
    assert jobs.cohort.test == len(splits[None]["test"])
    assert jobs.resources("dense_long", rounds=3)["runtime"] >= jobs.resources("dense_long")["runtime"]
    with pytest.raises(ConfigError, match="resources.rules.nonsense"):
        jobs.resources("nonsense")
