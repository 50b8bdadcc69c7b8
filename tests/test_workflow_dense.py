"""The dense model in the workflow: train, evaluate and cost rules, reruns, and resume after a kill."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import SimpleITK as sitk
import torch

from varprune.engine.evaluate import METRIC_COLUMNS
from varprune.model.network import load_model, read_checkpoint

from .workflow_helpers import (
    CORES,
    LOCAL_ENV,
    REPO,
    TINY_CONFIG,
    edited_config,
    model_jobs,
    scheduled,
    snakemake,
)

pytestmark = pytest.mark.workflow


@pytest.mark.quick  # the quick tier's end-to-end run: the tiny pipeline from the archive to the report
def test_tiny_run_trains_evaluates_and_costs_the_dense_model(done_run):
    dense = done_run / "results" / "tiny" / "dense"
    model, spec, provenance = load_model(dense / "model.pt")
    assert spec.hidden == 32 and provenance["kind"] == "dense"
    assert len(provenance["split"]["test"]) == 1
    with open(dense / "train_log.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == list(range(1, 9))
    with open(dense / "metrics.csv") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == METRIC_COLUMNS
    assert [r["case"] for r in rows] == provenance["split"]["test"]
    case = rows[0]["case"]
    pred = sitk.ReadImage(str(dense / "pred" / f"{case}.nii.gz"))
    ct = sitk.ReadImage(str(done_run / "data" / "nifti" / case / "ct.nii.gz"))
    assert pred.GetSize() == ct.GetSize() and pred.GetSpacing() == ct.GetSpacing()
    assert pred.GetOrigin() == ct.GetOrigin() and pred.GetDirection() == ct.GetDirection()
    # metrics.csv describes the saved prediction: its Dice against the truth, counted here by hand
    predicted = sitk.GetArrayFromImage(pred) > 0
    truth_path = done_run / "data" / "nifti" / case / "liver.nii.gz"
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(truth_path))) > 0
    by_hand = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
    assert float(rows[0]["dice"]) == pytest.approx(by_hand, abs=1e-5)
    cost = json.loads((dense / "cost.json").read_text())
    assert cost["params"] == sum(p.numel() for p in model.parameters())
    assert cost["input_shape"] == [1, 1, 32, 32]
    assert cost["macs_full"] > 0 and cost["macs_thop"] > 0
    assert not any(key.startswith("latency") for key in cost)  # the run's latency job times it


def test_editing_training_reruns_training_evaluation_and_cost(done_run, tmp_path):
    config = edited_config(tmp_path, **{"train.lr": 0.001})
    assert scheduled(done_run, config=config) == model_jobs()


def test_editing_evaluation_reruns_the_evaluations_alone(done_run, tmp_path):
    config = edited_config(tmp_path, **{"evaluate.interpolate": False})
    assert scheduled(done_run, config=config) == {"evaluate": model_jobs()["evaluate"], "report": 1}


def test_sigkill_during_training_then_rerun_resumes_and_matches(done_run, tmp_path):
    """Kill snakemake and the training job with SIGKILL after an epoch; the rerun continues
    from the last completed epoch and ends with the same weights as the uninterrupted run."""
    workdir = tmp_path / "work"
    shutil.copytree(done_run, workdir, symlinks=True,
                    ignore=shutil.ignore_patterns("results", "locks", "incomplete"))
    state = workdir / "results" / "tiny" / ".state" / "dense" / "last.pt"
    # The same cores as the uninterrupted run: Snakemake caps a job's threads at --cores, and
    # another thread count changes reduction orders and so the weights' last bits.
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--cores", str(CORES), "results/tiny/dense/model.pt", "--configfile", str(TINY_CONFIG)]
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                           env=LOCAL_ENV)
    deadline = time.monotonic() + 900  # a slow machine's start-up and first epoch
    while not state.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if job.poll() is None:
        os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert state.exists(), "training ended or failed before the first epoch was saved"
    epochs_done = torch.load(state, weights_only=True)["epoch"]
    assert 1 <= epochs_done < 8, "the kill came after training ended: raise train.epochs in tiny.yaml"

    snakemake(workdir, "--unlock")
    snakemake(workdir, "results/tiny/dense/model.pt")
    log = (workdir / "logs" / "tiny" / "dense" / "train.log").read_text()
    assert f"resuming after epoch {epochs_done} of 8" in log
    resumed = read_checkpoint(workdir / "results" / "tiny" / "dense" / "model.pt")["state_dict"]
    straight = read_checkpoint(done_run / "results" / "tiny" / "dense" / "model.pt")["state_dict"]
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    assert not state.parent.exists()  # resumed, finished: its resume state is gone


def test_a_successful_run_leaves_no_resume_state_and_keeping_it_reruns_nothing(done_run, tmp_path):
    assert not (done_run / "results" / "tiny" / ".state").exists()
    assert scheduled(done_run, config=edited_config(tmp_path, **{"train.keep_state": True})) == {}
