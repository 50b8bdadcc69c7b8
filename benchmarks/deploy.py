"""Deployment benchmark: CPU latency of dense and each method's last cycle in three runtimes.

Run from the repository root after the pipeline: python benchmarks/deploy.py [--run default]
For dense and the last cycle of every method it exports ONNX and TorchScript (each checked
against PyTorch within 1e-4) into a temp folder and times PyTorch eager, TorchScript and
onnxruntime at batch 1 and batch 16: fixed threads, warm-up, median of at least 20 runs.
Reductions are against dense in the same runtime.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from varprune.cost import time_ms
from varprune.export import export_model, runner
from varprune.model import load_model

REPO = Path(__file__).resolve().parents[1]


def median_ms(fn, runs: int) -> float:
    """Median milliseconds of `fn()` after warm-up (varprune.cost.time_ms)."""
    return time_ms(fn, warmup=3, runs=runs)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="default: the run of config/config.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if args.runs < 20:
        parser.error("--runs must be at least 20")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    run = args.run or config["run"]
    cycles = len(config["pruning"]["cycle_targets"])
    models = {"dense": REPO / "results" / run / "dense" / "model.pt"}
    models.update({f"{m}/cycle{cycles}": REPO / "results" / run / m / f"cycle{cycles}" / "model.pt"
                   for m in config["pruning"]["methods"]})
    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name, path in models.items():
            model, spec, _ = load_model(path)
            model.eval()
            runners = {"eager": None}
            for fmt in ("torchscript", "onnx"):
                out = tmp / f"{name.replace('/', '_')}.{fmt}"
                export_model(path, fmt, out)
                runners[fmt] = runner(fmt, out.read_bytes(), threads=args.threads)
            for batch in (1, 16):
                x = torch.rand(spec.input_shape(batch), generator=torch.Generator().manual_seed(batch))
                xn = x.numpy().astype(np.float32)
                for runtime, run_fn in runners.items():
                    if runtime == "eager":
                        def call(x=x, model=model):
                            with torch.inference_mode():
                                model(x)
                    else:
                        def call(run_fn=run_fn, xn=xn):
                            run_fn(xn)
                    results[(name, runtime, batch)] = median_ms(call, args.runs)
                    ms = results[(name, runtime, batch)]
                    print(f"{name:<18} {runtime:<12} batch {batch:>2}: {ms:8.1f} ms", flush=True)
    print(f"\nCPU latency in ms, {args.threads} threads, median of {args.runs} runs after warm-up; "
          "reduction vs dense in the same runtime")
    print("| model | runtime | batch 1 | Δ | batch 16 | Δ | per image, batch 16 |")
    print("|---|---|---|---|---|---|---|")
    for name in models:
        for runtime in ("eager", "torchscript", "onnx"):
            one, many = results[(name, runtime, 1)], results[(name, runtime, 16)]
            d1 = 1 - one / results[("dense", runtime, 1)]
            d16 = 1 - many / results[("dense", runtime, 16)]
            print(f"| {name} | {runtime} | {one:.1f} | {100 * d1:.1f} % | {many:.1f} | {100 * d16:.1f} % | "
                  f"{many / 16:.1f} |")


if __name__ == "__main__":
    main()
