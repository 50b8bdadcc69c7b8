"""The GPU check: varprune's CUDA and mixed-precision paths, run and measured in one command.

Run from the repository root on a machine with a CUDA GPU (about 5 minutes on one H200):
  python benchmarks/gpu.py --out gpu_check            # tables in gpu_check/gpu.md, gpu_gmacs.json

It builds its own data (the synthetic cohort of config/config.yaml, converted and preprocessed
for the default preset and for config/paper.yaml's 224² grid), then, each step timed and
reported even when an earlier one failed:
1. dense training with the library's own loop (`varprune.engine.train.train_dense`), per preset and
   precision (fp32, bf16, fp16): seconds per epoch, validation Dice, peak GPU memory, and the
   throughput in GMAC/s counted as `varprune.workflow.resources` counts a training job (3 x forward MACs
   per trained input + the validation passes), which is what `resources.gpu_gmacs` means;
2. the compute ceiling: forward + backward on random batches with no data loading, and
   forward only, per precision;
3. one pruning cycle (variable, -45 % MACs) with its fine-tuning (`run_cycle`) on the GPU;
4. test-set evaluation on the GPU of the dense and the pruned model, and of the dense model on
   the CPU in fp32 (the Dice must agree);
5. `varprune predict --device cuda` on a test case's NIfTI, against the same on the CPU;
6. latency at batch 1 and 32 (CUDA events) of the dense and the pruned model per precision.
The measured `gpu_gmacs` (the lower of the presets' training throughputs at precision auto)
goes to gpu_gmacs.json next to the tables: set `resources.gpu_gmacs` from it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

PRECISIONS = ("fp32", "bf16", "fp16")


def _convert_and_preprocess(job: tuple) -> str:
    """One case: archive -> NIfTI -> one .npz per preset (a worker process)."""
    from varprune.data.convert import convert_case
    from varprune.data.preprocess import PreprocessSpec, preprocess_case

    archive, case, work, presets = job
    converted = Path(work) / "converted" / case
    convert_case(archive, case, converted)
    for name, preprocess in presets.items():
        preprocess_case(converted / "ct.nii.gz", converted / "liver.nii.gz", case,
                        PreprocessSpec.from_config(preprocess), Path(work) / name / f"{case}.npz")
    return case


def prepare_data(work: Path, configs: dict[str, dict], workers: int) -> dict:
    """The synthetic cohort of the default config, converted and preprocessed for every preset;
    the split of the default config (by patient, the same for every preset)."""
    from varprune.data.archive import case_id
    from varprune.data.splits import write_splits
    from varprune.data.synthetic import SyntheticSpec, write_synthetic_archive

    default = configs["default"]
    archive = work / "3Dircadb1.zip"
    if not archive.exists():
        write_synthetic_archive(archive, SyntheticSpec(**default["synthetic"]), workers=workers)
    cases = [case_id(p) for p in range(1, default["synthetic"]["patients"] + 1)]
    presets = {name: cfg["preprocess"] for name, cfg in configs.items()}
    jobs = [(str(archive), case, str(work), presets) for case in cases]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_convert_and_preprocess, jobs))
    splits = write_splits(cases, default["split"], work / "splits.json")
    return {
        "splits_json": work / "splits.json",
        "files": {name: {part: [str(work / name / f"{c}.npz") for c in splits[part]]
                         for part in ("train", "val", "test")} for name in configs},
        "truth": [str(work / "converted" / c / "liver.nii.gz") for c in splits["test"]],
        "test_ct": work / "converted" / splits["test"][0] / "ct.nii.gz",
    }


class Table:
    """Rows of one table, written again (atomically) after each row so a killed run keeps them."""

    def __init__(self, out: Path):
        self.out, self.sections, self.notes = out, {}, []

    def add(self, section: str, **row) -> None:
        self.sections.setdefault(section, []).append(row)
        print(f"[{section}] " + ", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        self.write()

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"[note] {text}", flush=True)
        self.write()

    def write(self) -> None:
        lines = []
        for name, rows in self.sections.items():
            lines += [f"## {name}", "", markdown(rows), ""]
        lines += ["## notes", ""] + [f"- {n}" for n in self.notes]
        for path, text in ((self.out / "gpu.md", "\n".join(lines) + "\n"),
                           (self.out / "gpu.json", json.dumps({"sections": self.sections,
                                                               "notes": self.notes}, indent=1))):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)


def step(table: Table, name: str, deadline: float):
    """Decorator-free guard: run `fn` unless the time budget is spent; record failures."""

    def run(fn, *args, **kwargs):
        if time.monotonic() > deadline:
            table.note(f"{name}: skipped, the time budget was spent")
            return None
        started = time.monotonic()
        try:
            result = fn(*args, **kwargs)
        except Exception as err:  # a failed step is a finding; the next step still runs
            table.note(f"{name}: FAILED after {time.monotonic() - started:.1f} s: "
                       f"{type(err).__name__}: {err}")
            traceback.print_exc()
            return None
        print(f"[time] {name}: {time.monotonic() - started:.1f} s", flush=True)
        return result

    return run


DEVICE = "cuda"  # --device cpu: a dry run of the whole script on a machine without a GPU


def _sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _peak_reset() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib() -> float:
    import torch

    if DEVICE != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def markdown(rows: list[dict]) -> str:
    """A Markdown table of rows (the union of their keys, in order of appearance)."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row.get(k, "")) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def train_dense(table: Table, name: str, config: dict, data: dict, work: Path, precision: str,
                epochs: int, threads: int) -> Path:
    """Dense training on cuda at `precision` for `epochs`; GMAC/s as varprune.workflow.resources counts it."""
    import numpy as np

    from varprune.data.datasets import case_paths, load_volumes
    from varprune.engine.train import train_dense as train_job
    from varprune.model.spec import ModelSpec
    from varprune.workflow.resources import forward_gmacs

    train_cfg = {**config["train"], "epochs": epochs, "device": DEVICE, "precision": precision}
    out = work / "models" / name / f"dense_{precision}"
    out.mkdir(parents=True, exist_ok=True)
    _peak_reset()
    started = time.perf_counter()
    result = train_job(data["splits_json"], data["files"][name], config["model"], train_cfg,
                       config["preprocess"], out / "model.pt", out / "train.csv", out / "state",
                       threads=threads)
    wall = time.perf_counter() - started
    spec = ModelSpec.from_config(config["model"], config["preprocess"]["input_size"])
    val_items = sum(v.image.shape[0] for v in load_volumes(case_paths(data["files"][name]["val"])))
    steps = result.history[-1]["step"]
    batch = train_cfg["batch_size"]
    mac = forward_gmacs(spec)
    epochs = len(result.history)  # --steps may end training within the first epoch
    gmacs = 3 * mac * steps * batch + mac * val_items * epochs
    seconds = sum(row["seconds"] for row in result.history)
    table.add("dense training (train_dense)", preset=name, precision=precision, epochs=epochs,
              steps=steps, batch=batch, s_per_epoch=round(seconds / epochs, 2),
              first_epoch_s=result.history[0]["seconds"],
              later_epochs_s=round(float(np.mean([r["seconds"] for r in result.history[1:]] or [0])), 2),
              wall_s=round(wall, 1), gmacs_per_s=round(gmacs / seconds), best_epoch=result.best_epoch,
              val_dice=round(result.best_val_dice, 4), peak_gib=_peak_gib(),
              fwd_gmac_per_input=round(mac, 3))
    return out / "model.pt"


def compute_ceiling(table: Table, name: str, config: dict, precision: str, batch: int,
                    steps: int = 20) -> None:
    """Forward + backward (and forward only) on random batches: the GPU's own throughput."""
    import torch
    from monai.losses import DiceCELoss

    from varprune.core.precision import autocast
    from varprune.model.network import build_model
    from varprune.model.spec import ModelSpec
    from varprune.workflow.resources import forward_gmacs

    device = torch.device(DEVICE)
    spec = ModelSpec.from_config(config["model"], config["preprocess"]["input_size"])
    torch.manual_seed(0)
    model = build_model(spec).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(DEVICE, enabled=precision == "fp16")
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    x = torch.randn(batch, *spec.input_shape(1)[1:], device=device)
    y = (torch.rand(batch, 1, *spec.input_shape(1)[2:], device=device) > 0.5).float()

    def train_step():
        with autocast(device, precision):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    @torch.no_grad()
    def forward():
        with autocast(device, precision):
            model(x)

    mac = forward_gmacs(spec)
    _peak_reset()
    rates = {}
    for label, fn, passes in (("train", train_step, 3), ("forward", forward, 1)):
        for _ in range(3):
            fn()
        _sync()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync()
        seconds = time.perf_counter() - start
        rates[label] = (round(passes * mac * batch * steps / seconds), round(1000 * seconds / steps, 2))
    table.add("compute ceiling (random batches, no data loading)", preset=name, precision=precision,
              batch=batch, train_step_ms=rates["train"][1], train_gmacs_per_s=rates["train"][0],
              forward_ms=rates["forward"][1], forward_gmacs_per_s=rates["forward"][0], peak_gib=_peak_gib())


def prune_cycle(table: Table, name: str, config: dict, data: dict, work: Path, parent: Path,
                precision: str, threads: int) -> Path:
    """One variable cycle to -45 % MACs with its fine-tuning, on cuda."""
    from varprune.model.network import load_model
    from varprune.pruning.cycle import run_cycle

    out = work / "models" / name / "variable_cycle1"
    out.mkdir(parents=True, exist_ok=True)
    pruning = {**config["pruning"], "target": 0.45, "previous_target": 0.0}
    finetune = {**config["finetune"], "device": DEVICE, "precision": precision}
    _peak_reset()
    started = time.perf_counter()
    summary = run_cycle(parent, data["splits_json"], data["files"][name], "variable", 1, pruning, finetune,
                        out / "model.pt", out / "sequence.csv", out / "finetune.csv", out / "state",
                        out_oneshot=out / "oneshot.json", threads=threads)
    wall = time.perf_counter() - started
    oneshot = json.loads((out / "oneshot.json").read_text())
    _, spec, _ = load_model(out / "model.pt")
    table.add("pruning cycle (run_cycle: taylor scores, surgery, fine-tuning)", preset=name,
              precision=precision, reduction=round(summary["reduction_vs_dense"], 4),
              val_dice_before_ft=oneshot["val_dice_before"], val_dice_after_ft=oneshot["val_dice_after"],
              wall_s=round(wall, 1), peak_gib=_peak_gib(),
              ffn_widths=" ".join(str(layer.ffn) for layer in spec.layers))
    return out / "model.pt"


def evaluate(table: Table, name: str, label: str, model: Path, data: dict, work: Path, device: str,
             precision: str, threads: int) -> float:
    """Test-set metrics of a checkpoint with the pipeline's own evaluation."""
    import numpy as np

    from varprune.engine.evaluate import evaluate_checkpoint

    out = work / "eval" / name / f"{label}_{device}_{precision}"
    started = time.perf_counter()
    rows = evaluate_checkpoint(model, data["files"][name]["test"], data["truth"], out / "metrics.csv",
                               out / "pred", batch_size=16, device=device, threads=threads,
                               precision=precision)
    dice = float(np.mean([r["dice"] for r in rows]))
    table.add("test-set evaluation (evaluate_checkpoint)", preset=name, model=label, device=device,
              precision=precision, cases=len(rows), mean_dice=round(dice, 4),
              wall_s=round(time.perf_counter() - started, 1))
    return dice


def predict_both(table: Table, name: str, model: Path, data: dict, work: Path, threads: int) -> None:
    """`varprune predict` on cuda and on the CPU for one test CT; the masks must agree."""
    import numpy as np
    import SimpleITK as sitk

    from varprune.app.predict import predict

    masks = {}
    for device, precision in ((DEVICE, "auto"), (DEVICE, "fp32"), ("cpu", "fp32")):
        out = work / "predict" / name / f"{device}_{precision}.nii.gz"
        out.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        result = predict(model, data["test_ct"], out, device=device, threads=threads, precision=precision)
        masks[(device, precision)] = sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0
        reference = masks[(DEVICE, "auto")]
        both = np.logical_and(reference, masks[(device, precision)]).sum()
        agree = 2 * both / max(1, reference.sum() + masks[(device, precision)].sum())
        table.add("varprune predict (NIfTI test case)", preset=name, device=device, precision=precision,
                  liver_ml=round(result["liver_ml"], 1), dice_vs_first=round(float(agree), 5),
                  wall_s=round(time.perf_counter() - started, 2))


def latency(table: Table, name: str, models: dict[str, Path], precisions: tuple[str, ...]) -> None:
    """Median latency (synchronised wall clock) at batch 1 and 32, models interleaved in rounds."""
    import statistics

    import torch

    from varprune.core.precision import autocast
    from varprune.engine.cost import macs_full
    from varprune.model.network import load_model

    device = torch.device(DEVICE)
    loaded = {label: load_model(path)[:2] for label, path in models.items()}
    results: dict = {}
    for _round in range(3):
        for label, (model, spec) in loaded.items():
            model.to(device).eval()
            for precision in precisions:
                for batch in (1, 32):
                    x = torch.randn(batch, *spec.input_shape(1)[1:], device=device)
                    with torch.no_grad(), autocast(device, precision):
                        for _ in range(5):
                            model(x)
                        times = []
                        for _ in range(20):
                            _sync()
                            start = time.perf_counter()
                            model(x)
                            _sync()
                            times.append(1000 * (time.perf_counter() - start))
                    results.setdefault((label, precision, batch), []).append(statistics.median(times))
    for (label, precision, batch), medians in results.items():
        model, spec = loaded[label]
        gmac = macs_full(model.cpu(), torch.zeros(spec.input_shape(1))) / 1e9
        table.add("latency (median of 3 interleaved rounds of 20)", preset=name, model=label,
                  precision=precision, batch=batch, ms=round(statistics.median(medians), 3),
                  round_spread_ms=round(max(medians) - min(medians), 3), gmac_per_input=round(gmac, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check"), help="folder for the tables")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for data and models (default OUT/work)")
    parser.add_argument("--default-epochs", type=int, default=20, help="dense epochs of the default preset")
    parser.add_argument("--paper-epochs", type=int, default=3, help="dense epochs of the paper preset")
    parser.add_argument("--compare-epochs", type=int, default=4,
                        help="dense epochs of the precisions other than auto (their speed is the point)")
    parser.add_argument("--minutes", type=float, default=7.5, help="time budget; later steps are skipped")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--threads", type=int, default=4, help="CPU threads of each job (data augmentation)")
    parser.add_argument("--presets", nargs="+", default=["default", "paper"])
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--steps", type=int, default=None,
                        help="cap every training and fine-tuning at this many steps (dry runs)")
    parser.add_argument("--ceiling-batch", type=int, default=64, help="batch of the compute ceiling")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: a dry run of every step without a GPU (tiny epochs advised)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    deadline = time.monotonic() + 60 * args.minutes

    import torch
    from compression import load_config

    from varprune.core.precision import resolve

    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    table = Table(args.out)
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py: torch sees no CUDA GPU here (--device cpu for a dry run)")
    gpu = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "none (dry run on the CPU)"
    if DEVICE == "cuda":
        props = torch.cuda.get_device_properties(0)
        table.note(f"GPU {props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability "
                   f"{props.major}.{props.minor}; torch {torch.__version__}, CUDA {torch.version.cuda}; "
                   f"bf16 supported: {torch.cuda.is_bf16_supported()}; {os.cpu_count()} CPU cores")
    configs = {"default": load_config(REPO), "paper": load_config(REPO, Path("config/paper.yaml"))}
    configs = {name: configs[name] for name in args.presets}
    if args.steps:
        for config in configs.values():
            config["train"]["steps"] = config["finetune"]["steps"] = args.steps
    epochs = {"default": args.default_epochs, "paper": args.paper_epochs}

    started = time.monotonic()
    data = step(table, "data", deadline)(prepare_data, work, configs, args.workers)
    if data is None:
        return
    table.note(f"data: {time.monotonic() - started:.0f} s for the synthetic cohort, converted and "
               f"preprocessed for {', '.join(configs)} ({args.workers} workers)")
    auto = resolve("auto", torch.device(DEVICE))
    dense: dict[tuple[str, str], Path] = {}
    for name, config in configs.items():
        batch = config["train"]["batch_size"]
        for precision in args.precisions:
            step(table, f"ceiling {name} {precision}", deadline)(compute_ceiling, table, name, config,
                                                                 precision, max(args.ceiling_batch, batch))
        for precision in [auto] + [p for p in args.precisions if p != auto]:
            n_epochs = epochs[name] if precision == auto else min(epochs[name], args.compare_epochs)
            path = step(table, f"train {name} {precision}", deadline)(
                train_dense, table, name, config, data, work, precision, n_epochs, args.threads)
            if path is not None:
                dense[(name, precision)] = path
    for name, config in configs.items():
        parent = dense.get((name, auto))
        if parent is None:
            continue
        pruned = step(table, f"cycle {name}", deadline)(prune_cycle, table, name, config, data, work, parent,
                                                         auto, args.threads)
        run = step(table, f"evaluate {name}", deadline)
        run(evaluate, table, name, "dense", parent, data, work, DEVICE, auto, args.threads)
        if auto != "fp32":
            run(evaluate, table, name, "dense", parent, data, work, DEVICE, "fp32", args.threads)
        if name == "default" and DEVICE != "cpu":
            run(evaluate, table, name, "dense", parent, data, work, "cpu", "fp32", args.threads)
        if pruned is not None:
            run(evaluate, table, name, "variable_cycle1", pruned, data, work, DEVICE, auto, args.threads)
        step(table, f"predict {name}", deadline)(predict_both, table, name, parent, data, work, args.threads)
        models = {"dense": parent, **({"variable_cycle1": pruned} if pruned is not None else {})}
        precisions = tuple(dict.fromkeys(("fp32", auto)))
        step(table, f"latency {name}", deadline)(latency, table, name, models, precisions)

    rows = [r for r in table.sections.get("dense training (train_dense)", []) if r["precision"] == auto]
    if rows:
        measured = {r["preset"]: r["gmacs_per_s"] for r in rows}
        chosen = min(measured.values())
        payload = {"gpu_gmacs": chosen, "per_preset": measured, "precision": auto, "gpu": gpu,
                   "definition": "3 x forward GMACs per trained input + forward GMACs per validation input, "
                                 "over the epochs' wall time (varprune.workflow.resources.training_work)"}
        (args.out / "gpu_gmacs.json").write_text(json.dumps(payload, indent=1) + "\n")
        table.note(f"gpu_gmacs measured: {chosen} GMAC/s (the lower of {measured}); "
                   f"set resources.gpu_gmacs from it")
    table.note(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
