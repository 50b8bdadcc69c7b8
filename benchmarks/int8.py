"""INT8 on top of pruning, measured: which quantization to use, and how far deployment goes.

Run from the repository root after the pipeline runs you name (their data and models):
  python benchmarks/int8.py --run default                          # dense + variable's last cycle
  python benchmarks/int8.py --run default --run embed_heads        # + another run's last cycle

For the dense model of the first run and the last cycle of `--method` in every run, it exports
ONNX (checked against PyTorch) and quantizes it in each `--modes` variant with
varprune.engine.quantize (static: QDQ calibrated on 64 training slices; dynamic: ranges per batch;
`-mm`: MatMul and Gemm only, else Conv too). For every model and runtime (PyTorch eager fp32
and bf16 autocast, onnxruntime fp32, onnxruntime INT8 per variant) it measures:
- latency at batch 1, 1 thread, every model and runtime timed side by side in interleaved rounds
  in this one process (median of round medians, spread over rounds), and the speed-up against
  dense eager fp32, timed in the same rounds;
- validation Dice (the guard's measure) and test Dice with the pipeline's evaluation
  (`varprune.engine.evaluate`), and the test Dice against the run's dense_long (the fair reference).
The goal line: a deployable model at least 10x faster than dense eager fp32 within 0.5 Dice
points of dense_long. Last, onnxruntime's profiler says where the fastest ONNX model spends its
time, by kind of operator: what limits the speed-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
MODES = {"static": ("static", ("MatMul", "Gemm", "Conv")), "static-mm": ("static", ("MatMul", "Gemm")),
         "dynamic": ("dynamic", ("MatMul", "Gemm", "Conv")), "dynamic-mm": ("dynamic", ("MatMul", "Gemm"))}
GOAL_SPEEDUP, GOAL_DICE = 10.0, -0.005


def _volumes(cases):
    from varprune.data.datasets import case_paths, load_volumes

    return load_volumes(case_paths(REPO / "data" / "preprocessed" / f"{c}.npz" for c in cases))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", default=None, help="run folder(s) under results/")
    parser.add_argument("--method", default="variable")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    runs = args.run or ["default"]

    from varprune.engine.cost import macs_full
    from varprune.engine.evaluate import evaluate_checkpoint
    from varprune.engine.export import export_bytes
    from varprune.engine.latency import time_interleaved
    from varprune.engine.quantize import QuantizeSettings, quantize_and_guard
    from varprune.engine.train import validation_dice
    from varprune.model.deployed import load_any
    from varprune.model.network import load_model

    torch.set_num_threads(1)
    splits = json.loads((REPO / "data" / "splits.json").read_text())
    train, val = _volumes(splits["train"]), _volumes(splits["val"])
    test = [str(REPO / "data" / "preprocessed" / f"{c}.npz") for c in splits["test"]]
    truth = [str(REPO / "data" / "nifti" / c / "liver.nii.gz") for c in splits["test"]]
    models = {f"{runs[0]}/dense": REPO / "results" / runs[0] / "dense" / "model.pt"}
    for run in runs:
        cycles = sorted((REPO / "results" / run / args.method).glob("cycle*/model.pt"),
                        key=lambda p: int(p.parent.name[5:]))
        models[f"{run}/{args.method}/{cycles[-1].parent.name}"] = cycles[-1]
    long = {run: pd.read_csv(REPO / "results" / run / "dense_long" / "metrics.csv").dice.mean()
            for run in runs}
    rows, timers, profiles = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name, checkpoint in models.items():
            model, spec, provenance = load_model(checkpoint)
            x = torch.rand(spec.input_shape(1), generator=torch.Generator().manual_seed(0))
            gmac = macs_full(model, x) / 1e9
            fp32_path = tmp / f"{name.replace('/', '_')}.onnx"
            fp32_path.write_bytes(export_bytes(model, spec, provenance, "onnx"))
            files = {"onnx fp32": fp32_path}
            guard_dice = {}
            for mode in args.modes:
                kind, ops = MODES[mode]
                data, record = quantize_and_guard(fp32_path, train, val, QuantizeSettings(mode=kind, ops=ops),
                                                  threads=1)
                path = tmp / f"{fp32_path.stem}.{mode}.onnx"
                path.write_bytes(data)
                files[f"onnx int8 {mode}"] = path
                guard_dice[f"onnx int8 {mode}"] = record["val_dice_int8"]
                print(f"{name} {mode}: val Dice {record['val_dice_int8']:.4f} "
                      f"(fp32 {record['val_dice_fp32']:.4f})", file=sys.stderr, flush=True)
            run = name.split("/")[0]
            eager = model.eval()
            timers[(name, "eager fp32")] = lambda m=eager, x=x: m(x)

            def bf16(m=eager, x=x):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return m(x)

            timers[(name, "eager bf16")] = bf16
            entries = [("eager fp32", checkpoint, None), ("eager bf16", checkpoint, None)]
            entries += [(k, p, guard_dice.get(k)) for k, p in files.items()]
            for runtime, path, vdice in entries:
                loaded = load_any(path, threads=1)
                precision = "bf16" if runtime == "eager bf16" else "fp32"
                if runtime.startswith("onnx"):  # the session alone, as a deployment calls it
                    batch = x.numpy()
                    timers[(name, runtime)] = lambda r=loaded.model.run, b=batch: r(b)
                    profiles[(name, runtime)] = (Path(path).read_bytes(), batch)
                if vdice is None:
                    vdice = validation_dice(loaded.model, spec, val, torch.device("cpu"), 16, precision)
                metrics = evaluate_checkpoint(path, test, truth, tmp / "m.csv", tmp / "pred", threads=1,
                                              precision=precision)
                dice = float(np.mean([m["dice"] for m in metrics]))
                rows.append({"model": name, "runtime": runtime, "GMAC": round(gmac, 3),
                             "MB": round(Path(path).stat().st_size / 1e6, 2), "val_dice": round(vdice, 4),
                             "test_dice": round(dice, 4),
                             "vs_dense_long_points": round(100 * (dice - long[run]), 2)})
        print("timing ...", file=sys.stderr, flush=True)
        with torch.inference_mode():
            timing = time_interleaved(timers, rounds=args.rounds, runs=args.runs)
    reference = timing[(f"{runs[0]}/dense", "eager fp32")]["median_ms"]
    for row in rows:
        t = timing[(row["model"], row["runtime"])]
        row.update({"ms": t["median_ms"], "spread_ms": t["spread_ms"],
                    "speedup_vs_dense_eager": round(reference / t["median_ms"], 2)})
    table = pd.DataFrame(rows)[["model", "runtime", "GMAC", "MB", "ms", "spread_ms",
                                "speedup_vs_dense_eager", "val_dice", "test_dice", "vs_dense_long_points"]]
    print(f"batch 1, 1 thread, {args.rounds} interleaved rounds of {args.runs} runs; dense_long test Dice: "
          + ", ".join(f"{run} {value:.4f}" for run, value in long.items()))
    print(table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False))
    goal = table[(table.speedup_vs_dense_eager >= GOAL_SPEEDUP)
                 & (table.vs_dense_long_points >= 100 * GOAL_DICE)]
    best = table.sort_values("speedup_vs_dense_eager", ascending=False).iloc[0]
    profile_fastest(table, profiles)
    met = "met by " + ", ".join(goal.model + " " + goal.runtime) if len(goal) else "not met"
    print(f"\ngoal (>= {GOAL_SPEEDUP:.0f}x dense eager fp32, within {-100 * GOAL_DICE:.1f} points of "
          f"dense_long): {met}; "
          f"fastest: {best.model} {best.runtime} at {best.speedup_vs_dense_eager:.2f}x "
          f"({best.vs_dense_long_points:+.2f} points)")


def profile_fastest(table: pd.DataFrame, profiles: dict, runs: int = 50) -> None:
    """Where the fastest onnxruntime model spends its time, by kind of operator (onnxruntime's
    own profiler, 1 thread): what limits the speed-up."""
    import onnxruntime

    onnx_rows = table[table.runtime.str.startswith("onnx")]
    best = onnx_rows.sort_values("speedup_vs_dense_eager", ascending=False).iloc[0]
    data, batch = profiles[(best.model, best.runtime)]
    with tempfile.TemporaryDirectory() as tmp:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        options.enable_profiling, options.profile_file_prefix = True, str(Path(tmp) / "profile")
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(runs):
            session.run(None, {name: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + event["dur"] / 1000 / runs
    total = sum(per_op.values())
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:8]
    print(f"\nwhere {best.model} {best.runtime} spends its {total:.2f} ms of kernel time per call: "
          + ", ".join(f"{op} {ms:.2f} ms ({100 * ms / total:.0f} %)" for op, ms in top))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
