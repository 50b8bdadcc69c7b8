"""One-shot curves: accuracy right after the surgery, before any fine-tuning (the `oneshot` rule).

Fine-tuning repairs almost any allocation of widths, so fine-tuned accuracy separates pruning
methods poorly. Right after the surgery the allocation alone decides the accuracy. From the
dense model, each method prunes to each target in one step, with the significance scores of
cycle 1 (same criterion, same calibration sample, computed once), and the pruned model's
validation and test Dice are measured on the model grid (3D Dice per case, averaged: the
validation measure of training). Minutes, not a training run.

A `transformer_off` row (every MSA and FFN block removed, no fine-tuning) marks the far end:
how much the prediction falls when the transformer contributes nothing.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from varprune.core.atomic import write_csv
from varprune.engine.cost import macs_full
from varprune.engine.train import SplitFiles, load_split, validation_dice
from varprune.model.inference import pick_device
from varprune.model.network import ModelSpec, load_model
from varprune.pruning.budget import BudgetError, reachable_per_cycle
from varprune.pruning.cycle import CycleSettings, calibration_batches, prune_model
from varprune.pruning.groups import Scores
from varprune.pruning.significance import make_criterion
from varprune.pruning.surgery import remove_transformer_blocks

log = logging.getLogger(__name__)

ONESHOT_COLUMNS = ["method", "target", "macs_reduction", "val_dice", "test_dice"]


def oneshot_targets(cfg: dict, highest: float) -> list[float]:
    """The configured targets, or `points` evenly spaced from `start` to the highest reachable."""
    if cfg.get("targets"):
        return [float(t) for t in cfg["targets"]]
    top = math.floor(highest * 1000) / 1000
    start = float(cfg.get("start", 0.30))
    if top <= start:
        return [top]
    return [round(float(t), 3) for t in np.linspace(start, top, int(cfg.get("points", 10)))]


Scorer = Callable[[torch.nn.Module, ModelSpec, str], float]  # (model, spec, split) -> mean Dice


def reference_rows(model: torch.nn.Module, spec: ModelSpec, dense_macs: int, dice: Scorer) -> list[dict]:
    """The dense model's row and transformer_off's (every MSA and FFN removed, no fine-tuning)."""
    rows = [{"method": "dense", "target": 0.0, "macs_reduction": 0.0,
             "val_dice": round(dice(model, spec, "val"), 6),
             "test_dice": round(dice(model, spec, "test"), 6)}]
    model.cpu()
    off = copy.deepcopy(model)
    off_spec = remove_transformer_blocks(off, spec)
    off_reduction = 1 - macs_full(off, torch.zeros(spec.input_shape(1))) / dense_macs
    rows.append({"method": "transformer_off", "target": round(off_reduction, 6),
                 "macs_reduction": round(off_reduction, 6),
                 "val_dice": round(dice(off, off_spec, "val"), 6),
                 "test_dice": round(dice(off, off_spec, "test"), 6)})
    log.info("one-shot transformer_off: MACs -%.1f %%, val Dice %.4f, test Dice %.4f",
             100 * off_reduction, rows[-1]["val_dice"], rows[-1]["test_dice"])
    return rows


def pruned_row(model: torch.nn.Module, spec: ModelSpec, method: str, settings: CycleSettings, seed: int,
               scores: Scores, dice: Scorer, batches: list = ()) -> dict:
    """One point of a method's curve: a copy of the dense model pruned to `settings.target` in one
    step and scored without fine-tuning (empty when the floors make the target unreachable);
    `batches`: the calibration sample, for the output refit when the output's inputs are pruned."""
    target = settings.target
    pruned = copy.deepcopy(model)
    try:
        new_spec, summary = prune_model(pruned, spec, method, settings, list(batches), seed=seed,
                                        scores=scores)
    except BudgetError as err:
        log.warning("one-shot %s at %.3f: %s", method, target, err)
        return {"method": method, "target": target, "macs_reduction": "", "val_dice": "", "test_dice": ""}
    row = {"method": method, "target": target,
           "macs_reduction": round(summary["reduction_vs_dense"], 6),
           "val_dice": round(dice(pruned, new_spec, "val"), 6),
           "test_dice": round(dice(pruned, new_spec, "test"), 6)}
    log.info("one-shot %-8s target %.3f: MACs -%.1f %%, val Dice %.4f, test Dice %.4f", method,
             target, 100 * row["macs_reduction"], row["val_dice"], row["test_dice"])
    return row


def run_oneshot(dense_model: str | os.PathLike,
                preprocessed: SplitFiles, methods: list[str], pruning: dict, oneshot: dict,
                out_csv: str | os.PathLike, device: str = "auto", threads: int | None = None) -> list[dict]:
    """Prune the dense model to every target with every method, without fine-tuning; write the table."""
    if threads:
        torch.set_num_threads(threads)
    model, spec, _ = load_model(dense_model)
    if spec.layers != replace(spec, layers=[]).layers:
        raise ValueError(f"{dense_model}: one-shot curves start from the dense model, not a pruned one")
    settings = CycleSettings.from_config({**pruning, "target": 0.0})
    data = load_split(preprocessed)
    run_device = pick_device(device)
    dense = macs_full(model, torch.zeros(spec.input_shape(1)))
    # The highest share one cycle can remove: every layer at rate_max, within the minimum widths.
    targets = oneshot_targets(oneshot, reachable_per_cycle(spec, 1, settings.sequence)[0])
    # Cycle 1's calibration sample and random draw, so a one-shot point at cycle 1's target is
    # exactly cycle 1's model before its fine-tuning.
    seed = settings.seed + 1
    batches = calibration_batches(data["train"], settings.calibration_batches,
                                  settings.calibration_batch_size, seed, spec.spatial_dims, spec.depth)
    scores = make_criterion(settings.criterion).score(model, spec, batches)
    log.info("one-shot: %d methods x %d targets %s, criterion %s", len(methods), len(targets), targets,
             settings.criterion)

    def dice(m: torch.nn.Module, s: ModelSpec, split: str) -> float:
        return validation_dice(m.to(run_device), s, data[split], run_device, 16)

    rows = reference_rows(model, spec, dense, dice)
    for method in methods:
        for target in targets:
            rows.append(pruned_row(model, spec, method, replace(settings, target=target), seed, scores, dice,
                                   batches))
    write_csv(out_csv, ONESHOT_COLUMNS, rows)
    return rows
