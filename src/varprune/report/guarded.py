"""The report of a guarded run (pruning.schedule: guarded): per method, the most MACs and
parameters removed within the tolerance, the selected model's test Dice against the reference
fine-tuned as often, and the validation curve of every cycle tried."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from varprune.core.atomic import atomic_path, write_text  # noqa: E402
from varprune.core.layout import SELECTED, Model, file_key, guarded_key, latency_key  # noqa: E402
from varprune.core.methods import colour  # noqa: E402
from varprune.pruning.guard import Decision, GuardSettings  # noqa: E402
from varprune.report.figures import save_figure  # noqa: E402
from varprune.report.page import arch_phrase, embed, provenance, render  # noqa: E402
from varprune.report.settings import ReportSettings  # noqa: E402
from varprune.report.tables import percent  # noqa: E402

log = logging.getLogger(__name__)


def _replicates(files: Mapping[str, object]) -> int:
    return len({key.split("__")[0] for key in files if key.startswith("g")})


def guarded_table(files: Mapping[str, str | Sequence[str]], methods: Sequence[str]) -> pd.DataFrame:
    """One row per replicate and method: the search, the selected model's size, cost and test Dice."""
    rows = []
    for r in range(_replicates(files)):
        dense_cost = json.loads(Path(files[file_key(r, Model("dense"), "cost")]).read_text())
        dense_dice = pd.read_csv(files[file_key(r, Model("dense"), "metrics")]).dice.mean()
        latency = pd.read_csv(files[latency_key(r)]).set_index("model")
        for method in methods:
            record = json.loads(Path(files[guarded_key(r, method, "record")]).read_text())
            cost = json.loads(Path(files[guarded_key(r, method, "cost")]).read_text())
            timed = latency.loc[f"{method}/{SELECTED}"]
            dice = pd.read_csv(files[guarded_key(r, method, "metrics")]).dice.mean()
            reference = pd.read_csv(files[guarded_key(r, method, "reference_metrics")]).dice.mean()
            rows.append({
                "replicate": r, "method": method, "cycles_tried": record["cycles_tried"],
                "selected_cycle": record["cycle"], "depth": record["depth"], "target": record["target"],
                "macs_removed": 1 - cost["macs_full"] / dense_cost["macs_full"],
                "transformer_macs_removed": 1 - cost["macs_transformer"] / dense_cost["macs_transformer"],
                "params_removed": 1 - cost["params"] / dense_cost["params"],
                "latency_ms": timed.latency_ms, "latency_spread_ms": timed.latency_spread_ms,
                "latency_reduction": 1 - timed.latency_ms / latency.latency_ms["dense"],
                "val_dice": record["val_dice"], "val_reference": record["reference"],
                "test_dice": dice, "test_reference": reference, "test_vs_reference": dice - reference,
                "test_dense": dense_dice, "stopped_because": record["stopped_because"],
            })
    return pd.DataFrame(rows)


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """Per method over replicates: the MACs and params removed within tolerance (mean, spread)."""
    rows = []
    for method, part in table.groupby("method", sort=False):
        spread = (f" (seeds: {', '.join(percent(v) for v in part.macs_removed)})" if len(part) > 1 else "")
        rows.append({
            "Method": method,
            "MACs removed within tolerance": percent(part.macs_removed.mean()) + spread,
            "Transformer MACs removed": percent(part.transformer_macs_removed.mean()),
            "Params removed": percent(part.params_removed.mean()),
            "Test Dice (selected)": f"{part.test_dice.mean():.4f}",
            "Δ vs reference (points)": f"{100 * part.test_vs_reference.mean():+.2f}",
            "Latency (ms, reduction)":
                f"{part.latency_ms.mean():.1f} ({percent(part.latency_reduction.mean())})",
            "Cycles tried": " / ".join(str(v) for v in part.cycles_tried),
            "Stopped because": "; ".join(dict.fromkeys(part.stopped_because)),
        })
    return pd.DataFrame(rows)


def plot_search(files: Mapping[str, str | Sequence[str]], methods: Sequence[str], tolerance: float,
                settings: ReportSettings, path: Path) -> None:
    """Validation Dice minus the reference of every cycle tried (first replicate), against the
    MACs share it removed: the guard keeps cycles above the tolerance line."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for method in methods:
        chain = [Decision.read(p) for p in files[guarded_key(0, method, "decisions")]]
        xs = [100 * d.target for d in chain]
        ys = [100 * (d.val_dice - d.reference) for d in chain]
        ax.plot(xs, ys, ls=":", color=colour(method), alpha=0.6)
        ax.scatter([x for x, d in zip(xs, chain, strict=True) if d.passed],
                   [y for y, d in zip(ys, chain, strict=True) if d.passed], color=colour(method),
                   label=method)
        ax.scatter([x for x, d in zip(xs, chain, strict=True) if not d.passed],
                   [y for y, d in zip(ys, chain, strict=True) if not d.passed], color=colour(method),
                   marker="x")
        chosen = next((d for d in chain if d.cycle == chain[-1].selected), None)
        if chosen is not None:
            ax.scatter([100 * chosen.target], [100 * (chosen.val_dice - chosen.reference)], s=160,
                       facecolors="none", edgecolors=colour(method), linewidths=2)
    ax.axhline(-100 * tolerance, color="black", ls="--", lw=1,
               label=f"tolerance (−{100 * tolerance:g} points)")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("MACs removed vs dense (%, target of the cycle)")
    ax.set_ylabel("validation Dice − reference (points)")
    ax.set_title("Every cycle tried (o passed, x failed, ring = selected)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path, settings.dpi)


def build_guarded_report(files: Mapping[str, str | Sequence[str]], config: dict, settings: dict,
                         out_csv: str | os.PathLike, out_html: str | os.PathLike,
                         out_figure: str | os.PathLike,
                         repo: str | os.PathLike | None = None) -> pd.DataFrame:
    """Write guarded.csv, the search figure and report.html of a guarded run."""
    opts = ReportSettings.from_config(settings)
    guard = GuardSettings.from_config(config["pruning"]["guard"])
    methods = config["pruning"]["methods"]
    table = guarded_table(files, methods)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    plot_search(files, methods, guard.tolerance, opts, Path(out_figure))
    page = render("guarded.html.j2", run=config["run"], arch=arch_phrase(config.get("model", {})),
                  tolerance=100 * guard.tolerance, reference=config["pruning"]["guard"]["reference"],
                  paper=percent(opts.paper_macs_reduction),
                  headline=headline(table).to_html(index=False, border=0),
                  details=table.drop(columns=["stopped_because"]).to_html(
                      index=False, border=0, float_format=lambda v: f"{v:.4f}"),
                  figure=embed(Path(out_figure)), provenance=provenance(config, Path(repo) if repo else None),
                  config=config)
    write_text(out_html, page)
    log.info("guarded report for run %s: %d searches -> %s", config["run"], len(table), out_html)
    return table
