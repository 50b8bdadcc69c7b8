"""The run's report: `summary.csv`, figures, and a self-contained `report.html`.

Everything is read from the pipeline's files (metrics.csv, cost.json, sequence.csv, the
training logs, predictions on the CT grid), so the report can be rebuilt without rerunning
any model. Figures are PNGs written next to the HTML and also embedded in it (base64), so the
HTML opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import yaml  # noqa: E402

from varprune.atomic import atomic_path, write_text  # noqa: E402
from varprune.compare import (  # noqa: E402
    HEADROOM_WARNING,
    comparison_table,
    headroom,
    metrics_long,
    oneshot_long,
    summary_table,
)
from varprune.methods import CONTROLS, LABELS, PRUNING_METHODS, colour  # noqa: E402
from varprune.stats import PairedComparison, comparison_from_row, power_note, verdict  # noqa: E402

log = logging.getLogger(__name__)

FIGURES = ("tradeoff", "oneshot", "sequence", "widths", "curves", "cases")


@dataclass(frozen=True)
class ReportSettings:
    """The `report` config slice."""

    cases: int = 3
    paper_macs_reduction: float = 0.6026
    paper_params_reduction: float = 0.6607
    dpi: int = 110

    @classmethod
    def from_config(cls, cfg: dict) -> ReportSettings:
        return cls(**{k: v for k, v in (cfg or {}).items() if k in cls.__dataclass_fields__})


def _save(fig, path: Path, dpi: int) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_tradeoff(table: pd.DataFrame, settings: ReportSettings, path: Path) -> None:
    """Dice against MACs removed for each method across cycles; dense and the paper marked."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    dense = table[table.method == "dense"].iloc[0]
    for method in [m for m in PRUNING_METHODS if m in set(table.method)]:
        part = pd.concat([table[table.method == "dense"], table[table.method == method]])
        ax.errorbar(100 * part.macs_full_reduction, part.dice_mean, yerr=part.dice_std, marker="o",
                    capsize=3, label=method, color=colour(method))
        for _, r in part.iloc[1:].iterrows():
            ax.annotate(f"c{r.cycle}", (100 * r.macs_full_reduction, r.dice_mean), fontsize=8,
                        xytext=(3, 3), textcoords="offset points")
    ax.scatter([0], [dense.dice_mean], s=80, color="black", zorder=5, label="dense")
    ax.scatter([100 * settings.paper_macs_reduction], [dense.dice_mean], marker="*", s=220,
               color="gold", edgecolor="black", zorder=6,
               label=f"paper: −{100 * settings.paper_macs_reduction:.2f} % FLOPs, Dice unchanged")
    for control, style in zip(CONTROLS, ("--", "-."), strict=True):
        row = table[table.method == control]
        if len(row):
            ax.axhline(row.dice_mean.iloc[0], color=colour(control), ls=style, lw=1.2,
                       label=f"{control} ({row.dice_mean.iloc[0]:.3f})")
    ax.set_xlabel("MACs removed vs dense (%, FlopCounterMode, attention included)")
    ax.set_ylabel("test Dice (mean ± std over test cases × replicates)")
    ax.set_title("Accuracy against compression")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    _save(fig, path, settings.dpi)


def plot_oneshot(oneshot: pd.DataFrame, table: pd.DataFrame, settings: ReportSettings, path: Path) -> None:
    """Validation and test Dice right after the surgery (no fine-tuning) against MACs removed."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    dense = oneshot[oneshot.method == "dense"]
    pruned = oneshot[oneshot.method != "dense"].dropna(subset=["macs_reduction"])
    off_oneshot = oneshot[oneshot.method == "transformer_off"]
    for ax, split in zip(axes, ("val", "test"), strict=True):
        if len(off_oneshot):
            ax.plot(100 * off_oneshot.macs_reduction, off_oneshot[f"{split}_dice"], marker="X", ls="",
                    ms=9, color=colour("transformer_off"), label="transformer_off, no fine-tuning")
        for method in [m for m in PRUNING_METHODS if m in set(pruned.method)]:
            part = pruned[pruned.method == method].sort_values("macs_reduction")
            ax.plot(100 * part.macs_reduction, part[f"{split}_dice"], marker="o", label=method,
                    color=colour(method))
        if len(dense):
            ax.axhline(dense[f"{split}_dice"].iloc[0], color="black", lw=1, label="dense")
        off = table[table.method == "transformer_off"]
        if split == "test" and len(off):
            ax.axhline(off.dice_mean.iloc[0], color=colour("transformer_off"), ls="-.", lw=1.2,
                       label="transformer_off, fine-tuned (CT grid)")
        ax.set_xlabel("MACs removed vs dense (%), in one step from the dense model")
        ax.set_title(f"{split} Dice right after pruning (no fine-tuning)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("mean 3D Dice (model grid)")
    fig.tight_layout()
    _save(fig, path, settings.dpi)


def plot_sequence(sequences: pd.DataFrame, settings: ReportSettings, path: Path) -> None:
    """The planned pruning-rate sequences of the first method with hierarchical levels (the
    paper's variable sequence) as layer × cycle heat maps, and the significance profile."""
    present = set(sequences.method)
    shown = next((m for m, spec in PRUNING_METHODS.items() if spec.levels and m in present), None)
    data = sequences[sequences.method == shown]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    if data.empty:
        for ax in axes.flat:
            ax.text(0.5, 0.5, "no cycles of a method with a rate sequence in this run", ha="center")
            ax.axis("off")
        _save(fig, path, settings.dpi)
        return
    cycles = sorted(data.cycle.unique())
    for col, block in enumerate(("msa", "ffn")):
        part = data[data.block == block]
        grid = part.pivot(index="layer", columns="cycle", values="rate_planned").loc[:, cycles]
        ax = axes[0, col]
        top = max(0.01, float(grid.values.max()))
        image = ax.imshow(grid.values, aspect="auto", cmap="magma_r", vmin=0, vmax=top, origin="lower",
                          extent=(0.5, len(cycles) + 0.5, 0.5, len(grid) + 0.5))
        for (i, j), value in np.ndenumerate(grid.values):
            ax.text(j + 1, i + 1, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if value > 0.5 * grid.values.max() else "black")
        ax.set_xticks(range(1, len(cycles) + 1), [f"cycle {c}" for c in cycles])
        ax.set_ylabel("transformer layer")
        ax.set_title(f"{block.upper()} pruning rate per layer ({shown})")
        fig.colorbar(image, ax=ax, fraction=0.05)
        ax = axes[1, col]
        for cycle in cycles:
            rows = part[part.cycle == cycle]
            ax.plot(rows.layer, rows.weight, marker="o", label=f"cycle {cycle}")
        ax.set_xlabel("transformer layer")
        ax.set_ylabel("significance weight (sums to 1)")
        ax.set_title(f"{block.upper()} significance over depth")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path, settings.dpi)


def plot_widths(sequences: pd.DataFrame, settings: ReportSettings, path: Path) -> None:
    """Channels (and heads) kept per layer after the last cycle of each method."""
    methods = [m for m in PRUNING_METHODS if m in set(sequences.method)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / max(1, len(methods))
    for col, block in enumerate(("msa", "ffn")):
        ax = axes[col]
        for i, method in enumerate(methods):
            part = sequences[(sequences.method == method) & (sequences.block == block)]
            last = part[part.cycle == part.cycle.max()].sort_values("layer")
            bars = ax.bar(last.layer + (i - (len(methods) - 1) / 2) * width, last.channels_after, width,
                          label=method, color=colour(method))
            if block == "msa":
                for bar, heads in zip(bars, last.heads_after, strict=True):
                    ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{int(heads)}h",
                            ha="center", va="bottom", fontsize=6)
        dense = sequences[(sequences.block == block) & (sequences.cycle == 1)].channels_before.max()
        ax.axhline(dense, color="black", ls="--", lw=1, label="dense")
        ax.set_xlabel("transformer layer")
        ax.set_ylabel("channels kept")
        note = " (h = heads)" if block == "msa" else ""
        ax.set_title(f"{block.upper()} widths after the last cycle{note}")
        ax.set_xticks(range(1, 13))
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path, settings.dpi)


def plot_curves(logs: dict[str, pd.DataFrame], settings: ReportSettings, path: Path) -> None:
    """Training loss and validation Dice: dense training, then every fine-tuning, end to end."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, frame in logs.items():
        method = name.split("/")[0]
        line_colour = colour(method)
        label = name if name in ("dense", *CONTROLS) or name.endswith("cycle1") else None
        x = frame["x"]
        style = "--" if method in CONTROLS else "-"
        axes[0].plot(x, frame.loss, color=line_colour, ls=style, label=label and method)
        axes[1].plot(x, frame.val_dice, color=line_colour, ls=style, marker=".", label=label and method)
    for ax, ylabel in zip(axes, ("training loss (DiceCE)", "validation Dice"), strict=True):
        ax.set_xlabel("epoch (dense, then cycle after cycle)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("Training and fine-tuning loss")
    axes[1].set_title("Validation Dice")
    fig.tight_layout()
    _save(fig, path, settings.dpi)


def plot_cases(cases: list[str], nifti: Path, preds: dict[str, Path], window: tuple[float, float],
               settings: ReportSettings, path: Path) -> None:
    """CT slices with the ground-truth (green) and predicted (red) liver contours."""
    fig, axes = plt.subplots(len(cases), len(preds), figsize=(4 * len(preds), 4 * len(cases)), squeeze=False)
    for row, case in enumerate(cases):
        ct = sitk.GetArrayFromImage(sitk.ReadImage(str(nifti / case / "ct.nii.gz")))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(nifti / case / "liver.nii.gz"))) > 0
        z = int(np.argmax(truth.sum(axis=(1, 2))))
        for col, (name, folder) in enumerate(preds.items()):
            pred = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{case}.nii.gz"))) > 0
            # The model's own metrics.csv (next to pred/) holds this prediction's 3D Dice.
            metrics = pd.read_csv(folder.parent / "metrics.csv", dtype={"case": str}).set_index("case")
            dice = float(metrics.loc[case, "dice"])
            ax = axes[row, col]
            ax.imshow(ct[z], cmap="gray", vmin=window[0], vmax=window[1])
            ax.contour(truth[z], [0.5], colors="lime", linewidths=1.2)
            if pred[z].any():
                ax.contour(pred[z], [0.5], colors="red", linewidths=1.2)
            ax.set_title(f"{case} slice {z}: {name} (3D Dice {dice:.3f})", fontsize=9)
            ax.axis("off")
    fig.suptitle("Ground truth (green) and prediction (red)", fontsize=11)
    fig.tight_layout()
    _save(fig, path, settings.dpi)


def read_sequences(results: Path, methods: list[str], cycles: int) -> pd.DataFrame:
    frames = []
    for method in methods:
        for k in range(1, cycles + 1):
            frame = pd.read_csv(results / method / f"cycle{k}" / "sequence.csv")
            frame["method"] = method
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["method", "cycle", "layer", "block", "rate_planned", "rate_realised", "weight",
                 "channels_after", "heads_after"])


def read_logs(results: Path, methods: list[str], cycles: int) -> dict[str, pd.DataFrame]:
    """Training logs with a running epoch axis: dense, then the controls and each method's cycles."""
    logs = {}
    dense = pd.read_csv(results / "dense" / "train_log.csv")
    dense["x"] = dense.epoch
    logs["dense"] = dense
    for control in CONTROLS:
        frame = pd.read_csv(results / control / "train_log.csv")
        frame["x"] = frame.epoch + int(dense.epoch.max())
        logs[control] = frame
    for method in methods:
        offset = int(dense.epoch.max())
        for k in range(1, cycles + 1):
            frame = pd.read_csv(results / method / f"cycle{k}" / "finetune_log.csv")
            frame["x"] = frame.epoch + offset
            offset += int(frame.epoch.max())
            logs[f"{method}/cycle{k}"] = frame
    return logs


def provenance(config: dict, repo: Path | None) -> dict:
    """Data source, versions and git commit, as this job sees them."""
    import monai
    import snakemake
    import torch

    commit = "unknown"
    if repo is not None:
        try:
            commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                    text=True, timeout=10).stdout.strip() or "unknown"
            dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            if dirty and commit != "unknown":
                commit += " (with uncommitted changes)"
        except (OSError, subprocess.SubprocessError):
            pass
    return {
        "data source": config["data"]["source"] + (" (generated phantoms in the IRCADb layout)"
                                                    if config["data"]["source"] == "synthetic" else ""),
        "git commit": commit,
        "python": platform.python_version(),
        "torch": torch.__version__, "monai": monai.__version__, "snakemake": snakemake.__version__,
        "SimpleITK": sitk.Version_VersionString(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }


def _img(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def export_sizes(results: Path, methods: list[str], cycles: int, formats: list[str]) -> pd.DataFrame:
    """File sizes of the dense checkpoint and of the exported last cycles."""
    dense = results / "dense" / "model.pt"
    rows = [{"model": "dense", "file": "model.pt", "MB": dense.stat().st_size / 1e6}]
    for method in methods:
        for fmt in formats:
            path = results / method / f"cycle{cycles}" / f"model.{fmt}"
            if path.exists():
                rows.append({"model": f"{method}/cycle{cycles}", "file": path.name,
                             "MB": path.stat().st_size / 1e6})
    return pd.DataFrame(rows)


def _pct(v: float) -> str:
    return "" if pd.isna(v) else f"{100 * v:.1f} %"


def human_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The summary for people: readable names and units (summary.csv keeps the machine names)."""
    def fmt(v, spec):
        return "" if pd.isna(v) else format(v, spec)

    return pd.DataFrame({
        "Model": table.method, "Cycle": table.cycle.map(lambda c: str(c) if c else ""),
        "Target (MACs removed)": table.target.map(lambda t: _pct(t) if t else ""),
        "Params": table.params.map(lambda v: f"{v / 1e6:,.2f} M"),
        "Params removed": table.params_reduction.map(_pct),
        "MACs": table.macs_full.map(lambda v: f"{v / 1e9:,.3f} G"),
        "MACs removed": table.macs_full_reduction.map(_pct),
        "Transformer MACs removed": table.macs_transformer_reduction.map(_pct),
        "Latency (ms, batch 1)": table.latency_ms.map(lambda v: fmt(v, ".1f")),
        "Latency reduction": table.latency_ms_reduction.map(_pct),
        "Test Dice (mean ± std)": [f"{m:.4f} ± {sd:.4f}" for m, sd in zip(table.dice_mean, table.dice_std,
                                                                         strict=True)],
        "Δ Dice vs dense_long (points)": table.dice_vs_dense_long.map(lambda v: f"{100 * v:+.2f}"),
        "HD95 (mm)": table.hd95_mm_mean.map(lambda v: fmt(v, ".2f")),
        "Val Dice before → after fine-tuning": [
            "" if pd.isna(b) else f"{b:.3f} → {a:.3f}"
            for b, a in zip(table.val_dice_before_finetune, table.val_dice_after_finetune, strict=True)],
    })


def human_comparison(comparison: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """comparison.csv for people: budgets as shares of all MACs and of the transformer's MACs."""
    transformer = table[table.cycle > 0].groupby("target").macs_transformer_reduction.mean()
    rows = []
    for r in comparison.itertuples():
        scale, unit = (100, "points") if r.metric in ("dice", "voe", "rvd") else (1, "mm")
        rows.append({
            "Budget: MACs removed (all / transformer)":
                f"{_pct(r.budget)} / {_pct(transformer.get(r.budget, math.nan))}",
            "A − B": f"{r.method_a} − {r.method_b}", "Metric": LABELS.get(r.metric, r.metric),
            "Mean difference": "" if pd.isna(r.mean_diff) else f"{scale * r.mean_diff:+.2f} {unit}",
            "95 % CI": "" if pd.isna(r.ci_low) else f"[{scale * r.ci_low:+.2f}, {scale * r.ci_high:+.2f}]",
            "p (paired permutation)": "" if pd.isna(r.p_value) else f"{r.p_value:.2g}",
            "p adjusted (BH, per budget and metric)": "" if pd.isna(r.p_adjusted) else f"{r.p_adjusted:.2g}",
            "Cases × replicates": f"{r.n_cases} × {r.n_replicates}",
        })
    return pd.DataFrame(rows)


def arch_phrase(model: dict) -> str:
    """The segmenter in a few words, from the `model` config slice."""
    if model.get("arch", "unetr") == "setr":
        return (f"SETR-PUP (MONAI ViT, patch {model.get('patch')}, {model.get('num_layers')} layers, "
                f"hidden {model.get('hidden')}, upsampling head {model.get('head_channels')} of "
                f"{model.get('head_kernel')}x{model.get('head_kernel')} convolutions)")
    return f"MONAI UNETR (hidden {model.get('hidden')})"


def findings(table: pd.DataFrame, comparison: pd.DataFrame, room: PairedComparison | None) -> list[str]:
    """The opening sentences: what the numbers support, and what they cannot."""
    lines = []
    if room is not None:
        text = verdict("dense_long", "transformer_off", room, metric="dice", explain_power=False)
        lines.append(f"<b>Transformer headroom</b> (how much of the Dice the transformer carries): {text}")
        if room.mean_diff < HEADROOM_WARNING:
            lines.append(
                f"<b>Warning: the headroom is below {100 * HEADROOM_WARNING:.0f} Dice points. Without its "
                "transformer the model segments almost as well, so this dataset cannot rank transformer "
                "pruning methods: every allocation of widths, including none, looks lossless.</b>")
    dice = comparison[comparison.metric == "dice"].dropna(subset=["mean_diff"])
    if len(dice):
        last = dice.budget.max()
        lines.append(f"<b>At the highest budget ({_pct(last)} of the MACs removed)</b>, paired over test "
                     "cases:")
        at_last = dice[dice.budget == last]
        for r in at_last.itertuples():
            text = verdict(r.method_a, r.method_b, comparison_from_row(r), explain_power=False,
                           p_adjusted=r.p_adjusted, family=len(at_last))
            lines.append(f"&nbsp;&nbsp;• {html.escape(text)}")
        note = power_note(int(at_last.n_cases.min()))
        if note:
            lines.append(f"<b>{html.escape(note)}</b>")
    long = table[table.method == "dense_long"]
    dense = table[table.method == "dense"]
    if len(long) and len(dense):
        lines.append(
            "Extra fine-tuning alone moves the dense model's test Dice from "
            f"{dense.dice_mean.iloc[0]:.4f} to "
            f"{long.dice_mean.iloc[0]:.4f} (dense_long): differences of pruned models from dense are read "
            "against dense_long.")
    return lines


def render_html(table: pd.DataFrame, figures: dict[str, Path], prov: dict, config: dict,
                run: str, exports: pd.DataFrame | None = None, comparison: pd.DataFrame | None = None,
                room: PairedComparison | None = None) -> str:
    """A single self-contained page: what the numbers support first, then tables, figures, provenance."""
    captions = {
        "tradeoff": "Test Dice against MACs removed, per method across cycles. Dense is the black "
                    "point, the lines are the controls (dense_long: dense fine-tuned as long; "
                    "transformer_off: no MSA/FFN at all); the star is the paper's reported result "
                    "(−60.26 % FLOPs at unchanged Dice).",
        "oneshot": "Accuracy right after the surgery, before any fine-tuning: each method prunes the dense "
                   "model to each budget in one step. This separates allocations far better than fine-tuned "
                   "accuracy.",
        "sequence": "The variable pruning-rate sequences (rate per layer and cycle, MSA and FFN) and "
                    "the significance profile over depth that produced them.",
        "widths": "Channels (and, for MSA, heads) each layer keeps after the last cycle of each method.",
        "curves": "Training of the dense model, then the fine-tuning after every cycle, end to end.",
        "cases": "Test cases at the slice with the most liver: dense next to the last variable cycle.",
    }
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>varprune report: {html.escape(run)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;"
        "text-align:right}th{background:#f0f0f0}img{max-width:100%;border:1px solid #ddd}"
        "figure{margin:1.5em 0}figcaption{font-size:13px;color:#555}pre{background:#f7f7f7;"
        "padding:1em;font-size:11px;overflow:auto}.findings p{margin:.4em 0}</style></head><body>",
        f"<h1>varprune report: run <code>{html.escape(run)}</code></h1>",
        "<p>Cross-layer channel pruning with variable pruning-rate sequences on a "
        f"{html.escape(arch_phrase(config.get('model', {})))} liver segmenter, compared with "
        "fixed-rate, global-ranking and random allocations at the same MAC "
        "budgets, and read against the controls dense_long and transformer_off.</p>",
        "<h2>What the numbers support</h2><div class='findings'>",
        *[f"<p>{line}</p>" for line in findings(table, comparison if comparison is not None
                                                 else pd.DataFrame(columns=["metric", "mean_diff"]), room)],
        "</div>",
    ]
    if comparison is not None and len(comparison):
        parts.append("<h3>Paired comparisons (test cases; 95 % bootstrap interval, "
                     "paired permutation test)</h3>")
        parts.append("<div style='overflow-x:auto'>" + human_comparison(comparison, table).to_html(
            index=False, border=0) + "</div>")
    summary = human_summary(table).to_html(index=False, border=0)
    parts += ["<h2>Summary</h2>", f"<div style='overflow-x:auto'>{summary}</div>"]
    if exports is not None and len(exports):
        parts.append("<h2>Deployment files</h2>")
        parts.append(exports.to_html(index=False, border=0, float_format=lambda v: f"{v:.1f}"))
    for name, path in figures.items():
        parts.append(f"<figure><img alt='{name}' src='data:image/png;base64,{_img(path)}'>"
                     f"<figcaption>{html.escape(captions[name])}</figcaption></figure>")
    parts.append("<h2>Provenance</h2><table>")
    parts += [f"<tr><th>{html.escape(k)}</th><td style='text-align:left'>{html.escape(str(v))}</td></tr>"
              for k, v in prov.items()]
    parts.append("</table><h3>Configuration</h3><pre>" + html.escape(yaml.safe_dump(config, sort_keys=False))
                 + "</pre></body></html>")
    return "\n".join(parts)


def build_report(replicates: list[str | os.PathLike], nifti_dir: str | os.PathLike,
                 splits_json: str | os.PathLike, config: dict, settings: dict, out_summary: str | os.PathLike,
                 out_html: str | os.PathLike, out_figures: dict[str, str],
                 out_comparison: str | os.PathLike | None = None,
                 repo: str | os.PathLike | None = None) -> pd.DataFrame:
    """Write summary.csv, comparison.csv, the figures and report.html for one run.

    `replicates` are the result folders of the run's replicates: the tables and statistics pool
    them; the illustrations (sequences, widths, curves, cases, deployment files) show the first.
    """
    folders = [Path(r) for r in replicates]
    results = folders[0]
    opts = ReportSettings.from_config(settings)
    methods = config["pruning"]["methods"]
    targets = list(config["pruning"]["cycle_targets"])
    cycles = len(targets)
    table = summary_table(folders, methods, targets)
    with atomic_path(out_summary) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    long = metrics_long(folders, methods, targets)
    comparison = comparison_table(long, methods)
    if out_comparison is not None:
        with atomic_path(out_comparison) as tmp:
            comparison.to_csv(tmp, index=False, float_format="%.6g")
    room = headroom(long)
    sequences = read_sequences(results, methods, cycles)
    figures = {name: Path(out_figures[name]) for name in FIGURES}
    plot_tradeoff(table, opts, figures["tradeoff"])
    oneshot = oneshot_long(folders).groupby(["method", "target"], as_index=False)[
        ["macs_reduction", "val_dice", "test_dice"]].mean()
    plot_oneshot(oneshot, table, opts, figures["oneshot"])
    plot_sequence(sequences, opts, figures["sequence"])
    plot_widths(sequences, opts, figures["widths"])
    plot_curves(read_logs(results, methods, cycles), opts, figures["curves"])
    test_cases = json.loads(Path(splits_json).read_text())["test"][: opts.cases]
    preds = {"dense": results / "dense" / "pred"}
    proposed = [m for m, spec in PRUNING_METHODS.items() if spec.role == "proposed" and m in methods]
    last = (proposed or methods)[0]
    preds[f"{last} cycle {cycles}"] = results / last / f"cycle{cycles}" / "pred"
    plot_cases(test_cases, Path(nifti_dir), preds, tuple(config["preprocess"]["window"]), opts,
               figures["cases"])
    exports = export_sizes(results, methods, cycles, config.get("export", {}).get("formats", []))
    page = render_html(table, figures, provenance(config, Path(repo) if repo else None), config,
                       config["run"], exports, comparison, room)
    write_text(out_html, page)
    log.info("report for run %s: %d models, %d paired comparisons -> %s", config["run"], len(table),
             len(comparison), out_html)
    return table
