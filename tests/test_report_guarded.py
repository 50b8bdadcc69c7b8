"""The guarded report from the files it is given: per-seed selections, their spread, the search plot."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from varprune.core.layout import guarded_report_files
from varprune.pruning.guard import GuardSettings, decide, plan
from varprune.report.guarded import build_guarded_report

from .workflow_helpers import merged_config


def _write_run(folder: Path, method: str, knee: float, seed: int) -> tuple[int, str]:
    """A finished guarded search of `method` in `folder`, its Dice falling past `knee`."""
    settings = GuardSettings(step=0.05, start=0.30, max_cycles=20)
    chain = []
    while not chain or chain[-1].stopped_because is None:
        target, parent, depth = plan(chain, settings)
        val = 0.90 if target <= knee else 0.85
        chain.append(decide(len(chain) + 1, target, parent, depth, val, 0.90, chain[-1] if chain else None,
                            settings, 0.95))
        chain[-1].write(folder / method / "guard" / f"cycle{len(chain)}.json")
    chosen = next(d for d in chain if d.cycle == chain[-1].selected)
    selected = folder / method / "selected"
    (selected / "selected.json").write_text(json.dumps({
        "cycle": chosen.cycle, "target": chosen.target, "val_dice": chosen.val_dice, "depth": chosen.depth,
        "reference": chosen.reference, "cycles_tried": len(chain),
        "stopped_because": chain[-1].stopped_because}))
    macs = round(1e9 * (1 - chosen.target))
    cost = {"macs_full": macs, "macs_transformer": macs // 2, "params": 1000 - seed}
    (selected / "cost.json").write_text(json.dumps(cost))
    pd.DataFrame({"case": ["a", "b"], "dice": [0.9, 0.92]}).to_csv(selected / "metrics.csv", index=False)
    reference = folder / "dense_long" / f"round{chosen.depth}"
    reference.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"case": ["a", "b"], "dice": [0.91, 0.91]}).to_csv(reference / "metrics.csv", index=False)
    return len(chain), f"dense_long/round{chosen.depth}"


def test_the_guarded_report_lists_every_seed_and_the_spread(tmp_path):
    folders = [tmp_path / f"seed{s}" for s in (0, 1)]
    methods = ["variable", "fixed"]
    searches = {}
    for index, folder in enumerate(folders):
        (folder / "dense").mkdir(parents=True)
        (folder / "dense" / "cost.json").write_text(json.dumps(
            {"macs_full": 10**9, "macs_transformer": 10**9 // 2, "params": 2000}))
        pd.DataFrame({"model": ["dense", "variable/selected", "fixed/selected"],
                      "latency_ms": [20.0, 10.0, 12.0], "latency_spread_ms": [0.5, 0.4, 0.3]}).to_csv(
            folder / "latency.csv", index=False)
        pd.DataFrame({"case": ["a", "b"], "dice": [0.9, 0.9]}).to_csv(folder / "dense" / "metrics.csv",
                                                                      index=False)
        for method, knee in zip(methods, (0.62 + 0.05 * index, 0.5), strict=True):
            for sub in ("guard", "selected"):
                (folder / method / sub).mkdir(parents=True, exist_ok=True)
            searches[(index, method)] = _write_run(folder, method, knee, index)
    files = guarded_report_files(folders, methods, searches, formats=[])
    config = merged_config()
    config["pruning"]["methods"] = methods
    out = tmp_path / "report"
    table = build_guarded_report(files, config, {}, out / "guarded.csv", out / "report.html",
                                 out / "guarded.png")
    assert table.groupby("method").size().to_dict() == {"variable": 2, "fixed": 2}
    variable = table[table.method == "variable"]
    assert sorted(variable.target.round(4)) == [0.6125, 0.6625]  # each seed's own knee, to min_step
    assert table.macs_removed.to_numpy() == pytest.approx(table.target.to_numpy())
    reductions = table.groupby("method").latency_reduction.mean().to_dict()
    assert reductions == pytest.approx({"variable": 0.5, "fixed": 0.4})
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "seeds: 61.3 %, 66.2 %" in html  # the per-seed selections, not just their mean
    assert (out / "guarded.png").stat().st_size > 10_000
