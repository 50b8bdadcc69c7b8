"""Transformer headroom benchmark: how much of the accuracy each segmenter's transformer carries.

Run from the repository root:
  python benchmarks/headroom.py                         # unetr and setr presets, default data
  python benchmarks/headroom.py --variant mine=my.yaml  # any preset(s) on top of the defaults
  python benchmarks/headroom.py --no-run                # only read finished runs

For every variant it runs the pipeline (`snakemake --cores all`, run `headroom-{name}`) up to
the dense model, `dense_long` (one fine-tuning: the same budget `transformer_off` gets), the
`transformer_off` control, their test evaluations and the one-shot table at three budgets, then
prints from the run's files: dense test Dice, dense_long, transformer_off before fine-tuning
(one-shot row) and after, the headroom dense_long - transformer_off with its paired interval,
the transformer's share of MACs and params, one-shot Dice of variable / fixed / global, and the
dense training wall time (Snakemake's benchmark file: compare variants within one run only).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from varprune.study.compare import headroom

REPO = Path(__file__).resolve().parents[1]
BUDGETS = [0.45, 0.65, 0.75]
DEFAULT_VARIANTS = ["unetr=config/unetr.yaml", "setr=config/setr.yaml"]


def override(name: str, budgets: list[float]) -> dict:
    """The benchmark's own settings: one cycle (so dense_long gets transformer_off's budget)."""
    return {"run": f"headroom-{name}",
            "pruning": {"methods": ["variable", "fixed", "global"], "cycle_targets": [budgets[0]]},
            "oneshot": {"targets": budgets},
            "replicates": {"seeds": None}}


def targets(run: str) -> list[str]:
    models = ("dense", "dense_long", "transformer_off")
    return ([f"results/{run}/{m}/metrics.csv" for m in models]
            + [f"results/{run}/{m}/cost.json" for m in ("dense", "transformer_off")]
            + [f"results/{run}/oneshot.csv"])


def run_variant(name: str, files: list[str], budgets: list[float], cores: str) -> float:
    """Run the variant's pipeline targets; return the wall time of the call in seconds."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(override(name, budgets), handle)
    command = [sys.executable, "-m", "snakemake", "--cores", cores, "--configfile", *files, handle.name, "--",
               *targets(f"headroom-{name}")]
    print("+", " ".join(command), flush=True)
    start = time.perf_counter()
    try:
        subprocess.run(command, cwd=REPO, check=True)
    finally:
        os.unlink(handle.name)
    return time.perf_counter() - start


def seconds(path: Path) -> float:
    return float(pd.read_csv(path, sep="\t")["s"].iloc[0]) if path.is_file() else float("nan")


def summarise(name: str, budgets: list[float]) -> dict:
    """One row of the table, from the files of run `headroom-{name}`."""
    results = REPO / "results" / f"headroom-{name}"
    metric = {m: pd.read_csv(results / m / "metrics.csv") for m in ("dense", "dense_long", "transformer_off")}
    oneshot = pd.read_csv(results / "oneshot.csv")
    dense_cost = yaml.safe_load((results / "dense" / "cost.json").read_text())
    off_cost = yaml.safe_load((results / "transformer_off" / "cost.json").read_text())
    off_oneshot = oneshot[oneshot.method == "transformer_off"]
    room = headroom(pd.concat([f.assign(method=m, cycle=0, replicate=0) for m, f in metric.items()]))
    row = {
        "variant": name,
        "dense test": metric["dense"].dice.mean(),
        "dense_long test": metric["dense_long"].dice.mean(),
        "off, no FT (val/test)": (f"{off_oneshot.val_dice.iloc[0]:.3f}/{off_oneshot.test_dice.iloc[0]:.3f}"
                                  if len(off_oneshot) else "n/a"),
        "off, FT test": metric["transformer_off"].dice.mean(),
        "headroom (points)": (f"{100 * room.mean_diff:+.2f} [{100 * room.ci_low:+.2f}, "
                              f"{100 * room.ci_high:+.2f}] p={room.p_value:.3f}"),
        "transformer MACs": 1 - off_cost["macs_full"] / dense_cost["macs_full"],
        "transformer params": 1 - off_cost["params"] / dense_cost["params"],
        "dense GMACs": dense_cost["macs_full"] / 1e9,
        "dense train s": seconds(REPO / "benchmarks" / f"headroom-{name}" / "dense" / "train.tsv"),
    }
    for budget in budgets:
        at = oneshot[(oneshot.target - budget).abs() < 1e-9]
        row[f"one-shot test @{budget:.2f} v/f/g"] = "/".join(
            f"{at[at.method == m].test_dice.iloc[0]:.3f}" if len(at[at.method == m]) else "n/a"
            for m in ("variable", "fixed", "global"))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", metavar="NAME=FILE[,FILE]",
                        help=f"a preset to measure (repeatable); default {' '.join(DEFAULT_VARIANTS)}")
    parser.add_argument("--budgets", type=float, nargs=3, default=BUDGETS, help="one-shot budgets")
    parser.add_argument("--cores", default="all")
    parser.add_argument("--no-run", action="store_true", help="only read finished runs")
    args = parser.parse_args()
    variants = []
    for item in args.variant or DEFAULT_VARIANTS:
        name, _, files = item.partition("=")
        if not name or not files:
            parser.error(f"--variant {item!r}: expected NAME=FILE[,FILE]")
        variants.append((name, [f for f in files.split(",") if f]))
    walls = {}
    for name, files in variants:
        missing = [f for f in files if not (REPO / f).is_file()]
        if missing:
            parser.error(f"--variant {name}: no such config file {missing}")
        if not args.no_run:
            walls[name] = run_variant(name, files, args.budgets, args.cores)
    try:
        table = pd.DataFrame([summarise(name, args.budgets) for name, _ in variants])
    except FileNotFoundError as err:
        print(f"headroom: a run is not finished ({err.filename}); run without --no-run", file=sys.stderr)
        return 2
    for name, wall in walls.items():
        print(f"pipeline wall time, {name}: {wall:.0f} s")
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format",
                           "{:.3f}".format):
        print(table.set_index("variant").T.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
