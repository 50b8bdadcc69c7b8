"""export.quantize: int8 through the pipeline: the guard's decision for dense and every method's
last cycle, the accepted INT8 models written, evaluated and timed against their fp32 export,
their rows in summary.csv and their table in the report; nothing else reruns."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from varprune.core.layout import INT8, int8_models

from .workflow_helpers import edited_config, merged_config, scheduled, snakemake


def cfg_val_cases(cfg: dict) -> list[str]:
    from varprune.data.archive import case_id
    from varprune.data.splits import make_splits

    cases = [case_id(p) for p in range(1, cfg["synthetic"]["patients"] + 1)]
    return make_splits(cases, cfg["split"])["val"]

pytestmark = pytest.mark.workflow


def test_int8_models_are_guarded_evaluated_and_reported(done_run, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(done_run, workdir, symlinks=True)
    # A generous margin: the tiny models' single validation case must not decide this test.
    config = edited_config(tmp_path, **{"export.quantize": "int8", "export.max_dice_drop": 1.0})
    cfg = merged_config(config)
    models = int8_models(cfg["pruning"]["methods"], len(cfg["pruning"]["cycle_targets"]))
    jobs = scheduled(workdir, config=config)
    # Only INT8 work and the report: no model is trained, pruned, evaluated or costed again.
    assert set(jobs) == {"int8", "export", "report"} and jobs["int8"] == 1, jobs
    snakemake(workdir, config=config)
    results = workdir / "results" / "tiny"
    for model in models:
        folder = results / INT8 / model.folder
        record = json.loads((folder / "guard.json").read_text())
        assert record["accepted"] and record["mode"] == "dynamic", model
        assert record["guard_cases"] == cfg_val_cases(cfg)
        for name in ("model.onnx", "metrics.csv", "cost.json"):
            assert (folder / name).is_file(), (model, name)
        cost = json.loads((folder / "cost.json").read_text())
        assert cost["latency_ms_median"] > 0 and cost["latency_fp32_onnx_ms_median"] > 0
    summary = pd.read_csv(results / "report" / "summary.csv")
    int8 = summary[summary.format == "onnx-int8"]
    assert sorted(zip(int8.method, int8.cycle, strict=True)) == sorted((m.method, m.cycle) for m in models)
    assert (int8.quantization == "accepted").all() and int8.dice_mean.between(0, 1).all()
    assert (summary[summary.format == "pytorch"].groupby(["method", "cycle"]).size() == 1).all()
    page = (results / "report" / "report.html").read_text(encoding="utf-8")
    assert "INT8 on top of pruning" in page
    assert not scheduled(workdir, config=config)  # up to date


def test_int8_with_the_guarded_schedule_is_refused_with_the_way_out(tmp_path):
    config = edited_config(tmp_path, **{"export.quantize": "int8", "pruning.schedule": "guarded"})
    result = snakemake(tmp_path, "-n", config=config, check=False)
    assert result.returncode != 0
    assert "Invalid config: export.quantize:" in result.stdout + result.stderr
    assert "varprune export --quantize int8" in result.stdout + result.stderr
