"""The report's figures: one function per figure, each drawing from tables already read
(or, for the segmentation examples, from the files it is given) and writing one PNG atomically."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from varprune.core.atomic import atomic_path  # noqa: E402
from varprune.core.methods import CONTROLS, PRUNING_METHODS, colour  # noqa: E402
from varprune.report.settings import ReportSettings  # noqa: E402

FIGURES = ("tradeoff", "oneshot", "sequence", "widths", "curves", "cases")


def save_figure(fig, path: Path, dpi: int) -> None:
    """Write a figure as PNG atomically and free it."""
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
    save_figure(fig, path, settings.dpi)


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
    save_figure(fig, path, settings.dpi)


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
        save_figure(fig, path, settings.dpi)
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
    save_figure(fig, path, settings.dpi)


def plot_widths(sequences: pd.DataFrame, settings: ReportSettings, path: Path,
                stage_names: list[str] | None = None) -> None:
    """Channels (and heads) kept per layer after the last cycle of each method; with
    `pruning.scope` beyond the transformer, a second row: the share of each decoder group's and
    of the embedding width's channels kept (`stage_names` label the decoder groups)."""
    methods = [m for m in PRUNING_METHODS if m in set(sequences.method)]
    outer = sequences[sequences.block.isin(["head", "embed"])]
    rows = 2 if len(outer) else 1
    fig = plt.figure(figsize=(11, 3.8 * rows))
    grid = fig.add_gridspec(rows, 2)
    width = 0.8 / max(1, len(methods))
    for col, block in enumerate(("msa", "ffn")):
        ax = fig.add_subplot(grid[0, col])
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
    if rows == 2:
        _plot_outer_widths(fig.add_subplot(grid[1, :]), outer, methods, width, stage_names)
    fig.tight_layout()
    save_figure(fig, path, settings.dpi)


def _plot_outer_widths(ax, outer: pd.DataFrame, methods: list[str], width: float,
                       stage_names: list[str] | None) -> None:
    """Share of channels kept after the last cycle, per decoder group and for the embedding width."""
    first = outer[outer.cycle == 1]
    dense = {(r.block, r.layer): r.channels_before for r in first.itertuples()}
    keys = sorted(dense, key=lambda k: (k[0] != "head", k[1]))
    for i, method in enumerate(methods):
        part = outer[outer.method == method]
        last = part[part.cycle == part.cycle.max()]
        kept = {(r.block, r.layer): r.channels_after for r in last.itertuples()}
        x = np.arange(len(keys)) + (i - (len(methods) - 1) / 2) * width
        ax.bar(x, [100 * kept.get(k, dense[k]) / dense[k] for k in keys], width, label=method,
               color=colour(method))

    def label(key: tuple[str, int]) -> str:
        block, layer = key
        if block == "embed":
            return f"embedding ({dense[key]})"
        name = stage_names[layer - 1] if stage_names and layer <= len(stage_names) else f"group {layer}"
        return f"{name} ({dense[key]})"

    ax.set_xticks(range(len(keys)), [label(k) for k in keys], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("% of dense channels kept")
    ax.set_ylim(0, 105)
    ax.set_title("Decoder channel groups and embedding width after the last cycle (dense width in brackets)")
    ax.legend(fontsize=8)


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
    save_figure(fig, path, settings.dpi)


@dataclass(frozen=True)
class CaseImages:
    """A test case's CT and ground-truth liver mask (NIfTI, on the CT grid)."""

    case: str
    ct: Path
    liver: Path


@dataclass(frozen=True)
class Predictions:
    """A model's predictions folder ({case}.nii.gz) and its metrics.csv (the 3D Dice shown)."""

    pred: Path
    metrics: Path


def plot_cases(cases: list[CaseImages], preds: dict[str, Predictions], window: tuple[float, float],
               settings: ReportSettings, path: Path) -> None:
    """CT slices with the ground-truth (green) and predicted (red) liver contours."""
    fig, axes = plt.subplots(len(cases), len(preds), figsize=(4 * len(preds), 4 * len(cases)), squeeze=False)
    dice = {name: pd.read_csv(model.metrics, dtype={"case": str}).set_index("case").dice
            for name, model in preds.items()}
    for row, images in enumerate(cases):
        ct = sitk.GetArrayFromImage(sitk.ReadImage(str(images.ct)))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(images.liver))) > 0
        z = int(np.argmax(truth.sum(axis=(1, 2))))
        for col, (name, model) in enumerate(preds.items()):
            pred = sitk.GetArrayFromImage(sitk.ReadImage(str(model.pred / f"{images.case}.nii.gz"))) > 0
            ax = axes[row, col]
            ax.imshow(ct[z], cmap="gray", vmin=window[0], vmax=window[1])
            ax.contour(truth[z], [0.5], colors="lime", linewidths=1.2)
            if pred[z].any():
                ax.contour(pred[z], [0.5], colors="red", linewidths=1.2)
            ax.set_title(f"{images.case} slice {z}: {name} (3D Dice {float(dice[name][images.case]):.3f})",
                         fontsize=9)
            ax.axis("off")
    fig.suptitle("Ground truth (green) and prediction (red)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path, settings.dpi)
