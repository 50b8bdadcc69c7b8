"""A dated Markdown page of a run's results, generated from its report files, for docs/results/.

Numbers typed into a README by hand drift from the runs they came from; this page is written from
`report/summary.csv`, `report/comparison.csv` and `report/provenance.json` of one run, stamped
with the commit and date the report was built at, so a reader can tell where each number comes
from and regenerate it (`varprune results-page results/{run}/report -o docs/results/{run}.md`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from varprune.report.tables import outcome_words, percent, verdict_table

SCALES = {"dice": (100, "points"), "voe": (100, "points"), "rvd": (100, "points")}


class ResultsPageError(ValueError):
    """The report folder lacks a file the page is written from."""


def _markdown(frame: pd.DataFrame) -> str:
    """A pipe table (no dependency on `tabulate`)."""
    cells = [[str(v) for v in frame.columns]]
    cells += [[str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)


def _count(n, word: str) -> str:
    return f"{int(n)} {word}{'' if int(n) == 1 else 's'}"


def _model_name(method: str, cycle: int) -> str:
    return method if cycle == 0 else f"{method} cycle {cycle}"


def summary_markdown(summary: pd.DataFrame) -> str:
    """One row per model: budget, size, MACs, latency with its spread, test Dice."""
    rows = summary[summary.get("format", pd.Series("pytorch", index=summary.index)) == "pytorch"]

    def latency(value: float, spread: float, beyond: bool, reduction: float) -> str:
        if pd.isna(value):
            return ""
        text = f"{value:.1f} ± {spread / 2:.1f}"
        if reduction and not pd.isna(reduction):
            text += f" ({-100 * reduction:+.0f} %{'' if beyond else ', within the spread'})"
        return text

    frame = pd.DataFrame({
        "model": [_model_name(m, c) for m, c in zip(rows.method, rows.cycle, strict=True)],
        "MACs removed": rows.macs_full_reduction.map(percent),
        "params removed": rows.params_reduction.map(percent),
        "eager ms (± half spread)": [latency(*v) for v in zip(
            rows.latency_ms, rows.latency_spread_ms, rows.latency_beyond_spread, rows.latency_ms_reduction,
            strict=True)],
        "onnxruntime ms (± half spread)": [latency(*v) for v in zip(
            rows.latency_onnx_ms, rows.latency_onnx_spread_ms, rows.latency_onnx_beyond_spread,
            rows.latency_onnx_ms_reduction, strict=True)],
        "test Dice (mean ± std)": [f"{m:.4f} ± {s:.4f}"
                                   for m, s in zip(rows.dice_mean, rows.dice_std, strict=True)],
        "Δ vs dense_long (points)": rows.dice_vs_dense_long.map(lambda v: f"{100 * v:+.2f}"),
    })
    return _markdown(frame)


def comparison_markdown(comparison: pd.DataFrame, metric: str = "dice") -> str:
    """Every pair at every budget for one metric: difference, interval, p, TOST p, MDE, outcome."""
    scale, unit = SCALES.get(metric, (1, "mm"))
    rows = comparison[comparison.metric == metric]
    frame = pd.DataFrame({
        "budget": rows.budget.map(percent),
        "A − B": [f"{a} − {b}" for a, b in zip(rows.method_a, rows.method_b, strict=True)],
        f"difference ({unit})": rows.mean_diff.map(lambda v: "" if pd.isna(v) else f"{scale * v:+.2f}"),
        "95 % CI": [("" if pd.isna(lo) else f"[{scale * lo:+.2f}, {scale * hi:+.2f}]")
                    for lo, hi in zip(rows.ci_low, rows.ci_high, strict=True)],
        "p (adjusted)": [f"{p:.2g} ({q:.2g})" for p, q in zip(rows.p_value, rows.p_adjusted, strict=True)],
        "TOST p": rows.p_equivalence.map(lambda v: "" if pd.isna(v) else f"{v:.2g}"),
        f"MDE ({unit})": rows.mde.map(
            lambda v: "" if pd.isna(v) else ("∞" if math.isinf(v) else f"{scale * v:.2f}")),
        "outcome": [outcome_words(r) for r in rows.itertuples()],
        "cases × replicates": [f"{c} × {r}" for c, r in zip(rows.n_cases, rows.n_replicates, strict=True)],
    })
    return _markdown(frame)


def read_report(report_folder: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """summary.csv, comparison.csv and provenance.json of a run's report folder."""
    folder = Path(report_folder)
    names = ("summary.csv", "comparison.csv", "provenance.json")
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise ResultsPageError(f"{folder}: no {', '.join(missing)} (run the pipeline's report for this run "
                               "with this version first)")
    return (pd.read_csv(folder / "summary.csv"), pd.read_csv(folder / "comparison.csv"),
            json.loads((folder / "provenance.json").read_text(encoding="utf-8")))


def results_page(report_folder: str | os.PathLike, title: str | None = None, notes: str = "") -> str:
    """The Markdown page of one run's report folder."""
    summary, comparison, prov = read_report(report_folder)
    config = prov.get("config", {})
    run = config.get("run", Path(report_folder).parent.name)
    dice = comparison[comparison.metric == "dice"]
    counts = dice.outcome.value_counts().reindex(["a_better", "b_better", "equivalent", "inconclusive"],
                                                 fill_value=0)
    first = dice.iloc[0] if len(dice) else None
    margin = config.get("stats", {}).get("equivalence_margin", {}).get("dice", math.nan)
    dense = summary[summary.method == "dense"].iloc[0]
    long = summary[summary.method == "dense_long"].iloc[0]
    threads = int(config.get("cost", {}).get("threads", 1))
    parts = [
        f"# {title or f'Results of run {run}'}",
        "",
        f"Generated by `varprune results-page` from `{Path(report_folder).as_posix()}`: report built "
        f"{prov.get('date', 'at an unknown date')} at commit `{prov.get('git commit', 'unknown')}` "
        f"({prov.get('machine', 'unknown machine')}, torch {prov.get('torch', '?')}). Do not edit by hand: "
        "rerun the command after a new run.",
        "",
        f"- Data: {prov.get('data source', '?')}; "
        + (f"{_count(first.n_cases, 'test case')} × {_count(first.n_replicates, 'replicate')} per comparison"
           if first is not None else "no comparisons")
        + f"; equivalence margin ±{100 * margin:.2f} Dice points.",
        f"- Outcomes of the {len(dice)} Dice comparisons: {counts.a_better + counts.b_better} one better, "
        f"{counts.equivalent} equivalent, {counts.inconclusive} inconclusive.",
        f"- Latency timed side by side (batch 1, {_count(threads, 'thread')}): dense "
        f"{dense.latency_ms:.2f} ms and dense_long {long.latency_ms:.2f} ms (the same network: "
        f"{100 * abs(dense.latency_ms - long.latency_ms) / dense.latency_ms:.1f} % apart); onnxruntime "
        f"{dense.latency_onnx_ms:.2f} and {long.latency_onnx_ms:.2f} ms.",
    ]
    if notes:
        parts += ["", notes.strip()]
    verdicts = verdict_table(comparison)
    parts += ["", "## Verdicts (test Dice)", "", _markdown(verdicts) if len(verdicts) else "(none)",
              "", "## Models", "", summary_markdown(summary),
              "", "## Every comparison (test Dice)", "", comparison_markdown(comparison, "dice"),
              "", "## Every comparison (HD95)", "", comparison_markdown(comparison, "hd95_mm"), ""]
    return "\n".join(parts)


def write_results_page(report_folder: str | os.PathLike, out: str | os.PathLike, title: str | None = None,
                       notes: str = "") -> str:
    """Write the page atomically and return it."""
    from varprune.core.atomic import write_text

    page = results_page(report_folder, title, notes)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_text(out, page)
    return page
