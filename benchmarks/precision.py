"""bf16 against fp32 on this CPU: speed of a training step and of inference, and the test Dice
of the default dense model trained in each.

Run from the repository root after the default pipeline (it reuses its data and its dense
model, trained in fp32):
  python benchmarks/precision.py [--run default] [--threads 2] [--skip-training]

1. Speed, timed side by side (interleaved rounds, median of the round medians, with the
   spread over rounds): one optimiser step of the default SETR at batch 8 (forward, backward,
   AdamW), and inference at batch 1 and 16 (1 thread: a deployment's setting), fp32 and bf16.
2. Accuracy: the dense model trained again with train.precision bf16 (same config, seed and
   data: `varprune.engine.train.train_dense`), evaluated on the test set with bf16 autocast, against
   the run's fp32 dense model evaluated in fp32 and in bf16. bf16 keeps 8 bits of mantissa;
   the question is whether a segmentation notices.
Whether the CPU has native bf16 (AVX512-BF16 or AMX) decides the speed: the table says.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def cpu_flags() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    lines = [line for line in text.splitlines() if line.startswith("flags")]
    flags = lines[0].split(":", 1)[1].split() if lines else []
    found = [f for f in ("avx512_bf16", "amx_bf16", "avx512f") if f in flags]
    return ", ".join(found) or "none of avx512_bf16, amx_bf16, avx512f"


def interleaved(fns: dict, rounds: int, runs: int) -> dict:
    """Median of round medians (ms) and the spread over rounds, every function once per round."""
    for fn in fns.values():
        fn()
    medians = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                fn()
                times.append(1000 * (time.perf_counter() - start))
            medians[name].append(statistics.median(times))
    return {name: (statistics.median(v), max(v) - min(v)) for name, v in medians.items()}


def speed(config: dict, threads: int, rounds: int) -> list[dict]:
    from varprune.core.precision import autocast
    from varprune.model.network import build_model
    from varprune.model.spec import ModelSpec

    spec = ModelSpec.from_config(config["model"], config["preprocess"]["input_size"])
    cpu = torch.device("cpu")
    rows = []
    torch.set_num_threads(threads)
    models, optimisers = {}, {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        models[precision] = build_model(spec)
        optimisers[precision] = torch.optim.AdamW(models[precision].parameters(), lr=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    x = torch.rand(8, *spec.input_shape(1)[1:])
    y = (torch.rand(8, 1, *spec.input_shape(1)[2:]) > 0.7).float()

    def step(precision):
        def run():
            model, opt = models[precision], optimisers[precision]
            model.train()
            with autocast(cpu, precision):
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    timing = interleaved({p: step(p) for p in models}, rounds, 3)
    for precision, (ms, spread) in timing.items():
        rows.append({"what": f"training step, batch 8, {threads} threads", "precision": precision,
                     "ms": round(ms, 1), "spread_ms": round(spread, 1)})
    torch.set_num_threads(1)
    for batch in (1, 16):
        inputs = torch.rand(batch, *spec.input_shape(1)[1:])

        def infer(precision, inputs=inputs):
            def run():
                model = models[precision].eval()
                with torch.inference_mode(), autocast(cpu, precision):
                    model(inputs)
            return run

        timing = interleaved({p: infer(p) for p in models}, rounds, 10 if batch == 1 else 3)
        for precision, (ms, spread) in timing.items():
            rows.append({"what": f"inference, batch {batch}, 1 thread", "precision": precision,
                         "ms": round(ms, 2), "spread_ms": round(spread, 2)})
    return rows


def accuracy(config: dict, run: str, threads: int, work: Path) -> list[dict]:
    from varprune.engine.evaluate import evaluate_checkpoint
    from varprune.engine.train import train_dense

    data = REPO / "data"
    splits = json.loads((data / "splits.json").read_text())
    files = {part: [str(data / "preprocessed" / f"{c}.npz") for c in splits[part]]
             for part in ("train", "val")}
    test = [str(data / "preprocessed" / f"{c}.npz") for c in splits["test"]]
    truth = [str(data / "nifti" / c / "liver.nii.gz") for c in splits["test"]]
    fp32_model = REPO / "results" / run / "dense" / "model.pt"
    started = time.perf_counter()
    train_cfg = {**config["train"], "precision": "bf16", "device": "cpu"}
    result = train_dense(data / "splits.json", files, config["model"], train_cfg, config["preprocess"],
                         work / "bf16.pt", work / "bf16.csv", work / "state", threads=threads)
    bf16_seconds = time.perf_counter() - started
    fp32_log = REPO / "results" / run / "dense" / "train_log.csv"
    import pandas as pd

    fp32_seconds = float(pd.read_csv(fp32_log)["seconds"].sum())
    rows = []
    for label, model, precision in (("fp32-trained", fp32_model, "fp32"),
                                    ("fp32-trained", fp32_model, "bf16"),
                                    ("bf16-trained", work / "bf16.pt", "bf16"),
                                    ("bf16-trained", work / "bf16.pt", "fp32")):
        metrics = evaluate_checkpoint(model, test, truth, work / f"{label}-{precision}.csv", work / "pred",
                                      threads=threads, precision=precision)
        rows.append({"model": label, "inference": precision, "test_dice": round(float(np.mean(
            [m["dice"] for m in metrics])), 4)})
    rows.append({"model": "bf16-trained", "inference": "(training)",
                 "test_dice": f"best epoch {result.best_epoch}, val {result.best_val_dice:.4f}, "
                              f"{bf16_seconds:.0f} s vs {fp32_seconds:.0f} s for the run's fp32 epochs "
                              "(that run may have shared the machine)"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="default")
    parser.add_argument("--threads", type=int, default=2, help="threads of training (inference uses 1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-training", action="store_true", help="speed only")
    args = parser.parse_args()
    from compression import load_config

    config = load_config(REPO)
    print(f"CPU flags: {cpu_flags()}; torch {torch.__version__}")
    print("\n| what | precision | ms (median of round medians) | spread over rounds |\n|---|---|---|---|")
    for row in speed(config, args.threads, args.rounds):
        print(f"| {row['what']} | {row['precision']} | {row['ms']} | {row['spread_ms']} |", flush=True)
    if args.skip_training:
        return
    with tempfile.TemporaryDirectory() as tmp:
        rows = accuracy(config, args.run, args.threads, Path(tmp))
    print("\n| model | inference precision | test Dice (6 cases) |\n|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['inference']} | {row['test_dice']} |")


if __name__ == "__main__":
    main()
