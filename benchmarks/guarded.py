"""Guarded benchmark: how far each method prunes within the tolerance on the default data.

Run from the repository root:
  python benchmarks/guarded.py                       # benchmarks/guarded.yaml over the defaults
  python benchmarks/guarded.py --configfile my.yaml  # other settings (merged after guarded.yaml)
  python benchmarks/guarded.py --no-run              # only read a finished run
It runs the pipeline (`snakemake --cores all`) and prints, per method (and replicate): cycles
tried, the selected cycle, MACs and parameters removed (total and of the transformer), the
selected model's test Dice against dense_long fine-tuned as often (evaluated after selection),
why the search stopped; then the wall time of the pipeline call.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import REPO, merged_config  # noqa: E402

DEFAULT = Path(__file__).resolve().parent / "guarded.yaml"


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """The printed table: one row per method and replicate."""
    pct = "{:.1%}".format
    return pd.DataFrame({
        "method": table.method, "replicate": table.replicate, "cycles tried": table.cycles_tried,
        "selected": [f"cycle {c} ({pct(t)})"
                     for c, t in zip(table.selected_cycle, table.target, strict=True)],
        "MACs removed": table.macs_removed.map(pct),
        "transformer MACs removed": table.transformer_macs_removed.map(pct),
        "params removed": table.params_removed.map(pct),
        "val Dice − ref (points)": (100 * (table.val_dice - table.val_reference)).map("{:+.2f}".format),
        "test Dice": table.test_dice.map("{:.4f}".format),
        "test Δ vs dense_long (points)": (100 * table.test_vs_reference).map("{:+.2f}".format),
        "stopped because": table.stopped_because,
    })


def across_replicates(table: pd.DataFrame) -> pd.DataFrame:
    """Per method over the replicates: MACs removed (mean, lowest, highest), test Δ vs the
    matched reference, and the method's rank by MACs removed in each replicate (1 = most), so
    that a reader sees whether the order holds from seed to seed."""
    ranks = table.groupby("replicate").macs_removed.rank(ascending=False, method="min").astype(int)
    rows = []
    for method, part in table.assign(rank=ranks).groupby("method", sort=False):
        removed = part.macs_removed
        rows.append({
            "method": method, "replicates": len(part),
            "MACs removed, mean [lowest, highest]":
                f"{removed.mean():.1%} [{removed.min():.1%}, {removed.max():.1%}]",
            "test Δ vs reference, mean (points)": f"{100 * part.test_vs_reference.mean():+.2f}",
            "rank per replicate": ", ".join(str(r) for r in part.sort_values("replicate")["rank"]),
        })
    return pd.DataFrame(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", type=Path, action="append", default=[])
    parser.add_argument("--no-run", action="store_true", help="read a finished run, run nothing")
    args = parser.parse_args()
    files = [DEFAULT, *args.configfile]
    config = merged_config(files)
    report = REPO / "results" / config["run"] / "report" / "guarded.csv"
    if not args.no_run:
        cmd = [sys.executable, "-m", "snakemake", "--cores", "all", "--configfile", *map(str, files)]
        started = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True)
        print(f"\npipeline: {time.perf_counter() - started:.0f} s wall (nothing is redone when up to date)")
    if not report.exists():
        print(f"guarded: no {report}; run without --no-run", file=sys.stderr)
        return 2
    table = pd.read_csv(report)
    guard = config["pruning"]["guard"]
    print(f"\n## Most removed within {100 * guard['tolerance']:g} validation Dice points of "
          f"{guard['reference']} (run {config['run']})")
    print(summary(table).to_markdown(index=False))
    if table.replicate.nunique() > 1:
        print(f"\n## Across the {table.replicate.nunique()} replicates")
        print(across_replicates(table).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
