"""Deployment benchmark: CPU latency of dense and each method's last cycle in three runtimes.

Run from the repository root after the pipeline: python benchmarks/deploy.py [--run default]
For dense and the last cycle of every method it exports ONNX and TorchScript (each checked
against PyTorch within 1e-4) into a temp folder and times PyTorch eager, TorchScript and
onnxruntime at batch 1 and batch 16: fixed threads, warm-up, median of at least 20 runs.
Reductions are against dense in the same runtime. A second table splits the eager batch-1
latency into patch embedding, transformer and decoder (varprune.engine.latency.latency_parts: the
embedding and the encoder timed alone), with each part's reduction and the whole model's
latency reduction per MAC reduction: the parts transformer pruning cannot shrink set the floor.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from varprune.engine.export import export_model, runner
from varprune.engine.latency import latency_parts, time_ms
from varprune.model.network import load_model
from varprune.pruning.budget import spec_macs

REPO = Path(__file__).resolve().parents[1]


def median_ms(fn, runs: int) -> float:
    """Median milliseconds of `fn()` after warm-up (varprune.engine.latency.time_ms)."""
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
    # A throwaway pass first: the first model timed in a fresh process reads 15-25 % slow
    # (measured by benchmarks/compression.py), which would count as a reduction for the others.
    first, first_spec, _ = load_model(models["dense"])
    eager_parts(first.eval(), first_spec, args.runs)
    results, parts, macs = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name, path in models.items():
            model, spec, _ = load_model(path)
            model.eval()
            parts[name] = eager_parts(model, spec, args.runs)
            macs[name] = spec_macs(spec)
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

    print_parts(parts, macs, args)


def eager_parts(model, spec, runs: int) -> dict[str, float]:
    """Eager batch-1 latency per part (embedding, transformer, decoder) and of the whole model."""
    x = torch.rand(spec.input_shape(1), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        whole, encoder, embedding = (median_ms(fn, runs) for fn in (
            lambda: model(x), lambda: model.vit(x), lambda: model.vit.patch_embedding(x)))
    return {**latency_parts(whole, encoder, embedding), "whole": whole}


def print_parts(parts: dict, macs: dict, args) -> None:
    print(f"\nEager batch-1 latency per part (ms, {args.threads} threads; differences of medians) and the "
          "whole model's latency reduction / MAC reduction")
    print("| model | embedding | transformer | decoder | whole | Δ transformer | Δ whole | Δ MACs | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    dense = parts["dense"]
    for name, p in parts.items():
        d_tr = 1 - p["transformer"] / dense["transformer"]
        d_whole = 1 - p["whole"] / dense["whole"]
        d_macs = 1 - macs[name] / macs["dense"]
        ratio = f"{d_whole / d_macs:.2f}" if d_macs > 0 else ""
        print(f"| {name} | {p['embedding']:.2f} | {p['transformer']:.1f} | {p['decoder']:.1f} | "
              f"{p['whole']:.1f} | {100 * d_tr:.1f} % | {100 * d_whole:.1f} % | {100 * d_macs:.1f} % | "
              f"{ratio} |")


if __name__ == "__main__":
    main()
