"""A pruning method from another package (entry-point group `varprune.methods`), named with an
underscore, runs through the workflow: its cycles are pruned, evaluated, costed and exported,
and nothing the other methods made reruns."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from .method_plugin import write_plugin
from .workflow_helpers import edited_config, merged_config, scheduled, snakemake

pytestmark = pytest.mark.workflow


def test_a_plugin_method_with_an_underscore_runs_through_evaluate_cost_and_export(done_run, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(done_run, workdir, symlinks=True)
    site = write_plugin(tmp_path / "site")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    cfg = merged_config()
    config = edited_config(tmp_path, **{"pruning.methods": [*cfg["pruning"]["methods"], "uniform_random"]})
    run = f"results/{cfg['run']}"
    last = len(cfg["pruning"]["cycle_targets"])
    exports = [f"model.{fmt}" for fmt in cfg["export"]["formats"]]
    targets = [f"{run}/uniform_random/cycle{last}/{name}" for name in ("metrics.csv", "cost.json", *exports)]

    planned = scheduled(workdir, config, targets=tuple(targets), env=env)
    assert planned == {"prune_cycle": last, "evaluate": 1, "cost": 1, "export": len(targets) - 2}, planned

    snakemake(workdir, *targets, config=config, env=env)
    metrics = pd.read_csv(workdir / targets[0])
    assert len(metrics) > 0 and metrics["dice"].between(0, 1).all()
    for target in targets[1:]:
        assert (workdir / target).stat().st_size > 0
    sequence = pd.read_csv(workdir / f"{run}/uniform_random/cycle{last}/sequence.csv")
    assert (sequence["channels_after"] <= sequence["channels_before"]).all()
    assert (sequence["channels_after"] < sequence["channels_before"]).any()
