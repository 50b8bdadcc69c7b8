"""config/3d.yaml on the tiny data, the comparison schedule: a 3D segmenter (slabs of model.depth
slices) through training, two pruning cycles per method, the controls, sliding-window evaluation
on the CT grid, cost, export and the report."""

from __future__ import annotations

import shutil
import time

import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from .workflow_helpers import REPO, TINY_CONFIG, snakemake

pytestmark = pytest.mark.workflow


def _tiny_3d(tmp_path):
    """The tiny config with config/3d.yaml's model keys, at a depth the tiny volumes (11-12
    slices) hold more than once, so that evaluation slides windows along z; two methods."""
    cfg = yaml.safe_load(TINY_CONFIG.read_text(encoding="utf-8"))
    preset = yaml.safe_load((REPO / "config" / "3d.yaml").read_text(encoding="utf-8"))
    cfg["model"] = {**cfg["model"], **preset["model"], "depth": 8}
    cfg["pruning"]["methods"] = ["variable", "fixed"]
    path = tmp_path / "tiny3d.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_the_3d_preset_runs_end_to_end_on_the_tiny_data(done_run, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(done_run, workdir, symlinks=True, ignore=shutil.ignore_patterns("results"))
    started = time.monotonic()
    snakemake(workdir, config=_tiny_3d(tmp_path))
    print(f"3D tiny run (data reused): {time.monotonic() - started:.0f} s")
    results = workdir / "results" / "tiny"
    for model in ("dense", "dense_long", "transformer_off", "variable/cycle1", "variable/cycle2",
                  "fixed/cycle2"):
        metrics = pd.read_csv(results / model / "metrics.csv")
        assert metrics.dice.between(0, 1).all() and len(metrics) >= 1, model
    cost = pd.read_json(results / "variable" / "cycle2" / "cost.json", typ="series")
    assert list(cost["input_shape"]) == [1, 1, 8, 32, 32]
    assert (results / "variable" / "cycle2" / "model.onnx").is_file()
    # Predictions are written on each test case's own CT grid, whatever its slice count.
    for pred in sorted((results / "variable" / "cycle2" / "pred").glob("*.nii.gz")):
        case = pred.name.split(".")[0]
        truth = sitk.ReadImage(str(workdir / "data" / "nifti" / case / "liver.nii.gz"))
        assert sitk.ReadImage(str(pred)).GetSize() == truth.GetSize()
    summary = pd.read_csv(results / "report" / "summary.csv")
    assert {"variable", "fixed"} <= set(summary["method"])
    assert (results / "report" / "report.html").stat().st_size > 10_000
