"""Compression benchmark: size, MACs, latency and test Dice of dense and every (method, cycle).

Run from the repository root:
  python benchmarks/compression.py                 # the default config's run
  python benchmarks/compression.py --sweep         # + targets 60/72/80 % for every method, 2 seeds
It runs the pipeline for the models it reports (`snakemake --cores all`, nothing to do when
they are up to date), reads params and MACs from each model's cost.json and the test Dice from
its metrics.csv, and measures CPU latency itself, one model after the other on an otherwise
idle machine (batch 1, fixed threads, median of 30 runs after warm-up) for the whole model and
for the transformer encoder alone: the decoder's convolutions are not pruned and set a floor.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from varprune.cost import time_ms
from varprune.model import load_model

REPO = Path(__file__).resolve().parents[1]
SWEEP_TARGETS = [0.60, 0.72, 0.80]
SWEEP_SEEDS = [0, 1]


def run_pipeline(config_files: list[Path], run: str, methods: list[str], cycles: int) -> None:
    targets = [f"results/{run}/dense/metrics.csv", f"results/{run}/dense/cost.json"]
    for method in methods:
        for k in range(1, cycles + 1):
            targets += [f"results/{run}/{method}/cycle{k}/{name}" for name in ("metrics.csv", "cost.json")]
    args = [sys.executable, "-m", "snakemake", "--cores", "all", *targets]
    for path in config_files:
        args += ["--configfile", str(path)]
    subprocess.run(args, cwd=REPO, check=True)


def latency(model_path: Path, threads: int, runs: int = 30) -> tuple[float, float]:
    """Median ms at batch 1 of the whole model and of its transformer encoder."""
    model, spec, _ = load_model(model_path)
    torch.set_num_threads(threads)
    x = torch.randn(spec.input_shape(1))
    whole, _ = time_ms(lambda: model(x), warmup=5, runs=runs)
    encoder, _ = time_ms(lambda: model.vit(x), warmup=5, runs=runs)
    return whole, encoder


def model_row(run: str, name: str, threads: int) -> dict:
    folder = REPO / "results" / run / name
    cost = json.loads((folder / "cost.json").read_text())
    with open(folder / "metrics.csv") as fh:
        dice = [float(r["dice"]) for r in csv.DictReader(fh)]
    whole, encoder = latency(folder / "model.pt", threads)
    return {"model": name, "params": cost["params"], "macs_thop": cost["macs_thop"],
            "macs_full": cost["macs_full"], "latency": whole, "latency_encoder": encoder,
            "dice": statistics.mean(dice)}


def print_table(rows: list[dict], threads: int) -> None:
    dense = rows[0]
    print(f"\nCPU latency: batch 1, {threads} thread(s), median of 30 runs; reductions vs dense.")
    header = ("| model | params | Δ | MACs thop | Δ | MACs full | Δ | latency ms | Δ | "
              "encoder ms | Δ | test Dice | Δ Dice (points) |")
    print(header)
    print("|" + "---|" * 13)
    def reduction(row: dict, key: str) -> str:
        return f"{100 * (1 - row[key] / dense[key]):.1f} %"

    for r in rows:
        def red(key, row=r):
            return reduction(row, key)
        print(f"| {r['model']} | {r['params'] / 1e6:.2f} M | {red('params')} | "
              f"{r['macs_thop'] / 1e9:.3f} G | {red('macs_thop')} | {r['macs_full'] / 1e9:.3f} G | "
              f"{red('macs_full')} | {r['latency']:.1f} | {red('latency')} | {r['latency_encoder']:.1f} | "
              f"{red('latency_encoder')} | {r['dice']:.4f} | {100 * (r['dice'] - dense['dice']):+.2f} |")


def main_table(threads: int, no_run: bool) -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    run, methods = config["run"], config["pruning"]["methods"]
    cycles = len(config["pruning"]["cycle_targets"])
    if not no_run:
        run_pipeline([], run, methods, cycles)
    rows = [model_row(run, "dense", threads)]
    rows += [model_row(run, f"{m}/cycle{k}", threads) for m in methods for k in range(1, cycles + 1)]
    print(f"\n## run '{run}', targets {config['pruning']['cycle_targets']}")
    print_table(rows, threads)
    last = [r for r in rows if r["model"] == f"variable/cycle{cycles}"]
    if last:
        r, d = last[0], rows[0]
        print(f"\nlast variable cycle: MACs full -{100 * (1 - r['macs_full'] / d['macs_full']):.1f} % "
              f"(goal >= 70), params -{100 * (1 - r['params'] / d['params']):.1f} % (goal >= 75), "
              f"Dice {100 * (r['dice'] - d['dice']):+.2f} points (goal >= -0.5)")


def sweep(threads: int, no_run: bool) -> None:
    """Every method at each sweep target, two seeds; one run per seed (dense trained per seed)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    methods = config["pruning"]["methods"]
    results = {}
    for seed in SWEEP_SEEDS:
        run = f"sweep_seed{seed}"
        override = {"run": run, "pruning": {"cycle_targets": SWEEP_TARGETS, "seed": seed},
                    "finetune": {"seed": seed}, "train": {"seed": seed}}
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
            yaml.safe_dump(override, fh)
        if not no_run:
            run_pipeline([Path(fh.name)], run, methods, len(SWEEP_TARGETS))
        for method in methods:
            for k, target in enumerate(SWEEP_TARGETS, start=1):
                row = model_row(run, f"{method}/cycle{k}", threads)
                results.setdefault((method, target), []).append(row)
        results.setdefault(("dense", 0.0), []).append(model_row(run, "dense", threads))
    print("\n## sweep: test Dice against MACs removed (mean ± half the spread of the seeds "
          f"{SWEEP_SEEDS})")
    print("| method | target | MACs full removed | params removed | test Dice per seed | mean |")
    print("|---|---|---|---|---|---|")
    dense = {i: r for i, r in enumerate(results[("dense", 0.0)])}
    for (method, target), rows in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        macs = statistics.mean(1 - r["macs_full"] / dense[i]["macs_full"] for i, r in enumerate(rows))
        params = statistics.mean(1 - r["params"] / dense[i]["params"] for i, r in enumerate(rows))
        dice = [r["dice"] for r in rows]
        print(f"| {method} | {target:.2f} | {100 * macs:.1f} % | {100 * params:.1f} % | "
              f"{', '.join(f'{d:.4f}' for d in dice)} | {statistics.mean(dice):.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sweep", action="store_true", help="also run the target and seed sweep")
    parser.add_argument("--sweep-only", action="store_true")
    parser.add_argument("--no-run", action="store_true", help="only read existing outputs")
    args = parser.parse_args()
    if not args.sweep_only:
        main_table(args.threads, args.no_run)
    if args.sweep or args.sweep_only:
        sweep(args.threads, args.no_run)


if __name__ == "__main__":
    main()
