"""What the run's models are compared with, and how: the summary table, the paired
comparisons (comparison.csv) and the transformer headroom.

Every pruned model is read against the controls (varprune.controls): `dense_long` (the dense
model with the same extra fine-tuning) for "how much accuracy was lost", `random` (same
budget, uninformed allocation) for "did the allocation matter", and `transformer_off` for
"could the transformer matter at all on this data". Differences are paired over test cases
(and replicates), with intervals and tests from varprune.stats.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from varprune.methods import CONTROLS, PRUNING_METHODS
from varprune.stats import PairedComparison, comparison_rows, paired_comparison

METRICS = ["dice", "voe", "rvd", "assd_mm", "msd_mm", "hd95_mm"]
COMPARED_METRICS = ["dice", "hd95_mm"]
REFERENCES = ("dense", *CONTROLS)
# Below this headroom (dense_long − transformer_off, in Dice) no ranking of transformer pruning
# methods means anything on this data.
HEADROOM_WARNING = 0.02


def model_names(methods: list[str], cycles: int) -> list[tuple[str, int, str]]:
    """(method, cycle, folder) of every model: dense and the controls first (cycle 0)."""
    references = [(name, 0, name) for name in REFERENCES]
    return references + [(m, k, f"{m}/cycle{k}") for m in methods for k in range(1, cycles + 1)]


def _oneshot(folder: Path) -> dict:
    path = folder / "oneshot.json"
    return json.loads(path.read_text()) if path.exists() else {}


def summary_table(results: Path, methods: list[str], targets: list[float]) -> pd.DataFrame:
    """One row per model: size, cost and their reductions vs dense, metrics (mean, std over test
    cases), Dice against dense_long, and validation Dice before and after fine-tuning."""
    rows = []
    for method, cycle, folder in model_names(methods, len(targets)):
        cost = json.loads((results / folder / "cost.json").read_text())
        metrics = pd.read_csv(results / folder / "metrics.csv")
        oneshot = _oneshot(results / folder)
        row = {"method": method, "cycle": cycle, "target": targets[cycle - 1] if cycle else 0.0,
               "params": cost["params"], "macs_thop": cost["macs_thop"], "macs_full": cost["macs_full"],
               "macs_transformer": cost["macs_transformer"], "latency_ms": cost["latency_ms_median"],
               "latency_encoder_ms": cost["latency_encoder_ms_median"],
               "val_dice_before_finetune": oneshot.get("val_dice_before", math.nan),
               "val_dice_after_finetune": oneshot.get("val_dice_after", math.nan)}
        for metric in METRICS:
            row[f"{metric}_mean"] = metrics[metric].mean()
            row[f"{metric}_std"] = metrics[metric].std(ddof=0)
        rows.append(row)
    table = pd.DataFrame(rows)
    dense = table[table.method == "dense"].iloc[0]
    for key in ("params", "macs_thop", "macs_full", "macs_transformer", "latency_ms", "latency_encoder_ms"):
        table[f"{key}_reduction"] = 1 - table[key] / dense[key]
    long = table[table.method == "dense_long"].iloc[0]
    table["dice_vs_dense_long"] = table["dice_mean"] - long["dice_mean"]
    order = ["method", "cycle", "target", "params", "params_reduction", "macs_thop", "macs_thop_reduction",
             "macs_full", "macs_full_reduction", "macs_transformer", "macs_transformer_reduction",
             "latency_ms", "latency_ms_reduction", "latency_encoder_ms", "latency_encoder_ms_reduction"]
    order += [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    order += ["dice_vs_dense_long", "val_dice_before_finetune", "val_dice_after_finetune"]
    return table[order]


def metrics_long(results: Path, methods: list[str], targets: list[float]) -> pd.DataFrame:
    """Per-case metrics of every model in long form (method, budget, replicate, case, metrics):
    the references carry no budget (they are compared at every budget)."""
    frames = []
    for method, cycle, folder in model_names(methods, len(targets)):
        frame = pd.read_csv(results / folder / "metrics.csv")
        frame["method"] = method
        frame["budget"] = targets[cycle - 1] if cycle else math.nan
        frame["replicate"] = 0
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def comparison_pairs(methods: list[str]) -> list[tuple[str, str]]:
    """(a, b) pairs to compare: the paper's method against the others, every informed method
    against random, and every method against dense_long."""
    ordered = [m for m in PRUNING_METHODS if m in methods]
    informed = [m for m in ordered if m != "random"]
    pairs = [("variable", m) for m in ordered if "variable" in ordered and m not in ("variable", "random")]
    if "random" in ordered:
        pairs += [(m, "random") for m in informed]
    return pairs + [(m, "dense_long") for m in ordered]


def comparison_table(long: pd.DataFrame, methods: list[str], seed: int = 0) -> pd.DataFrame:
    """comparison.csv: one paired comparison per budget, pair and metric."""
    return comparison_rows(long[long.method != "dense"], comparison_pairs(methods), COMPARED_METRICS,
                           seed=seed)


def headroom(long: pd.DataFrame) -> PairedComparison:
    """dense_long − transformer_off test Dice, paired over cases: what the transformer carries."""
    a = long[long.method == "dense_long"].set_index("case")["dice"]
    b = long[long.method == "transformer_off"].set_index("case")["dice"]
    cases = sorted(set(a.index) & set(b.index))
    return paired_comparison(np.array([a[c] for c in cases]), np.array([b[c] for c in cases]))
