"""Where a model's batch-1 CPU time goes, by kind of operation: why latency falls less than MACs.

  python benchmarks/latency_profile.py results/default/dense/model.pt results/default/variable/cycle3/model.pt

Runs each model under `torch.profiler` (batch 1, `--threads` threads, after warm-up) and prints,
per model, the self CPU time of each kind of operation (linear layers, the attention's per-head
products, its softmax, LayerNorm, GELU, convolution, InstanceNorm, upsampling, element-wise work
and copies, the rest) with its share and, for a pruned model, its change against the first model
given. MACs live in the products and convolutions only; everything else costs time without MACs,
so its share sets how far latency can follow a MAC reduction.

Without checkpoints, the reference is an untrained model built from the config (with
`--preset`), and `--prune METHOD` adds copies of it pruned cycle by cycle to `--targets` under
`--scope` (l1 scores, no fine-tuning: CPU time depends on the widths, not on the weights):

  python benchmarks/latency_profile.py --preset config/unetr.yaml --scope all --prune fixed global
"""

from __future__ import annotations

import argparse
import copy
from collections import defaultdict
from pathlib import Path

import torch
from compression import load_config  # benchmarks/compression.py, next to this file
from torch import nn
from torch.profiler import ProfilerActivity, profile

from varprune.engine.cost import macs_full
from varprune.model.network import ModelSpec, build_model, load_model
from varprune.pruning.cycle import CycleSettings, prune_model
from varprune.pruning.significance import make_criterion

ROOT = Path(__file__).resolve().parent.parent

KINDS = {
    "linear": ("addmm", "mm", "linear"),  # qkv, out_proj, FFN: their MACs fall with every width
    "attn_matmul": ("bmm", "matmul", "baddbmm", "einsum"),  # q·kᵀ, attention·v per head
    "softmax": ("softmax", "_softmax"),
    "layer_norm": ("layer_norm", "native_layer_norm"),
    "gelu": ("gelu",),
    "conv": ("convolution", "_convolution", "conv2d", "conv3d", "mkldnn_convolution", "thnn_conv2d"),
    "instance_norm": ("instance_norm", "batch_norm", "native_batch_norm", "_batch_norm_impl_index"),
    "upsample": ("upsample_bilinear2d", "upsample_trilinear3d", "_upsample_bilinear2d_aa"),
    "elementwise": ("add", "add_", "mul", "mul_", "div", "relu", "relu_", "copy_", "clone", "contiguous",
                    "cat", "zeros_like", "fill_", "zero_", "to", "_to_copy", "empty_like"),
}


def kind_of(op: str) -> str:
    name = op.split("::")[-1]
    for kind, names in KINDS.items():
        if name in names:
            return kind
    return "other"


def pruned_copies(model: nn.Module, spec: ModelSpec, method: str, targets: list[float],
                  pruning: dict) -> list[tuple[str, nn.Module, ModelSpec]]:
    """`model` pruned by `method` cycle after cycle to each target (l1 scores; no refit, no
    fine-tuning), one copy per cycle."""
    copies = []
    previous = 0.0
    for cycle, target in enumerate(targets, start=1):
        settings = CycleSettings.from_config({**pruning, "target": target, "previous_target": previous,
                                              "refit_output": False})
        model = copy.deepcopy(model)
        scores = make_criterion("l1").score(model, spec, [])
        spec, _ = prune_model(model, spec, method, settings, [], seed=settings.seed + cycle, scores=scores)
        copies.append((f"{method} cycle {cycle}", model, spec))
        previous = target
    return copies


def profiled_events(model: nn.Module, spec: ModelSpec, runs: int, warmup: int = 5):
    """`torch.profiler`'s per-operator averages over `runs` batch-1 eager calls, after a warm-up."""
    x = torch.randn(spec.input_shape(1))
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(x)
    return prof.key_averages()


def profile_model(model: nn.Module, spec: ModelSpec, threads: int,
                  runs: int) -> tuple[dict[str, float], float, int]:
    """Self CPU ms per call by kind, the total, and the model's MACs."""
    model = model.eval()
    torch.set_num_threads(threads)
    per_kind: dict[str, float] = defaultdict(float)
    for event in profiled_events(model, spec, runs):
        per_kind[kind_of(event.key)] += event.self_cpu_time_total / 1000 / runs
    return dict(per_kind), sum(per_kind.values()), macs_full(model, torch.zeros(spec.input_shape(1)))


def change(value: float, reference: float) -> str:
    """Signed change against the reference, e.g. "−79 %"."""
    return f"{100 * (value / reference - 1):+.0f} %".replace("-", "−")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path,
                        help="checkpoints; the first is the reference (none: an untrained model "
                             "from the config)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--preset", type=Path, default=None,
                        help="a config file laid over config/config.yaml")
    parser.add_argument("--prune", nargs="*", default=[], metavar="METHOD",
                        help="also profile the reference pruned by these methods, cycle by cycle")
    parser.add_argument("--targets", type=float, nargs="+", default=None,
                        help="cumulative MAC shares per cycle (default: the config's pruning.cycle_targets)")
    parser.add_argument("--scope", default=None, help="pruning.scope for --prune (default: the config's)")
    parser.add_argument("--msa-unit", default=None, choices=("dim", "head"),
                        help="pruning.msa_unit for --prune")
    args = parser.parse_args()
    if args.preset is not None and not args.preset.is_file():
        parser.error(f"--preset {args.preset}: no such file")
    config = load_config(ROOT, args.preset.resolve() if args.preset else None)
    if args.models:
        loaded = [(str(path), *load_model(path)[:2]) for path in args.models]
    else:
        torch.manual_seed(0)
        spec = ModelSpec.from_config(config["model"], config["preprocess"]["input_size"])
        loaded = [(f"untrained {spec.arch}", build_model(spec), spec)]
    pruning = {**config["pruning"], **{k: v for k, v in (("scope", args.scope), ("msa_unit", args.msa_unit))
                                      if v is not None}}
    for method in args.prune:
        loaded += pruned_copies(loaded[0][1], loaded[0][2], method,
                                args.targets or config["pruning"]["cycle_targets"], pruning)
    results = [(label, *profile_model(model, spec, args.threads, args.runs)) for label, model, spec in loaded]
    _, ref_kinds, ref_total, ref_macs = results[0]
    kinds = [k for k in [*KINDS, "other"] if any(r[1].get(k, 0) > 0 for r in results)]
    print(f"\nself CPU ms per batch-1 call ({args.threads} thread(s), {args.runs} calls profiled); "
          f"reduction vs {results[0][0]}")
    print("| model | MACs | total ms | " + " | ".join(kinds) + " |")
    print("|---|---|---|" + "---|" * len(kinds))
    for index, (path, per_kind, total, macs) in enumerate(results):
        cells = []
        for kind in kinds:
            value = per_kind.get(kind, 0.0)
            cells.append(f"{value:.2f} ({100 * value / total:.0f} %)" + (
                f" {change(value, ref_kinds[kind])}" if index and ref_kinds.get(kind) else ""))
        macs_text = f"{macs / 1e9:.3f} G" + (f" {change(macs, ref_macs)}" if index else "")
        total_text = f"{total:.1f}" + (f" {change(total, ref_total)}" if index else "")
        print(f"| {path} | {macs_text} | {total_text} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
