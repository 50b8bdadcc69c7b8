"""What the run's models are compared with, and how: the summary table, the paired
comparisons (comparison.csv) and the transformer headroom.

Every pruned model is read against the controls (varprune.engine.controls): `dense_long` (the dense
model with the same extra fine-tuning) for "how much accuracy was lost", `random` (same
budget, uninformed allocation) for "did the allocation matter", and `transformer_off` for
"could the transformer matter at all on this data". Differences are paired over test cases
(and replicates), with intervals and tests from varprune.study.stats.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from varprune.core.layout import Model, RunFiles, run_models
from varprune.core.methods import PRUNING_METHODS
from varprune.core.methods import comparison_pairs as method_pairs
from varprune.study.replicates import pairing_label
from varprune.study.stats import PairedComparison, comparison_rows, paired_comparison

METRICS = ["dice", "voe", "rvd", "assd_mm", "msd_mm", "hd95_mm"]
COMPARED_METRICS = ["dice", "hd95_mm"]
# Below this headroom (dense_long − transformer_off, in Dice) no ranking of transformer pruning
# methods means anything on this data.
HEADROOM_WARNING = 0.02
# The latency job's columns (varprune.engine.latency) that summary.csv carries, per model.
LATENCY_COLUMNS = ["latency_ms", "latency_spread_ms", "latency_encoder_ms", "latency_embedding_ms",
                   "latency_transformer_ms", "latency_decoder_ms", "latency_onnx_ms",
                   "latency_onnx_spread_ms"]


def _mean(records: list[dict], key: str) -> float:
    values = [r[key] for r in records if key in r]
    return float(np.mean(values)) if values else math.nan


def beyond_spread(median: pd.Series, spread: pd.Series, reference: float, reference_spread: float,
                  floor: float = 0.0) -> pd.Series:
    """Whether a latency differs from the reference's by more than the timings' spread: the gap
    exceeds both latencies' spreads (the range of their medians over the latency job's
    interleaved rounds) and `floor`, the difference between dense and dense_long, the same
    network timed twice. A difference inside the spread is noise of the timing, not a speed-up;
    so is every difference when the spread is unknown."""
    gap = (median - reference).abs()
    return ((gap > np.maximum(spread, reference_spread)) & (gap > floor)).fillna(False)


def summary_table(files: RunFiles, methods: list[str], targets: list[float]) -> pd.DataFrame:
    """One row per model over all replicates: size and cost (mean over replicates) and their
    reductions vs dense, metrics (mean, std over replicates × test cases), Dice against
    dense_long, and validation Dice before and after fine-tuning."""
    rows = []
    replicates = range(files.replicates)
    timings = [pd.read_csv(files.latency_table(r)).set_index("model") for r in replicates]
    for model in run_models(methods, len(targets)):
        method, cycle = model.method, model.cycle
        costs = [json.loads(files.path(r, model, "cost").read_text()) for r in replicates]
        metrics = pd.concat([pd.read_csv(files.path(r, model, "metrics")) for r in replicates],
                            ignore_index=True)
        oneshots = [json.loads(files.path(r, model, "oneshot").read_text()) if cycle else {}
                    for r in replicates]
        row = {"method": method, "cycle": cycle, "target": targets[cycle - 1] if cycle else 0.0,
               "replicates": files.replicates}
        for key in ("params", "macs_thop", "macs_full", "macs_transformer"):
            row[key] = int(round(_mean(costs, key)))  # equal over replicates but for rounding of widths
        for column in LATENCY_COLUMNS:  # mean over replicates of each replicate's side-by-side timing
            row[column] = float(np.mean([timing.loc[model.folder, column] for timing in timings]))
        row["val_dice_before_finetune"] = _mean(oneshots, "val_dice_before")
        row["val_dice_after_finetune"] = _mean(oneshots, "val_dice_after")
        for metric in METRICS:
            row[f"{metric}_mean"] = metrics[metric].mean()
            row[f"{metric}_std"] = metrics[metric].std(ddof=0)
        rows.append(row)
    table = pd.DataFrame(rows)
    dense = table[table.method == "dense"].iloc[0]
    for key in ("params", "macs_thop", "macs_full", "macs_transformer", "latency_ms", "latency_encoder_ms",
                "latency_onnx_ms"):
        table[f"{key}_reduction"] = 1 - table[key] / dense[key]
    long = table[table.method == "dense_long"].iloc[0]
    # dense and dense_long are the same network: their latencies differ by timing noise only.
    noise = abs(long["latency_ms"] - dense["latency_ms"])
    table["latency_noise_ms"] = noise
    table["latency_beyond_spread"] = beyond_spread(table.latency_ms, table.latency_spread_ms,
                                                   dense["latency_ms"], dense["latency_spread_ms"], noise)
    onnx_noise = abs(long["latency_onnx_ms"] - dense["latency_onnx_ms"])
    table["latency_onnx_beyond_spread"] = beyond_spread(
        table.latency_onnx_ms, table.latency_onnx_spread_ms, dense["latency_onnx_ms"],
        dense["latency_onnx_spread_ms"], onnx_noise)
    table["dice_vs_dense_long"] = table["dice_mean"] - long["dice_mean"]
    order = ["method", "cycle", "target", "replicates", "params", "params_reduction", "macs_thop",
             "macs_thop_reduction", "macs_full", "macs_full_reduction", "macs_transformer",
             "macs_transformer_reduction", "latency_ms", "latency_spread_ms", "latency_ms_reduction",
             "latency_noise_ms", "latency_beyond_spread", "latency_encoder_ms",
             "latency_encoder_ms_reduction", "latency_embedding_ms", "latency_transformer_ms",
             "latency_decoder_ms", "latency_onnx_ms", "latency_onnx_spread_ms", "latency_onnx_ms_reduction",
             "latency_onnx_beyond_spread"]
    order += [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    order += ["dice_vs_dense_long", "val_dice_before_finetune", "val_dice_after_finetune"]
    return table[order]


def int8_table(files: RunFiles, table: pd.DataFrame) -> pd.DataFrame:
    """One row per quantized model (export.quantize: int8; the first replicate's files): the
    guard's decision and, when accepted, the INT8 model's test metrics and its onnxruntime
    latency timed side by side with its fp32 export. INT8 keeps every parameter and MAC (it
    makes each cheaper), so those columns repeat the fp32 model's. Empty when nothing was
    quantized."""
    rows = []
    long = table[table.method == "dense_long"].iloc[0]
    for _, fp32 in table.iterrows():
        model = Model(fp32["method"], int(fp32["cycle"]))
        if files.int8(model, "record") is None:
            continue
        record = json.loads(files.int8(model, "record").read_text())
        row = {"method": model.method, "cycle": model.cycle, "target": fp32["target"], "replicates": 1,
               "format": "onnx-int8", "quantization": "accepted" if record["accepted"] else "refused",
               "quantize_mode": record["mode"]}
        for key in ("params", "params_reduction", "macs_thop", "macs_thop_reduction", "macs_full",
                    "macs_full_reduction", "macs_transformer", "macs_transformer_reduction"):
            row[key] = fp32[key]
        row.update({"int8_val_dice": record["val_dice_int8"], "int8_val_dice_fp32": record["val_dice_fp32"],
                    "int8_mb": record["bytes_int8"] / 1e6, "int8_mb_fp32": record["bytes_fp32"] / 1e6})
        if record["accepted"]:
            cost = json.loads(files.int8(model, "cost").read_text())
            metrics = pd.read_csv(files.int8(model, "metrics"))
            reference = pd.read_csv(files.path(0, model, "metrics"))  # the fp32 model, same replicate
            row.update({"latency_onnx_ms": cost["latency_ms_median"],
                        "latency_onnx_spread_ms": cost["latency_ms_spread"],
                        "latency_onnx_fp32_ms": cost["latency_fp32_onnx_ms_median"],
                        "latency_onnx_fp32_spread_ms": cost["latency_fp32_onnx_ms_spread"]})
            row["int8_speedup_vs_fp32_onnx"] = row["latency_onnx_fp32_ms"] / row["latency_onnx_ms"]
            for metric in METRICS:
                row[f"{metric}_mean"] = metrics[metric].mean()
                row[f"{metric}_std"] = metrics[metric].std(ddof=0)
            row["dice_vs_dense_long"] = row["dice_mean"] - long["dice_mean"]
            paired = metrics.merge(reference, on="case", suffixes=("", "_fp32"))
            row["int8_dice_vs_fp32"] = float((paired["dice"] - paired["dice_fp32"]).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def metrics_long(files: RunFiles, methods: list[str], targets: list[float]) -> pd.DataFrame:
    """Per-case metrics of every model of every replicate in long form (method, budget,
    replicate, case, metrics); the references carry no budget (compared at every budget).
    `replicate` is the pairing label of the replicate (varprune.study.replicates): with folds its seed, so
    that a patient tested in one fold pairs its seeds and the folds add patients; else its index."""
    frames = []
    for index in range(files.replicates):
        label = pairing_label(files.run_folder(index), index)
        for model in run_models(methods, len(targets)):
            frame = pd.read_csv(files.path(index, model, "metrics"))
            frame["method"] = model.method
            frame["budget"] = targets[model.cycle - 1] if model.cycle else math.nan
            frame["replicate"] = label
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def oneshot_long(files: RunFiles) -> pd.DataFrame:
    """Every replicate's oneshot.csv, with a replicate column."""
    frames = [pd.read_csv(files.oneshot_table(i)).assign(replicate=i) for i in range(files.replicates)]
    return pd.concat(frames, ignore_index=True)


def comparison_pairs(methods: list[str]) -> list[tuple[str, str]]:
    """(a, b) pairs to compare: the method pairs the registry's roles define (proposed vs
    baseline, informed vs control), and every method against dense_long."""
    ordered = [m for m in PRUNING_METHODS if m in methods]
    return method_pairs(methods) + [(m, "dense_long") for m in ordered]


def comparison_table(long: pd.DataFrame, methods: list[str], seed: int = 0,
                     margins: dict[str, float] | None = None) -> pd.DataFrame:
    """comparison.csv: one paired comparison per budget, pair and metric, with its equivalence
    test against `margins` (config stats.equivalence_margin) and its outcome."""
    return comparison_rows(long[long.method != "dense"], comparison_pairs(methods), COMPARED_METRICS,
                           seed=seed, margins=margins)


def headroom(long: pd.DataFrame) -> PairedComparison:
    """dense_long − transformer_off test Dice, paired over cases and replicates: what the
    transformer carries."""
    grids = [long[long.method == name].pivot(index="replicate", columns="case", values="dice")
             for name in ("dense_long", "transformer_off")]
    a, b = grids[0].align(grids[1], join="inner")
    return paired_comparison(a.to_numpy(float), b.to_numpy(float))
