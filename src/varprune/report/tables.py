"""The report's tables: the run files read into frames (sequences, training logs, file sizes)
and the summary and comparison rewritten for people (summary.csv and comparison.csv keep the
machine names)."""

from __future__ import annotations

import math

import pandas as pd

from varprune.core.layout import Model, RunFiles
from varprune.core.methods import CONTROLS, LABELS

SEQUENCE_COLUMNS = ["method", "cycle", "layer", "block", "rate_planned", "rate_realised", "weight",
                    "channels_after", "heads_after"]


def read_sequences(files: RunFiles, methods: list[str], cycles: int) -> pd.DataFrame:
    """Every cycle's sequence.csv of the first replicate, with a method column."""
    frames = [pd.read_csv(files.path(0, Model(m, k), "sequence")).assign(method=m)
              for m in methods for k in range(1, cycles + 1)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SEQUENCE_COLUMNS)


def read_logs(files: RunFiles, methods: list[str], cycles: int) -> dict[str, pd.DataFrame]:
    """Training logs of the first replicate with a running epoch axis: dense, then the controls
    and each method's cycles."""
    dense = pd.read_csv(files.path(0, Model("dense"), "train_log"))
    dense["x"] = dense.epoch
    logs = {"dense": dense}
    for control in CONTROLS:
        frame = pd.read_csv(files.path(0, Model(control), "train_log"))
        frame["x"] = frame.epoch + int(dense.epoch.max())
        logs[control] = frame
    for method in methods:
        offset = int(dense.epoch.max())
        for k in range(1, cycles + 1):
            frame = pd.read_csv(files.path(0, Model(method, k), "finetune_log"))
            frame["x"] = frame.epoch + offset
            offset += int(frame.epoch.max())
            logs[f"{method}/cycle{k}"] = frame
    return logs


def export_sizes(files: RunFiles, cycles: int) -> pd.DataFrame:
    """File sizes of the dense checkpoint and of the exported last cycles."""
    dense = files.path(0, Model("dense"), "model")
    rows = [{"model": "dense", "file": "model.pt", "MB": dense.stat().st_size / 1e6}]
    rows += [{"model": f"{method}/cycle{cycles}", "file": f"model.{fmt}", "MB": path.stat().st_size / 1e6}
             for method, fmt, path in files.exports()]
    return pd.DataFrame(rows)


def percent(v: float) -> str:
    """A share as "12.3 %" (empty when missing)."""
    return "" if pd.isna(v) else f"{100 * v:.1f} %"


def human_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The summary for people: readable names and units (summary.csv keeps the machine names)."""
    nan = pd.Series(math.nan, index=table.index)
    def fmt(v, spec):
        return "" if pd.isna(v) else format(v, spec)

    return pd.DataFrame({
        "Model": table.method, "Cycle": table.cycle.map(lambda c: str(c) if c else ""),
        "Target (MACs removed)": table.target.map(lambda t: percent(t) if t else ""),
        "Params": table.params.map(lambda v: f"{v / 1e6:,.2f} M"),
        "Params removed": table.params_reduction.map(percent),
        "MACs": table.macs_full.map(lambda v: f"{v / 1e9:,.3f} G"),
        "MACs removed": table.macs_full_reduction.map(percent),
        "Transformer MACs removed": table.macs_transformer_reduction.map(percent),
        "Latency (ms, batch 1)": table.latency_ms.map(lambda v: fmt(v, ".1f")),
        "Latency reduction": [percent(r) if beyond or not r else f"{percent(r)} (within the timing spread)"
                              for r, beyond in zip(table.latency_ms_reduction, table.latency_beyond_spread,
                                                   strict=True)],
        "Latency onnxruntime (ms)": [
            fmt(v, ".1f") + ("" if beyond or pd.isna(v) or not r else " (reduction within the timing spread)")
            for v, r, beyond in zip(table.get("latency_onnx_ms", nan),
                                    table.get("latency_onnx_ms_reduction", nan),
                                    table.get("latency_onnx_beyond_spread", nan), strict=True)],
        "Latency per part (ms: embedding / transformer / decoder)": [
            "" if pd.isna(e) else f"{e:.1f} / {t:.1f} / {d:.1f}"
            for e, t, d in zip(*(table.get(f"latency_{part}_ms", nan)
                                 for part in ("embedding", "transformer", "decoder")), strict=True)],
        "Test Dice (mean ± std)": [f"{m:.4f} ± {sd:.4f}" for m, sd in zip(table.dice_mean, table.dice_std,
                                                                         strict=True)],
        "Δ Dice vs dense_long (points)": table.dice_vs_dense_long.map(lambda v: f"{100 * v:+.2f}"),
        "HD95 (mm)": table.hd95_mm_mean.map(lambda v: fmt(v, ".2f")),
        "Val Dice before → after fine-tuning": [
            "" if pd.isna(b) else f"{b:.3f} → {a:.3f}"
            for b, a in zip(table.val_dice_before_finetune, table.val_dice_after_finetune, strict=True)],
    })


def outcome_words(r) -> str:
    """A comparison row's outcome in the report's four words: "A better", "B better",
    "equivalent within ±m", "inconclusive: differences below x cannot be seen"."""
    scale, unit = (100, "points") if r.metric in ("dice", "voe", "rvd") else (1, "mm")
    kind = getattr(r, "outcome", None)
    if kind == "a_better":
        return f"{r.method_a} better"
    if kind == "b_better":
        return f"{r.method_b} better"
    if kind == "equivalent":
        return f"equivalent within ±{scale * r.margin:.2f} {unit}"
    if kind == "inconclusive":
        mde = getattr(r, "mde", math.nan)
        if pd.isna(mde) or math.isinf(mde):
            return "inconclusive: no difference can be seen with this few cases"
        p_adjusted = getattr(r, "p_adjusted", math.nan)
        if not pd.isna(p_adjusted) and p_adjusted <= 0.05:
            # the permutation test rejects a tie, but the bootstrap interval still reaches 0 and
            # equivalence is not shown: a small difference that this many cases cannot pin down
            return (f"inconclusive: the test (adjusted p {p_adjusted:.2g}) and the interval "
                    f"[{scale * r.ci_low:+.2f}, {scale * r.ci_high:+.2f}] {unit} disagree")
        return f"inconclusive: differences below {scale * mde:.2f} {unit} cannot be seen"
    return ""


def verdict_table(comparison: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """The opening table: one row per pair, one column per budget, the outcome in four words."""
    rows = comparison[comparison.metric == metric]
    if not len(rows) or "outcome" not in rows:
        return pd.DataFrame()
    budgets = sorted(rows.budget.dropna().unique())
    out = []
    for (a, b), pair in rows.groupby(["method_a", "method_b"], sort=False):
        line = {"A vs B": f"{a} vs {b}"}
        for budget in budgets:
            at = pair[pair.budget == budget]
            line[f"{percent(budget)} of MACs removed"] = outcome_words(at.iloc[0]) if len(at) else ""
        out.append(line)
    return pd.DataFrame(out)


def human_comparison(comparison: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """comparison.csv for people: budgets as shares of all MACs and of the transformer's MACs."""
    transformer = table[table.cycle > 0].groupby("target").macs_transformer_reduction.mean()
    rows = []
    for r in comparison.itertuples():
        scale, unit = (100, "points") if r.metric in ("dice", "voe", "rvd") else (1, "mm")
        rows.append({
            "Budget: MACs removed (all / transformer)":
                f"{percent(r.budget)} / {percent(transformer.get(r.budget, math.nan))}",
            "A − B": f"{r.method_a} − {r.method_b}", "Metric": LABELS.get(r.metric, r.metric),
            "Mean difference": "" if pd.isna(r.mean_diff) else f"{scale * r.mean_diff:+.2f} {unit}",
            "95 % CI": "" if pd.isna(r.ci_low) else f"[{scale * r.ci_low:+.2f}, {scale * r.ci_high:+.2f}]",
            "p (paired permutation)": "" if pd.isna(r.p_value) else f"{r.p_value:.2g}",
            "p adjusted (BH, per budget and metric)": "" if pd.isna(r.p_adjusted) else f"{r.p_adjusted:.2g}",
            "TOST p (equivalence)": "" if pd.isna(getattr(r, "p_equivalence", math.nan))
            else f"{r.p_equivalence:.2g}",
            "MDE (80 % power)": "" if pd.isna(getattr(r, "mde", math.nan))
            else ("∞" if math.isinf(r.mde) else f"{scale * r.mde:.2f} {unit}"),
            "Outcome": outcome_words(r),
            "Cases × replicates": f"{r.n_cases} × {r.n_replicates}",
        })
    return pd.DataFrame(rows)


def _text(values, spec: str, suffix: str = "") -> list[str]:
    return ["" if pd.isna(v) else format(v, spec) + suffix for v in values]


def human_int8(int8: pd.DataFrame) -> pd.DataFrame:
    """fp32 against INT8 per deployed model, for people: the guard, test Dice, onnxruntime
    latency side by side (batch 1), file size."""
    def col(name: str) -> pd.Series:
        return int8[name] if name in int8 else pd.Series(math.nan, index=int8.index)

    names = [m if c == 0 else f"{m} cycle {c}" for m, c in zip(int8.method, int8.cycle, strict=True)]
    pairs = zip(int8.int8_val_dice_fp32, int8.int8_val_dice, strict=True)
    sizes = zip(int8.int8_mb_fp32, int8.int8_mb, strict=True)
    return pd.DataFrame({
        "model": names,
        "INT8": int8.quantization,
        "val Dice fp32 → INT8": [f"{a:.4f} → {b:.4f}" for a, b in pairs],
        "test Dice INT8": _text(col("dice_mean"), ".4f"),
        "Δ vs fp32 (points)": _text(100 * col("int8_dice_vs_fp32"), "+.2f"),
        "onnxruntime fp32 ms": _text(col("latency_onnx_fp32_ms"), ".2f"),
        "INT8 ms": _text(col("latency_onnx_ms"), ".2f"),
        "speed-up": _text(col("int8_speedup_vs_fp32_onnx"), ".2f", "×"),
        "MB fp32 → INT8": [f"{a:.1f} → {b:.1f}" for a, b in sizes],
    })
