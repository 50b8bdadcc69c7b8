"""Compression benchmark: size, MACs, latency per part, test Dice of dense, dense_long, every (method, cycle).

Run from the repository root:
  python benchmarks/compression.py                        # the default config's run and scope
  python benchmarks/compression.py --scope all --distill  # run scope_all_distill: pruning.scope all,
                                                          #   fine-tuning with distillation
  python benchmarks/compression.py --sweep                # + targets 60/72/80 % per method, 2 seeds
  python benchmarks/compression.py --preset config/unetr.yaml --scope all --distill
                                                          # run unetr_scope_all_distill
Options: --preset FILE (a preset laid over config/config.yaml, as snakemake --configfile does;
its `run` names the run); --scope {transformer,decoder,embedding,all} (default: the config's pruning.scope);
--distill (merge config/distill.yaml's finetune.distill); --msa-unit head (whole heads); --no-run
(only read existing outputs); --threads N (torch and onnxruntime threads, default 1); --runs N
(timed runs per model and round, default 10); --rounds N (interleaved timing rounds, default 3);
--root PATH (the checkout whose config/ and results/
are used, default the repository this script lives in).

When --scope or --distill differs from config/config.yaml the pipeline runs under its own run name
(`scope_all_distill`, `scope_decoder`, `distill`...) with a temporary override config (`run`,
`pruning.scope`, `finetune.distill`) passed by --configfile. It asks snakemake for dense,
dense_long (dense fine-tuned as long as the last cycle: the fair Dice reference) and every
(method, cycle) (`snakemake --cores all`, nothing to do when they are up to date), reads params and
MACs (thop and FlopCounterMode) from each model's cost.json and the test Dice from its metrics.csv,
and measures batch-1 CPU latency itself, in interleaved rounds (every model once per round; the
median of the round medians), in PyTorch eager and in onnxruntime, for the whole model and per
part (embedding, transformer, decoder: the patch embedding and the encoder timed alone,
varprune.engine.latency.latency_parts). It prints:
1. per model: params, MACs thop and full, eager latency whole and per part, onnxruntime latency
   whole, test Dice; Δ vs dense, Δ Dice in points vs dense_long;
2. per model: MACs (full) and onnxruntime latency per part;
3. per pruned model: latency reduction / MAC reduction, whole (eager, onnx) and per part;
4. a goal line for the last cycle of every method: whole latency -70 % or more in both runtimes,
   MACs -85 % or more, Dice within 0.5 points of dense_long.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import torch
import yaml
from deploy import median_ms  # benchmarks/deploy.py, next to this file
from torch import nn

from varprune.engine.cost import macs_full
from varprune.engine.export import max_difference, onnx_bytes, runner
from varprune.engine.latency import latency_parts
from varprune.model.network import load_model
from varprune.study.stats import equivalence_margins, outcome, paired_comparison
from varprune.workflow.configfiles import merged_config

REPO = Path(__file__).resolve().parents[1]
SCOPES = ("transformer", "decoder", "embedding", "all")
PARTS = ("embedding", "transformer", "decoder")
SWEEP_TARGETS = [0.60, 0.72, 0.80]
SWEEP_SEEDS = [0, 1]
GOAL_LATENCY, GOAL_MACS, GOAL_DICE = 0.70, 0.85, -0.5


def load_config(root: Path, preset: Path | None = None) -> dict:
    """config/config.yaml of `root` with the preset merged in, as Snakemake merges --configfile."""
    return merged_config(*([root / preset] if preset is not None else []),
                         defaults=root / "config" / "config.yaml")


def run_pipeline(root: Path, config_files: list[Path], run: str, names: list[str]) -> None:
    """Ask snakemake for metrics.csv and cost.json of each model folder `names` of `run`."""
    targets = [f"results/{run}/{name}/{file}" for name in names for file in ("metrics.csv", "cost.json")]
    args = [sys.executable, "-m", "snakemake", "--cores", "all", *targets]
    if config_files:  # one option with every file: a repeated --configfile keeps only the last
        args += ["--configfile", *map(str, config_files)]
    subprocess.run(args, cwd=root, check=True)


@contextlib.contextmanager
def override_file(override: dict) -> Iterator[Path]:
    """A temporary YAML config holding `override`, removed afterwards."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(override, fh)
    try:
        yield Path(fh.name)
    finally:
        os.unlink(fh.name)


def model_names(config: dict) -> list[str]:
    cycles = len(config["pruning"]["cycle_targets"])
    return ["dense", "dense_long"] + [f"{m}/cycle{k}" for m in config["pruning"]["methods"]
                                      for k in range(1, cycles + 1)]


def read_row(folder: Path) -> dict:
    """Params, MACs (both counters) from cost.json and the mean test Dice from metrics.csv."""
    missing = [str(folder / f) for f in ("cost.json", "metrics.csv") if not (folder / f).is_file()]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run without --no-run")
    cost = json.loads((folder / "cost.json").read_text())
    with open(folder / "metrics.csv") as fh:
        dice = [float(r["dice"]) for r in csv.DictReader(fh)]
    return {"params": cost["params"], "macs_thop": cost["macs_thop"], "macs_full": cost["macs_full"],
            "dice": statistics.mean(dice)}


class LastTokens(nn.Module):
    """The ViT encoder returning its last tokens only (its forward returns (x, hidden_states))."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)[0]


def part_macs(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """MACs per part by FlopCounterMode on the submodules (exact, whatever was pruned)."""
    whole, encoder, embedding = (macs_full(m, x) for m in (model, model.vit, model.vit.patch_embedding))
    return {"embedding": embedding, "transformer": encoder - embedding, "decoder": whole - encoder,
            "whole": whole}


def onnx_timers(model: nn.Module, x: torch.Tensor, threads: int) -> dict[str, object]:
    """onnxruntime batch-1 calls per part: the model, its encoder and its patch embedding exported
    one by one, each checked against PyTorch within varprune's export tolerance (1e-4 times the
    outputs' scale)."""
    xn = x.numpy()
    timers = {}
    for name, module in (("whole", model), ("encoder", LastTokens(model.vit)),
                         ("embedding", model.vit.patch_embedding)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings of the TorchScript-based exporter
            run = runner("onnx", onnx_bytes(module, x), threads=threads)
        difference, allowed = max_difference(module, run, tuple(x.shape))
        if not difference <= allowed:
            sys.exit(f"the ONNX export of {name} differs from PyTorch by {difference:.2e}")
        timers[name] = lambda run=run: run(xn)
    return timers


def prepare(folder: Path, threads: int) -> tuple[dict, dict[tuple[str, str], object]]:
    """read_row plus MACs per part, and the calls to time: (runtime, part) -> a batch-1 call of
    the whole model, its encoder or its patch embedding, in eager PyTorch and in onnxruntime."""
    row = read_row(folder)
    model, spec, _ = load_model(folder / "model.pt")
    model = model.eval()
    x = torch.rand(spec.input_shape(1), generator=torch.Generator().manual_seed(1))
    row["macs"] = part_macs(model, x)
    timers = {("eager", "whole"): lambda: model(x), ("eager", "encoder"): lambda: model.vit(x),
              ("eager", "embedding"): lambda: model.vit.patch_embedding(x)}
    timers.update({("onnx", part): fn for part, fn in onnx_timers(model, x, threads).items()})
    return row, timers


def measure_all(folders: dict[str, Path], threads: int, runs: int, rounds: int) -> dict[str, dict]:
    """Every model's row with eager and onnxruntime latency (whole and per part), timed in
    `rounds` interleaved rounds of `runs` calls each (every model once per round, in order):
    a model's latency is the median of its round medians, so a slow spell of the machine hits
    every model alike instead of whichever was being timed. `spread` is the whole model's eager
    range over the rounds relative to that median."""
    prepared = {name: prepare(folder, threads) for name, folder in folders.items()}
    first = next(iter(prepared.values()))[1]
    for fn in first.values():  # a throwaway pass: the first calls timed in a process read slow
        median_ms(fn, runs)
    samples: dict[str, dict[tuple[str, str], list[float]]] = {name: {} for name in prepared}
    for round_ in range(1, rounds + 1):
        for name, (_, timers) in prepared.items():
            for key, fn in timers.items():
                samples[name].setdefault(key, []).append(median_ms(fn, runs))
        print(f"timing round {round_}/{rounds} done", file=sys.stderr, flush=True)
    rows = {}
    for name, (row, _) in prepared.items():
        ms = {key: statistics.median(values) for key, values in samples[name].items()}
        for runtime in ("eager", "onnx"):
            whole = ms[(runtime, "whole")]
            row[runtime] = {**latency_parts(whole, ms[(runtime, "encoder")], ms[(runtime, "embedding")]),
                            "whole": whole}
        eager = samples[name][("eager", "whole")]
        row["spread"] = (max(eager) - min(eager)) / statistics.median(eager)
        rows[name] = row
        print(f"measured {name}: eager {row['eager']['whole']:.1f} ms, onnx {row['onnx']['whole']:.1f} ms",
              file=sys.stderr, flush=True)
    return rows


def change(value: float, ref: float) -> str:
    """Signed change vs `ref` in %; 'n/r' when `ref` is not positive (a part below resolution)."""
    return f"{100 * (value / ref - 1):+.1f} %" if ref > 0 else "n/r"


def ratio(value: float, ref: float, macs: float, macs_ref: float) -> str:
    """Latency reduction / MAC reduction; '-' when the MACs did not shrink, 'n/r' when the
    reference latency is not positive (a part below the timings' resolution)."""
    mac_reduction = 1 - macs / macs_ref
    if mac_reduction <= 1e-6:
        return "-"
    if ref <= 0:
        return "n/r"
    return f"{(1 - value / ref) / mac_reduction:.2f}"


def markdown(header: list[str], body: list[list[str]]) -> None:
    """Print a markdown table."""
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for cells in body:
        print("| " + " | ".join(cells) + " |")


def print_tables(rows: dict[str, dict], threads: int, runs: int, rounds: int) -> None:
    dense, long = rows["dense"], rows["dense_long"]
    print(f"\nCPU batch 1, {threads} thread(s), median over {rounds} interleaved rounds of the median of "
          f"{runs} timed runs after warm-up; spread: the whole model's eager range over the rounds; dense "
          "and dense_long are the same network, so their difference is timing noise. "
          "Δ vs dense, Δ Dice in points vs dense_long. Parts are differences of medians "
          "(embedding and encoder timed alone): a part below the timings' spread can come out negative; "
          "n/r: no change against a reference part that is not positive.")
    body = []
    for name, r in rows.items():
        e, de = r["eager"], dense["eager"]
        cells = [name, f"{r['params'] / 1e6:.3f}", change(r["params"], dense["params"]),
                 f"{r['macs_thop'] / 1e9:.3f}", change(r["macs_thop"], dense["macs_thop"]),
                 f"{r['macs_full'] / 1e9:.3f}", change(r["macs_full"], dense["macs_full"]),
                 f"{e['whole']:.2f}", change(e["whole"], de["whole"]), f"{100 * r['spread']:.0f} %"]
        for part in PARTS:
            cells += [f"{e[part]:.2f}", change(e[part], de[part])]
        body.append(cells + [f"{r['onnx']['whole']:.2f}", change(r["onnx"]["whole"], dense["onnx"]["whole"]),
                             f"{r['dice']:.4f}", f"{100 * (r['dice'] - long['dice']):+.2f}"])
    markdown(["model", "params M", "Δ", "MACs thop G", "Δ", "MACs full G", "Δ", "eager ms", "Δ", "spread",
              "embedding ms", "Δ", "transformer ms", "Δ", "decoder ms", "Δ", "onnx ms", "Δ", "test Dice",
              "Δ Dice (points)"], body)

    print("\nPer part: MACs full (FlopCounterMode on the model, model.vit and model.vit.patch_embedding; "
          "transformer = encoder - embedding, decoder = whole - encoder) and onnxruntime latency (the "
          "model, model.vit and its patch embedding exported separately); Δ vs dense.")
    body = [[name, *(cell for part in PARTS for cell in (f"{r['macs'][part] / 1e6:.2f}",
                                                          change(r["macs"][part], dense["macs"][part]))),
             *(cell for part in PARTS for cell in (f"{r['onnx'][part]:.2f}",
                                                   change(r["onnx"][part], dense["onnx"][part])))]
            for name, r in rows.items()]
    markdown(["model", "MACs embedding M", "Δ", "MACs transformer M", "Δ", "MACs decoder M", "Δ",
              "onnx embedding ms", "Δ", "onnx transformer ms", "Δ", "onnx decoder ms", "Δ"], body)

    print("\nLatency reduction / MAC reduction vs dense (1 = latency falls as far as MACs; '-': the "
          "part's MACs did not shrink; n/r: dense's part below resolution). Whole model against MACs "
          "full; each part against its own MACs.")
    body = [[name, *(ratio(r[runtime][part], dense[runtime][part], r["macs"][part], dense["macs"][part])
                     for part in ("whole", *PARTS) for runtime in ("eager", "onnx"))]
            for name, r in rows.items() if name not in ("dense", "dense_long")]
    markdown(["model", "whole eager", "whole onnx", "embedding eager", "embedding onnx", "transformer eager",
              "transformer onnx", "decoder eager", "decoder onnx"], body)


def print_goals(rows: dict[str, dict], methods: list[str], cycles: int) -> None:
    dense, long = rows["dense"], rows["dense_long"]

    def mark(ok: bool) -> str:
        return "met" if ok else "not met"

    print(f"\nGoal at the last cycle: whole batch-1 latency -{100 * GOAL_LATENCY:.0f} % or more in both "
          f"runtimes, MACs -{100 * GOAL_MACS:.0f} % or more, Dice within {-GOAL_DICE} points of dense_long.")
    for method in methods:
        name = f"{method}/cycle{cycles}"
        r = rows[name]
        eager = 1 - r["eager"]["whole"] / dense["eager"]["whole"]
        onnx = 1 - r["onnx"]["whole"] / dense["onnx"]["whole"]
        full = 1 - r["macs_full"] / dense["macs_full"]
        thop = 1 - r["macs_thop"] / dense["macs_thop"]
        dice = 100 * (r["dice"] - long["dice"])
        print(f"{name}: whole latency -{100 * eager:.1f} % eager ({mark(eager >= GOAL_LATENCY)}) / "
              f"-{100 * onnx:.1f} % onnx ({mark(onnx >= GOAL_LATENCY)}); MACs -{100 * full:.1f} % full "
              f"({mark(full >= GOAL_MACS)}) / -{100 * thop:.1f} % thop ({mark(thop >= GOAL_MACS)}); "
              f"Dice vs dense_long {dice:+.2f} points ({mark(dice >= GOAL_DICE)})")


def per_case_dice(folder: Path) -> pd.Series:
    """Test Dice per case (metrics.csv), indexed by case."""
    return pd.read_csv(folder / "metrics.csv", dtype={"case": str}).set_index("case")["dice"]


def print_paired(folders: dict[str, Path], methods: list[str], cycles: int) -> None:
    """Paired statistics of the test Dice at every cycle (varprune.study.stats, the report's):
    each method against dense_long, and the methods against each other at the last cycle;
    outcome within the report's equivalence margin (half a Dice point), MDE at 80 % power."""
    margin = equivalence_margins()["dice"]
    pairs = [(f"{m}/cycle{k}", "dense_long") for k in range(1, cycles + 1) for m in methods]
    last = [f"{m}/cycle{cycles}" for m in methods]
    pairs += [(a, b) for i, a in enumerate(last) for b in last[i + 1:]]
    print(f"\nPaired test Dice (points; two-level bootstrap 95 % CI, sign-flip p, TOST p against "
          f"±{100 * margin:.1f} points, MDE at 80 % power):")
    body = []
    for a, b in pairs:
        both = pd.concat([per_case_dice(folders[a]).rename("a"), per_case_dice(folders[b]).rename("b")],
                         axis=1, join="inner")
        c = paired_comparison(both["a"].to_numpy(), both["b"].to_numpy(), margin=margin)
        body.append([f"{a} − {b}", str(c.n_cases), f"{100 * c.mean_diff:+.2f}",
                     f"[{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}]", f"{c.p_value:.3g}",
                     f"{c.p_equivalence:.3g}", f"{100 * c.mde:.2f}", outcome(c)])
    markdown(["pair", "cases", "Δ Dice", "95 % CI", "p", "p equivalence", "MDE", "outcome"], body)


def run_settings(root: Path, config: dict, scope: str | None, distill: bool,
                 msa_unit: str | None = None) -> tuple[str, dict | None]:
    """The run name and the override config (None: the default config as it is)."""
    default_scope = config["pruning"].get("scope", "transformer")
    scope = scope or default_scope
    default_distill = config["finetune"]["distill"]
    merged = dict(default_distill)
    if distill:
        preset = yaml.safe_load((root / "config" / "distill.yaml").read_text())
        merged.update(preset["finetune"]["distill"])
    unit = msa_unit or config["pruning"]["msa_unit"]
    parts = ([f"scope_{scope}"] if scope != default_scope else []) + (["distill"] if merged != default_distill
                                                                       else [])
    parts += [f"{unit}s"] if unit != config["pruning"]["msa_unit"] else []
    if not parts:
        return config["run"], None
    run = "_".join(([config["run"]] if config["run"] != "default" else []) + parts)
    pruning = {"scope": scope, "msa_unit": unit}
    override = {"run": run, "finetune": {"distill": merged}, **({"pruning": pruning} if pruning else {})}
    return run, override


def main_table(root: Path, scope: str | None, distill: bool, threads: int, runs: int, no_run: bool,
               msa_unit: str | None = None, preset: Path | None = None, rounds: int = 3) -> None:
    config = load_config(root, preset)
    run, override = run_settings(root, config, scope, distill, msa_unit)
    names = model_names(config)
    if not no_run:
        with contextlib.ExitStack() as stack:
            files = [root / preset] if preset else []
            files += [stack.enter_context(override_file(override))] if override else []
            run_pipeline(root, files, run, names)
    # Interleaved rounds: one pass, one model after the other, once timed dense 19-27 % slower
    # than dense_long (the same network) on an idle machine.
    rows = measure_all({name: root / "results" / run / name for name in names}, threads, runs, rounds)
    settings = f", override {override}" if override else ""
    print(f"\n## run '{run}', targets {config['pruning']['cycle_targets']}{settings}")
    print_tables(rows, threads, runs, rounds)
    print_goals(rows, config["pruning"]["methods"], len(config["pruning"]["cycle_targets"]))
    print_paired({name: root / "results" / run / name for name in names}, config["pruning"]["methods"],
                 len(config["pruning"]["cycle_targets"]))


def sweep(root: Path, no_run: bool) -> None:
    """Every method at each sweep target, two seeds; one run per seed (dense trained per seed).
    Default scope and distillation settings; no latency is measured."""
    config = load_config(root)
    methods = config["pruning"]["methods"]
    results: dict[tuple[str, float], list[dict]] = {}
    for seed in SWEEP_SEEDS:
        run = f"sweep_seed{seed}"
        override = {"run": run, "pruning": {"cycle_targets": SWEEP_TARGETS, "seed": seed},
                    "finetune": {"seed": seed}, "train": {"seed": seed}}
        if not no_run:
            names = ["dense"] + [f"{m}/cycle{k}" for m in methods for k in range(1, len(SWEEP_TARGETS) + 1)]
            with override_file(override) as path:
                run_pipeline(root, [path], run, names)
        for method in methods:
            for k, target in enumerate(SWEEP_TARGETS, start=1):
                row = read_row(root / "results" / run / method / f"cycle{k}")
                results.setdefault((method, target), []).append(row)
        results.setdefault(("dense", 0.0), []).append(read_row(root / "results" / run / "dense"))
    print("\n## sweep: test Dice against MACs removed (mean ± half the spread of the seeds "
          f"{SWEEP_SEEDS})")
    print("| method | target | MACs full removed | params removed | test Dice per seed | mean |")
    print("|---|---|---|---|---|---|")
    dense = dict(enumerate(results[("dense", 0.0)]))
    for (method, target), rows in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        macs = statistics.mean(1 - r["macs_full"] / dense[i]["macs_full"] for i, r in enumerate(rows))
        params = statistics.mean(1 - r["params"] / dense[i]["params"] for i, r in enumerate(rows))
        dice = [r["dice"] for r in rows]
        print(f"| {method} | {target:.2f} | {100 * macs:.1f} % | {100 * params:.1f} % | "
              f"{', '.join(f'{d:.4f}' for d in dice)} | {statistics.mean(dice):.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", type=Path, default=None,
                        help="a config file laid over config/config.yaml (e.g. config/unetr.yaml)")
    parser.add_argument("--scope", choices=SCOPES, default=None,
                        help="what pruning may shrink; default: the config's pruning.scope (transformer)")
    parser.add_argument("--distill", action="store_true", help="merge config/distill.yaml's finetune.distill")
    parser.add_argument("--msa-unit", choices=("dim", "head"), default=None,
                        help="pruning.msa_unit (default: the config's): head removes whole heads")
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per model and round (median)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved timing rounds (every model once per round; median of the rounds)")
    parser.add_argument("--root", type=Path, default=REPO, help="checkout with config/ and results/")
    parser.add_argument("--sweep", action="store_true", help="also run the target and seed sweep")
    parser.add_argument("--sweep-only", action="store_true")
    parser.add_argument("--no-run", action="store_true", help="only read existing outputs")
    args = parser.parse_args()
    if args.runs < 1 or args.threads < 1 or args.rounds < 1:
        parser.error("--runs, --rounds and --threads must be positive")
    root = args.root.resolve()
    if args.preset is not None and not (root / args.preset).is_file():
        parser.error(f"--preset {args.preset}: no such file under {root}")
    torch.set_num_threads(args.threads)
    if not args.sweep_only:
        main_table(root, args.scope, args.distill, args.threads, args.runs, args.no_run, args.msa_unit,
                   args.preset, args.rounds)
    if args.sweep or args.sweep_only:
        sweep(root, args.no_run)


if __name__ == "__main__":
    main()
