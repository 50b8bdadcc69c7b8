"""Does rounding the kept widths (pruning.round_to) buy latency? Decoder and whole-model latency
per MAC, and which convolution kernels run, for each rounding.

  python benchmarks/round_to.py --preset config/unetr.yaml --scope all --round-to 1 8 16
  python benchmarks/round_to.py --scope transformer --round-to 1 8 16      # the default SETR

An untrained model from the config (`--preset` laid over config/config.yaml) is pruned by
`--method` cycle by cycle to `--targets` (default: pruning.cycle_targets) once per `--round-to`
value (l1 scores, no fine-tuning: CPU time depends on the widths, not on the weights). Every
copy and the dense model are then timed side by side (`varprune.engine.latency.time_interleaved`:
`--rounds` rounds, each timing every model once): eager whole and encoder (the decoder is whole -
encoder), and onnxruntime whole; batch 1, `--threads` threads. It prints
1. per model: MACs whole and decoder, latency whole (eager, onnxruntime) and decoder, each as a
   change against dense, and the ratio latency reduction / MAC reduction (1 = latency follows
   MACs), with the between-round spread of the eager whole;
2. per model: the convolution kernels PyTorch ran in one eager call (calls, self ms), from
   `torch.profiler`: oneDNN (`mkldnn_convolution`) or the reference kernels narrow layers fall
   back to (`_slow_conv2d_forward`, `slow_conv_transpose2d`, ...).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch
from compression import load_config  # benchmarks/compression.py, next to this file
from latency_profile import profiled_events, pruned_copies  # benchmarks/latency_profile.py

from varprune.engine.cost import macs_full
from varprune.engine.latency import model_timers, time_interleaved
from varprune.model.network import ModelSpec, build_model

ROOT = Path(__file__).resolve().parent.parent
# Dispatch layers above the kernel that does the work: their self time is bookkeeping.
CONV_WRAPPERS = {"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose2d",
                 "conv_transpose3d", "_convolution_mode"}


def conv_kernels(model: torch.nn.Module, spec: ModelSpec, runs: int = 5) -> dict[str, tuple[float, float]]:
    """kernel -> (calls, self CPU ms) per eager call, for every convolution kernel that ran."""
    kernels: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for event in profiled_events(model, spec, runs):
        name = event.key.split("::")[-1]
        if "conv" in name and name not in CONV_WRAPPERS:
            kernels[name][0] += event.count / runs
            kernels[name][1] += event.self_cpu_time_total / 1000 / runs
    return {name: (calls, ms) for name, (calls, ms) in sorted(kernels.items())}


def change(value: float, reference: float) -> float:
    return 100 * (value / reference - 1)


def ratio(latency: float, latency_ref: float, macs: float, macs_ref: float) -> str:
    """Latency reduction / MAC reduction ("" where nothing was removed)."""
    removed = 1 - macs / macs_ref
    return f"{(1 - latency / latency_ref) / removed:.2f}" if removed > 1e-6 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", type=Path, default=None,
                        help="a config file laid over config/config.yaml")
    parser.add_argument("--scope", default=None, help="pruning.scope (default: the config's)")
    parser.add_argument("--method", default="fixed", help="the pruning method (default fixed)")
    parser.add_argument("--round-to", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--targets", type=float, nargs="+", default=None,
                        help="cumulative MAC shares per cycle (default: pruning.cycle_targets)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if args.preset is not None and not args.preset.is_file():
        parser.error(f"--preset {args.preset}: no such file")
    config = load_config(ROOT, args.preset.resolve() if args.preset else None)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = ModelSpec.from_config(config["model"], config["preprocess"]["input_size"])
    dense = build_model(spec).eval()
    models = [("dense", dense, spec)]
    targets = args.targets or config["pruning"]["cycle_targets"]
    for step in args.round_to:
        pruning = {**config["pruning"], "round_to": step, **({"scope": args.scope} if args.scope else {})}
        for label, model, pruned in pruned_copies(dense, spec, args.method, targets, pruning):
            models.append((f"{label} round_to {step}", model.eval(), pruned))
    print(f"{spec.arch} {spec.spatial_dims}D, scope {args.scope or config['pruning']['scope']}, "
          f"method {args.method}, targets {targets}; {args.threads} thread(s), {args.rounds} interleaved "
          f"rounds of {args.runs} runs", flush=True)
    fns = {}
    for label, model, pruned in models:
        for part, fn in model_timers(model, pruned).items():
            if part != "embedding":
                fns[(label, part)] = fn
    timing = time_interleaved(fns, rounds=args.rounds, runs=args.runs)
    rows = []
    for label, model, pruned in models:
        x = torch.zeros(pruned.input_shape(1))
        whole, encoder = macs_full(model, x), macs_full(model.vit, x)
        eager, enc_ms = timing[(label, "whole")]["median_ms"], timing[(label, "encoder")]["median_ms"]
        rows.append(dict(label=label, macs=whole, macs_dec=whole - encoder, eager=eager,
                         spread=timing[(label, "whole")]["spread_ms"], dec=eager - enc_ms,
                         onnx=timing[(label, "onnx")]["median_ms"]))
    ref = rows[0]

    def delta(row: dict, key: str) -> str:
        return "" if row is ref else f" ({change(row[key], ref[key]):+.1f} %)"

    print("\n| model | MACs (Δ) | decoder MACs (Δ) | eager ms (Δ) [spread] | decoder eager ms (Δ) | "
          "onnxruntime ms (Δ) | latency/MAC whole eager, onnx | decoder latency/MAC |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['label']} | {row['macs'] / 1e9:.3f} G{delta(row, 'macs')} | "
              f"{row['macs_dec'] / 1e9:.3f} G{delta(row, 'macs_dec')} | "
              f"{row['eager']:.2f}{delta(row, 'eager')} [{row['spread']:.2f}] | "
              f"{row['dec']:.2f}{delta(row, 'dec')} | {row['onnx']:.2f}{delta(row, 'onnx')} | "
              f"{ratio(row['eager'], ref['eager'], row['macs'], ref['macs'])}, "
              f"{ratio(row['onnx'], ref['onnx'], row['macs'], ref['macs'])} | "
              f"{ratio(row['dec'], ref['dec'], row['macs_dec'], ref['macs_dec'])} |")
    print("\nconvolution kernels per eager call: calls, self ms")
    for label, model, pruned in models:
        kernels = conv_kernels(model, pruned)
        text = "; ".join(f"{name} {calls:.0f}, {ms:.2f} ms" for name, (calls, ms) in kernels.items())
        print(f"- {label}: {text or 'none'}")


if __name__ == "__main__":
    main()
