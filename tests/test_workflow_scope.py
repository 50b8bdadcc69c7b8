"""pruning.scope all through the pipeline: cycles narrow the decoder (SETR's head, with
distillation; UNETR's convolutional encoders/decoder) and the embedding width, every later step
(evaluation, cost, export, report) takes the pruned models."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch

from varprune.model.network import load_model

from .workflow_helpers import edited_config, snakemake

pytestmark = pytest.mark.workflow


def test_scope_all_with_distillation_runs_end_to_end(done_run, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(done_run, workdir, symlinks=True)  # the dense model is reused
    config = edited_config(tmp_path, **{"pruning.scope": "all", "pruning.methods": ["variable", "global"],
                                        "pruning.cycle_targets": [0.3, 0.5], "finetune.distill.weight": 1.0})
    snakemake(workdir, config=config)
    results = workdir / "results" / "tiny"
    _, dense, _ = load_model(results / "dense" / "model.pt")
    for method in ("variable", "global"):
        model, spec, provenance = load_model(results / method / "cycle2" / "model.pt")
        assert spec.width < dense.hidden and sum(spec.stages) < sum(dense.head_channels), method
        assert provenance["pruning"]["reduction_vs_dense"] >= 0.5 - 1e-6
        with torch.no_grad():
            assert model(torch.zeros(spec.input_shape(1))).shape[1] == 2
        sequence = pd.read_csv(results / method / "cycle2" / "sequence.csv")
        assert {"msa", "ffn", "head", "embed"} == set(sequence.block)
        assert (sequence.channels_after <= sequence.channels_before).all()
        metrics = pd.read_csv(results / method / "cycle2" / "metrics.csv")
        assert metrics.dice.between(0, 1).all()
        assert (results / method / "cycle2" / "model.onnx").is_file()
    summary = pd.read_csv(results / "report" / "summary.csv")
    assert {"variable", "global"} <= set(summary["method"])
    page = (results / "report" / "report.html").read_text(encoding="utf-8")
    assert "pruning.scope all" in page and "Latency per part" in page


def test_unetr_scope_all_runs_end_to_end(done_run, tmp_path):
    """UNETR's convolutional encoders/decoder (skips included) and embedding width through the
    pipeline: its own dense model, two cycles per method, evaluation, cost, export, report."""
    workdir = tmp_path / "work"
    shutil.copytree(done_run, workdir, symlinks=True)  # the data is reused
    config = edited_config(tmp_path, **{"model.arch": "unetr", "model.patch": 16, "pruning.scope": "all",
                                        "pruning.methods": ["variable", "fixed"], "pruning.min_embed": 4,
                                        "pruning.cycle_targets": [0.3, 0.5], "train.epochs": 2})
    snakemake(workdir, config=config)
    results = workdir / "results" / "tiny"
    _, dense, _ = load_model(results / "dense" / "model.pt")
    assert dense.arch == "unetr"
    for method in ("variable", "fixed"):
        model, spec, provenance = load_model(results / method / "cycle2" / "model.pt")
        assert sum(spec.stages) < sum(dense.dense_stages), method
        # fixed cuts every group at its rate; variable may leave the one-member embedding level alone
        assert spec.width < dense.hidden or method == "variable"
        assert provenance["pruning"]["reduction_vs_dense"] >= 0.5 - 1e-6
        sequence = pd.read_csv(results / method / "cycle2" / "sequence.csv")
        assert {"msa", "ffn", "head", "embed"} == set(sequence.block)
        assert len(sequence[sequence.block == "head"]) == len(dense.dense_stages)
        assert pd.read_csv(results / method / "cycle2" / "metrics.csv").dice.between(0, 1).all()
        assert (results / method / "cycle2" / "model.onnx").is_file()
    page = (results / "report" / "report.html").read_text(encoding="utf-8")
    assert "pruning.scope all" in page and "UNETR" in page
