"""Comparison benchmark: the controls, the one-shot curves and the paired verdicts of a run.

Run from the repository root:
  python benchmarks/compare.py                       # the default config's run
  python benchmarks/compare.py --configfile my.yaml  # any run (extra config files are merged)
  python benchmarks/compare.py --no-run              # only read a finished run
It runs the pipeline up to the report (`snakemake --cores all`; nothing to do when it is up to
date) and prints, from the run's own files: the controls (dense, dense_long, transformer_off)
next to the last cycle of every method, the transformer headroom with its interval, the
one-shot table (accuracy right after the surgery, no fine-tuning), and the paired verdicts of
the highest budget. Wall time of the pipeline call is printed too.
With `--configfile benchmarks/knee.yaml` (one replicate, cycles from 45 to 94.5 %) the
fine-tuned curve shows where every method's Dice starts to fall: how the default's last budget
was chosen.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from varprune.core.layout import RunFiles
from varprune.study.compare import headroom, metrics_long, oneshot_long
from varprune.study.stats import verdict
from varprune.workflow.configfiles import merged_config as load_merged

REPO = Path(__file__).resolve().parents[1]


def merged_config(files: list[Path]) -> dict:
    """The run's config: the defaults, then each --configfile, merged as Snakemake merges them."""
    return load_merged(*files, defaults=REPO / "config" / "config.yaml")


def controls_table(summary: pd.DataFrame) -> pd.DataFrame:
    last = summary.cycle.max()
    rows = summary[(summary.cycle == 0) | (summary.cycle == last)]
    return pd.DataFrame({
        "model": [m if c == 0 else f"{m}/cycle{c}" for m, c in zip(rows.method, rows.cycle, strict=True)],
        "MACs removed": [f"{100 * v:.1f} %" for v in rows.macs_full_reduction],
        "transformer MACs removed": [f"{100 * v:.1f} %" for v in rows.macs_transformer_reduction],
        "params removed": [f"{100 * v:.1f} %" for v in rows.params_reduction],
        "test Dice": [f"{v:.4f}" for v in rows.dice_mean],
        "Δ vs dense_long (points)": [f"{100 * v:+.2f}" for v in rows.dice_vs_dense_long],
        "val Dice before → after FT": ["" if pd.isna(b) else f"{b:.4f} → {a:.4f}" for b, a in
                                      zip(rows.val_dice_before_finetune, rows.val_dice_after_finetune,
                                          strict=True)],
    })


def curve_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Fine-tuned test Dice of every cycle and method, with the mean over methods and its fall
    below dense_long: where that fall starts is the knee a default budget should reach. The run
    has one dense_long, fine-tuned as often as the last cycle; earlier cycles had fewer rounds,
    so their fall is read against a reference that had more training than they did."""
    cycles = summary[summary.cycle > 0]
    wide = cycles.pivot_table(index="target", columns="method", values="dice_mean")
    wide = wide[list(dict.fromkeys(cycles.method))]  # the config's method order, not alphabetical
    reference = float(summary.loc[summary.method == "dense_long", "dice_mean"].iloc[0])
    wide["mean"] = wide.mean(axis=1)
    fall = "mean − dense_long (points; dense_long matched to the last cycle)"
    wide[fall] = 100 * (wide["mean"] - reference)
    wide.index = [f"{100 * t:.1f} %" for t in wide.index]
    wide.index.name = "MACs removed (target)"
    return wide.round(4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", type=Path, action="append", default=[])
    parser.add_argument("--no-run", action="store_true", help="read a finished run, run nothing")
    args = parser.parse_args()
    config = merged_config(args.configfile)
    run = config["run"]
    results = REPO / "results" / run
    seeds = (config.get("replicates") or {}).get("seeds") or []
    replicates = [results / f"seed{s}" for s in seeds] or [results]
    if not args.no_run:
        cmd = [sys.executable, "-m", "snakemake", "--cores", "all", f"results/{run}/report/report.html"]
        if args.configfile:  # one flag for all files: a repeated --configfile replaces the earlier ones
            cmd += ["--configfile", *map(str, args.configfile)]
        started = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True)
        print(f"\npipeline: {time.perf_counter() - started:.0f} s wall (nothing is redone when up to date)")

    if not (results / "report" / "comparison.csv").exists():
        print(f"compare: {results / 'report'} holds no finished report of run {run!r}; run without --no-run",
              file=sys.stderr)
        return 2
    summary = pd.read_csv(results / "report" / "summary.csv")
    comparison = pd.read_csv(results / "report" / "comparison.csv")
    methods = config["pruning"]["methods"]
    targets = config["pruning"]["cycle_targets"]
    files = RunFiles.from_folders(replicates, methods, len(targets))
    oneshot = oneshot_long(files).groupby(["method", "target"], as_index=False)[
        ["macs_reduction", "val_dice", "test_dice"]].mean()
    room = headroom(metrics_long(files, methods, targets))

    sample = "1 replicate" if room.n_replicates == 1 else f"{room.n_replicates} replicates"
    print(f"\n## Controls and last cycles (run {run}: {room.n_cases} test cases × {sample}; means)")
    print(controls_table(summary).to_markdown(index=False))
    print(f"\nHeadroom: {verdict('dense_long', 'transformer_off', room)}")

    print("\n## Fine-tuned curve (test Dice after each cycle's fine-tuning; means)")
    print(curve_table(summary).to_markdown())

    print("\n## One-shot (from dense, no fine-tuning; Dice on the model grid, mean over replicates)")
    wide = oneshot[~oneshot.method.isin(["dense", "transformer_off"])].pivot_table(
        index="target", columns="method", values=["val_dice", "test_dice"])
    wide.columns = [f"{method} {split.split('_')[0]}" for split, method in wide.columns]
    dense = oneshot[oneshot.method == "dense"].iloc[0]
    print(f"dense: val {dense.val_dice:.4f}, test {dense.test_dice:.4f}")
    for off in oneshot[oneshot.method == "transformer_off"].itertuples():
        print(f"transformer_off (MACs -{100 * off.macs_reduction:.1f} %, no fine-tuning): "
              f"val {off.val_dice:.4f}, test {off.test_dice:.4f}")
    print(wide.round(4).to_markdown())

    print(f"\n## Paired verdicts at the highest budget ({100 * max(targets):.0f} % of the MACs)")
    last = comparison[comparison.budget == comparison.budget.max()]
    table = last[["method_a", "method_b", "metric", "mean_diff", "ci_low", "ci_high", "p_value",
                  "p_adjusted", "n_cases", "n_replicates"]]
    print(table.to_markdown(index=False, floatfmt=".4g"))
    for line in last[last.metric == "dice"].verdict:
        print(f"- {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
