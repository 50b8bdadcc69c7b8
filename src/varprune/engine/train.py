"""The training loop shared by the dense model and the fine-tuning of every pruned one.

- DiceCE loss, AdamW, linear warm-up then cosine decay (per step), gradient clipping.
- Validation Dice (3D, per case, on the model grid) after every epoch; `model.pt` is the best.
- Optionally an exponential moving average of the weights (`ema`, torch's AveragedModel),
  validated and saved instead of the raw weights: a steadier reference.
- CUDA when present, else the CPU with a fixed thread count; `precision` (fp32, bf16, fp16 or
  auto: `varprune.core.precision`) sets autocast for training and validation alike.
- Seeded per epoch (data order and augmentations), so two runs of one config agree and a
  resumed run equals an uninterrupted one.
- Resume: after every epoch the full state (weights, optimiser, schedule, history) goes to
  `state_dir/last.pt` under a fingerprint of everything that defines the run. A rerun with the
  same fingerprint continues after the last completed epoch; any change starts afresh.
  `state_dir` must be a folder Snakemake does not own (it deletes a failed job's outputs).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.metrics import compute_dice
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from varprune.core.atomic import atomic_path, write_csv
from varprune.core.precision import autocast, from_legacy, needs_scaler, resolve
from varprune.data.datasets import AugmentSpec, Volume, reseed, training_dataset
from varprune.engine.distill import DistillSpec, distillation_loss
from varprune.model.inference import pick_device, predict_volume
from varprune.model.network import ModelSpec, save_checkpoint

if TYPE_CHECKING:
    from monai.data import Dataset
    from monai.transforms import Compose

log = logging.getLogger(__name__)

STATE_FORMAT = "varprune-train-state-1"
LOG_COLUMNS = ["epoch", "step", "loss", "val_dice", "lr", "seconds"]


class TrainingError(Exception):
    """Training cannot go on (a non-finite loss, an empty dataset); the message says where."""


@dataclass(frozen=True)
class TrainSettings:
    """The `train` (or `finetune`) config slice; the defaults are `train`'s in config/config.yaml (tested).

    `steps`, when set, is the budget in optimiser steps and overrides `epochs` (fine-tuning
    budgets are naturally counted in steps); the last epoch may then be partial.
    `ema`, when set, is the decay of an exponential moving average of the weights, updated after
    every step: validation, the best-epoch choice and the checkpoint then use the averaged
    weights, which swing far less from epoch to epoch than the raw ones.
    """

    epochs: int = 20
    steps: int | None = None
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    ema: float | None = None
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    distill: DistillSpec = field(default_factory=DistillSpec)

    @classmethod
    def from_config(cls, cfg: dict) -> TrainSettings:
        values = {k: v for k, v in cfg.items() if k in cls.__dataclass_fields__}
        values["precision"] = from_legacy(cfg)
        values["augment"] = AugmentSpec.from_config(cfg.get("augment"))
        values["distill"] = DistillSpec.from_config(cfg.get("distill"))
        return cls(**values)


@dataclass
class TrainResult:
    """What a training run produced."""

    best_epoch: int
    best_val_dice: float
    history: list[dict]
    resumed_from: int


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to `min_ratio` at `total`.

    Not MONAI's WarmupCosineSchedule: that one spends its first step at learning rate 0 and
    clamps the cosine at an absolute floor instead of scaling it down to `min_ratio`, so every
    trained model and result would change; this closed form is restored exactly on resume."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def fingerprint(model: nn.Module, spec: ModelSpec, settings: TrainSettings,
                train: list[Volume], val: list[Volume]) -> str:
    """Hash of everything that decides the result: start weights, spec, settings and data."""
    digest = hashlib.sha256()
    digest.update(json.dumps([spec.to_dict(), asdict(settings)], sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for split, volumes in (("train", train), ("val", val)):
        for v in volumes:
            digest.update(f"{split}:{v.case}".encode())
            digest.update(np.ascontiguousarray(v.image).tobytes())
            digest.update(np.ascontiguousarray(v.label).tobytes())
    return digest.hexdigest()[:20]


def validation_dice(model: nn.Module, spec: ModelSpec, volumes: list[Volume], device: torch.device,
                    batch_size: int, precision: str = "fp32") -> float:
    """Mean over cases of the 3D Dice of the thresholded prediction on the model grid."""
    scores = []
    for v in volumes:
        prob = predict_volume(model, v.image, spec, device, batch_size, precision=precision)
        pred = torch.as_tensor(prob > 0.5)[None, None].float()
        truth = torch.as_tensor(v.label)[None, None].float()
        scores.append(float(compute_dice(pred, truth, include_background=True, ignore_empty=False)))
    return float(np.mean(scores)) if scores else float("nan")


def discard_state(state_dir: str | os.PathLike, keep: bool = False) -> None:
    """Delete a finished job's resume state, then the parent folders it leaves empty up to the
    run's `.state/` (the state is worth hundreds of MB per job and useless once the outputs exist)."""
    folder = Path(state_dir)
    if keep or not folder.exists():
        return
    shutil.rmtree(folder)
    root = next((p for p in folder.parents if p.name == ".state"), None)
    if root is None:
        return
    for parent in folder.parents:
        try:
            parent.rmdir()  # only when empty: another job's state stays
        except OSError:
            return
        if parent == root:
            return


def _save_state(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buffer.getvalue())


def _load_state(path: Path, expected: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a state file cut by a kill mid-write is never renamed into place
        log.warning("ignoring unreadable resume state %s (%s); starting afresh", path, err)
        return None
    if state.get("format") != STATE_FORMAT or state.get("fingerprint") != expected:
        log.info("resume state %s belongs to another configuration; starting afresh", path)
        return None
    return state


def write_log(path: str | os.PathLike, rows: list[dict]) -> None:
    """The CSV training log, written atomically."""
    write_csv(path, LOG_COLUMNS, rows)


@dataclass(frozen=True)
class _Budget:
    """How the step budget maps onto epochs of the training dataset."""

    batch_size: int
    total_steps: int
    epochs: int  # the last one may be partial when `steps` sets the budget
    warmup: int  # steps


def _budget(settings: TrainSettings, n_items: int) -> _Budget:
    """Steps, epochs and warm-up from the settings; a batch never exceeds the dataset."""
    batch_size = min(settings.batch_size, n_items)
    steps_per_epoch = n_items // batch_size
    total_steps = settings.steps or settings.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    warmup = max(1, round(settings.warmup * total_steps))
    return _Budget(batch_size=batch_size, total_steps=total_steps, epochs=epochs, warmup=warmup)


@dataclass
class _Run:
    """The objects one training run updates; the resume state captures all of them."""

    model: nn.Module
    device: torch.device
    precision: str  # resolved: fp32, bf16 or fp16
    settings: TrainSettings
    budget: _Budget
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    averaged: AveragedModel | None
    loss_fn: nn.Module
    teacher: nn.Module | None = None  # finetune.distill: its outputs are a second target

    @classmethod
    def start(cls, model: nn.Module, device: torch.device, settings: TrainSettings, budget: _Budget,
              teacher: nn.Module | None = None) -> _Run:
        """AdamW with per-step warm-up and cosine decay, the AMP scaler, the EMA when asked, the loss."""
        precision = resolve(settings.precision, device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, budget.total_steps, budget.warmup, settings.min_lr_ratio))
        scaler = torch.amp.GradScaler(device.type, enabled=needs_scaler(precision))
        averaged = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema), use_buffers=True)
                    if settings.ema is not None else None)
        # Dice over the whole batch: most slices hold no liver, and a per-slice Dice of an empty
        # slice is 0 or 1 whatever the model does, which drowns the signal of the others.
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
        if settings.distill.on:
            if teacher is None:
                raise TrainingError("finetune.distill.weight is set but no teacher model was given")
            teacher = teacher.to(device).eval().requires_grad_(False)
        return cls(model=model, device=device, precision=precision, settings=settings, budget=budget,
                   optimizer=optimizer, scheduler=scheduler, scaler=scaler, averaged=averaged,
                   loss_fn=loss_fn, teacher=teacher if settings.distill.on else None)

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The segmentation loss, plus the distillation term when there is a teacher."""
        logits = self.model(images)
        loss = self.loss_fn(logits, labels)
        if self.teacher is not None:
            with torch.no_grad():
                target = self.teacher(images)
            spec = self.settings.distill
            loss = loss + spec.weight * distillation_loss(logits, target, spec.temperature)
        return loss

    @property
    def evaluated(self) -> nn.Module:
        """The weights that are validated and saved: the average when there is one."""
        return self.averaged.module if self.averaged is not None else self.model


@dataclass
class _Progress:
    """What the completed epochs produced; saved after each so that a rerun can continue."""

    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": 0, "dice": -1.0, "weights": None})
    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimiser steps


def _resume(run: _Run, state_path: Path, key: str) -> _Progress:
    """Load the run's objects from the resume state saved under `key`, or start afresh."""
    state = _load_state(state_path, key)
    if state is None:
        return _Progress()
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    if run.averaged is not None:
        run.averaged.load_state_dict(state["ema"])
    done = _Progress(history=state["history"], epoch=state["epoch"], step=state["step"],
                     best={"epoch": state["best_epoch"], "dice": state["best_dice"],
                           "weights": state["best_model"]})
    log.info("resuming after epoch %d of %d (step %d) from %s", done.epoch, run.budget.epochs, done.step,
             state_path)
    return done


def _resume_state(run: _Run, key: str, done: _Progress) -> dict:
    """Everything `_resume` needs to continue after the last completed epoch, under `key`."""
    return {
        "format": STATE_FORMAT, "fingerprint": key, "epoch": done.epoch, "step": done.step,
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(), "history": done.history,
        "ema": run.averaged.state_dict() if run.averaged is not None else None,
        "best_epoch": done.best["epoch"], "best_dice": done.best["dice"], "best_model": done.best["weights"],
    }


def _optimiser_step(run: _Run, loss: torch.Tensor) -> None:
    """Backward pass, clipping, AMP-scaled update, schedule step and EMA update for one batch."""
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)
    nn.utils.clip_grad_norm_(run.model.parameters(), run.settings.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if run.averaged is not None:
        run.averaged.update_parameters(run.model)


def _train_epoch(run: _Run, dataset: Dataset, transforms: Compose, epoch: int, done: _Progress,
                 progress: bool) -> list[float]:
    """One epoch (or what is left of the step budget), seeded by the epoch so a resumed run agrees with
    an uninterrupted one; advances `done.step` and returns the batch losses."""
    epoch_seed = run.settings.seed * 100_003 + epoch
    reseed(transforms, epoch_seed)
    torch.manual_seed(epoch_seed)
    loader = DataLoader(dataset, batch_size=run.budget.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(epoch_seed), num_workers=0)
    run.model.train()
    losses = []
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{run.budget.epochs}", leave=False, file=sys.stderr,
               disable=not progress, mininterval=1.0 if sys.stderr.isatty() else 30.0)
    for batch_index, batch in enumerate(bar):
        if done.step >= run.budget.total_steps:
            break
        images, labels = batch["image"].to(run.device), batch["label"].to(run.device)
        with autocast(run.device, run.precision):
            loss = run.loss(images, labels)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the loss is {loss.item()} at epoch {epoch + 1}, step {batch_index + 1} "
                f"(global step {done.step + 1}; cases in the batch: {sorted(set(batch['case']))}); "
                "check the data of these cases and the learning rate")
        _optimiser_step(run, loss)
        done.step += 1
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    bar.close()
    return losses


def _record_epoch(run: _Run, done: _Progress, epoch: int, losses: list[float], dice: float,
                  started: float) -> None:
    """Log the epoch, and keep a copy of the evaluated weights when they are the best so far."""
    row = {
        "epoch": epoch + 1, "step": done.step, "loss": round(float(np.mean(losses)), 6),
        "val_dice": round(dice, 6), "lr": f"{run.optimizer.param_groups[0]['lr']:.3e}",
        "seconds": round(time.perf_counter() - started, 2),
    }
    done.history.append(row)
    # No validation split: the last epoch counts as the best.
    if math.isnan(dice) or dice > done.best["dice"]:
        done.best = {"epoch": epoch + 1, "dice": dice,
                     "weights": {k: v.detach().cpu().clone() for k, v in run.evaluated.state_dict().items()}}
    done.epoch = epoch + 1
    log.info("epoch %d/%d: loss %.4f, val Dice %.4f, lr %s, %.1f s", epoch + 1, run.budget.epochs,
             row["loss"], dice, row["lr"], row["seconds"])


def train(model: nn.Module, spec: ModelSpec, train_volumes: list[Volume], val_volumes: list[Volume],
          settings: TrainSettings, out_model: str | os.PathLike, out_log: str | os.PathLike,
          state_dir: str | os.PathLike, provenance: dict, threads: int | None = None,
          progress: bool = True, teacher: nn.Module | None = None) -> TrainResult:
    """Train (or fine-tune) `model` in place, resuming from `state_dir` when it holds this run;
    `teacher`: the model whose outputs are distilled into it (settings.distill)."""
    if threads:
        torch.set_num_threads(threads)
    device = pick_device(settings.device)
    dataset, transforms = training_dataset(train_volumes, settings.augment, spec.spatial_dims, spec.depth)
    if len(dataset) == 0:
        raise TrainingError("the training split holds no data")
    budget = _budget(settings, len(dataset))

    state_path = Path(state_dir) / "last.pt"
    key = fingerprint(model, spec, settings, train_volumes, val_volumes)
    model.to(device)
    run = _Run.start(model, device, settings, budget, teacher)
    done = _resume(run, state_path, key)
    start_epoch = done.epoch
    log.info("training on %s: %d items, batch %d, %d epochs, %d steps, fingerprint %s",
             device, len(dataset), budget.batch_size, budget.epochs, budget.total_steps, key)

    for epoch in range(start_epoch, budget.epochs):
        started = time.perf_counter()
        losses = _train_epoch(run, dataset, transforms, epoch, done, progress)
        dice = validation_dice(run.evaluated, spec, val_volumes, device, budget.batch_size * 2,
                               run.precision)
        _record_epoch(run, done, epoch, losses, dice, started)
        _save_state(state_path, _resume_state(run, key, done))

    best = done.best
    model.load_state_dict(best["weights"])
    model.cpu()
    provenance = {**provenance, "training": {
        "settings": asdict(settings), "best_epoch": best["epoch"], "best_val_dice": best["dice"],
        "epochs": budget.epochs, "steps": done.step, "device": str(device), "fingerprint": key,
        "resumed_from_epoch": start_epoch,
    }}
    write_log(out_log, done.history)
    save_checkpoint(out_model, model, spec, provenance)
    log.info("best epoch %d (val Dice %.4f) -> %s", best["epoch"], best["dice"], out_model)
    return TrainResult(best["epoch"], best["dice"], done.history, start_epoch)


# The preprocessed files of each split a job was given: {"train": [.../{case}.npz, ...], "val": [...]}.
SplitFiles = Mapping[str, Sequence[str | os.PathLike]]


def split_files(inputs) -> dict[str, list[str]]:
    """The SplitFiles among a rule's named inputs (`train`, `val`, `test`: whichever it declares)."""
    return {name: list(inputs[name]) for name in ("train", "val", "test") if name in inputs.keys()}


def load_split(preprocessed: SplitFiles) -> dict[str, list[Volume]]:
    """The volumes of each split from the files given for it: {"train": [.../{case}.npz, ...], ...}."""
    from varprune.data.datasets import case_paths, load_volumes

    return {name: load_volumes(case_paths(files)) for name, files in preprocessed.items()}


def train_dense(splits_json: str | os.PathLike, preprocessed: SplitFiles, model_cfg: dict,
                train_cfg: dict, preprocess_cfg: dict, out_model: str | os.PathLike,
                out_log: str | os.PathLike, state_dir: str | os.PathLike,
                threads: int | None = None, keep_state: bool = False) -> TrainResult:
    """Train the dense segmenter of a run from its config slices (the `train` rule); its resume
    state is deleted once the outputs are written unless `keep_state`."""
    from varprune.model.network import build_model

    settings = TrainSettings.from_config(train_cfg)
    spec = ModelSpec.from_config(model_cfg, preprocess_cfg["input_size"])
    data = load_split(preprocessed)
    torch.manual_seed(settings.seed)
    model = build_model(spec)
    provenance = {
        "kind": "dense", "parent": None,
        "config": {"model": model_cfg, "train": train_cfg, "preprocess": preprocess_cfg},
        "split": json.loads(Path(splits_json).read_text()),
    }
    result = train(model, spec, data["train"], data["val"], settings, out_model, out_log, state_dir,
                   provenance, threads)
    discard_state(state_dir, keep_state)
    return result
