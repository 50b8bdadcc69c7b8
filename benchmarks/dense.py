"""Dense-model benchmark: test Dice, size, MACs, latency and training wall time on the default data.

Run from the repository root: python benchmarks/dense.py [--run default] [--no-run]
It first runs the pipeline up to the dense model's outputs (`snakemake --cores all`, which does
nothing when they are up to date), then reads what the pipeline wrote:
results/{run}/dense/{metrics.csv,cost.json,train_log.csv} and the train rule's benchmark file,
times the dense model (varprune.engine.latency) and prints one table. The goals of the dense-model issue:
test Dice >= 0.90, training <= 6 min on a 2-core CPU. The transformer layers' shares of MACs and
parameters are measured on the model.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import torch

from varprune.engine.cost import macs_full
from varprune.engine.latency import time_models
from varprune.model.network import count_parameters, load_model, transformer_layers

REPO = Path(__file__).resolve().parents[1]


def block_shares(model_path: Path) -> tuple[float, float]:
    """Shares of the whole model's MACs (full counter) and params that sit in the transformer layers."""
    model, spec, _ = load_model(model_path)
    x = torch.zeros(spec.input_shape(1))
    captured = {}
    hook = model.vit.blocks[0].register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0]))
    total = macs_full(model, x)
    hook.remove()
    tokens = captured["x"]
    blocks = sum(macs_full(block, tokens) for block in transformer_layers(model))
    params = sum(count_parameters(block) for block in transformer_layers(model))
    return blocks / total, params / count_parameters(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="default")
    parser.add_argument("--no-run", action="store_true", help="only read existing outputs")
    args = parser.parse_args()
    dense = REPO / "results" / args.run / "dense"
    if not args.no_run:
        targets = [f"{dense.relative_to(REPO)}/{name}" for name in ("metrics.csv", "cost.json")]
        subprocess.run([sys.executable, "-m", "snakemake", "--cores", "all", *targets], cwd=REPO, check=True)

    with open(dense / "metrics.csv") as fh:
        metrics = list(csv.DictReader(fh))
    cost = json.loads((dense / "cost.json").read_text())
    with open(dense / "train_log.csv") as fh:
        epochs = list(csv.DictReader(fh))
    bench = REPO / "benchmarks" / args.run / "dense" / "train.tsv"
    with open(bench) as fh:
        train_s = float(next(csv.DictReader(fh, delimiter="\t"))["s"])
    mac_share, param_share = block_shares(dense / "model.pt")
    timing = time_models({"dense": dense / "model.pt"}, threads=1, runtimes=("eager",)).iloc[0]
    dice = [float(r["dice"]) for r in metrics]
    mean_dice = sum(dice) / len(dice)

    rows = [
        ("test cases", ", ".join(f"{r['case']} {float(r['dice']):.4f}" for r in metrics)),
        ("test Dice (mean)", f"{mean_dice:.4f}  goal >= 0.90: {'PASS' if mean_dice >= 0.90 else 'FAIL'}"),
        ("test HD95 / ASSD (mean, mm)", "{:.2f} / {:.2f}".format(
            sum(float(r["hd95_mm"]) for r in metrics) / len(metrics),
            sum(float(r["assd_mm"]) for r in metrics) / len(metrics))),
        ("best val Dice (epoch)", "{} ({})".format(
            max(float(e["val_dice"]) for e in epochs),
            max(epochs, key=lambda e: float(e["val_dice"]))["epoch"])),
        ("training wall time", f"{train_s:.0f} s = {train_s / 60:.1f} min over {len(epochs)} epochs"
                               f"  goal <= 6 min: {'PASS' if train_s <= 360 else 'FAIL'}"),
        ("params", f"{cost['params']:,}"),
        ("MACs thop", f"{cost['macs_thop'] / 1e9:.3f} G"),
        ("MACs full", f"{cost['macs_full'] / 1e9:.3f} G"),
        ("layers' share MACs / params", f"{mac_share:.1%} / {param_share:.1%}"),
        ("latency batch 1", f"{timing.latency_ms:.1f} ms (spread {timing.latency_spread_ms:.1f} over "
                            f"{timing.rounds} rounds of {timing.runs} runs, {timing.threads} thread)"),
        ("encoder latency", f"{timing.latency_encoder_ms:.1f} ms"),
        ("input", "x".join(str(v) for v in cost["input_shape"])),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"| {'dense model, run ' + args.run:<{width}} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |")


if __name__ == "__main__":
    main()
