"""One pruning cycle end to end: score, plan, remove, fine-tune, save (the `prune_cycle` rule).

Cycle k of a method starts from cycle k-1 of the same method (the dense model for k = 1) and
removes what takes the model from MAC target k-1 to target k, both relative to the dense
model's `macs_full`. The dense MACs follow from the parent's spec (its layers at dense width),
so a cycle needs nothing but its parent checkpoint and its two targets.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from varprune.core.atomic import write_csv, write_json
from varprune.core.methods import PRUNING_METHODS
from varprune.core.precision import resolve
from varprune.data.datasets import Volume, slab_item, slab_starts, slice_items
from varprune.engine.cost import macs_full
from varprune.engine.distill import load_teacher
from varprune.engine.train import SplitFiles, TrainSettings, discard_state, load_split, train, validation_dice
from varprune.model.inference import pick_device
from varprune.model.network import ModelSpec, load_model
from varprune.pruning.budget import spec_macs, whole_groups
from varprune.pruning.groups import BLOCKS, Scores
from varprune.pruning.refit import output_group, output_statistics, refit_output
from varprune.pruning.sequence import (
    LayerCounts,
    Sequence,
    SequenceSettings,
    msa_channels_removed,
    plan_counts,
    removed_macs,
    select_groups,
)
from varprune.pruning.significance import make_criterion
from varprune.pruning.surgery import apply_plan

log = logging.getLogger(__name__)

# rate_planned: the rate the method's solver chose for the layer; rate_realised: the share of
# the layer's channels actually removed (whole groups, minimum widths), for every method.
SEQUENCE_COLUMNS = ["cycle", "layer", "block", "significance", "weight", "level", "rate_planned",
                    "rate_realised", "channels_before", "channels_after", "heads_before", "heads_after"]


@dataclass(frozen=True)
class CycleSettings:
    """The `pruning` config slice a cycle job receives (its own target and its predecessor's)."""

    target: float
    previous_target: float = 0.0
    criterion: str = "taylor"
    calibration_batches: int = 8
    calibration_batch_size: int = 8
    seed: int = 0
    refit_output: bool = True  # least-squares refit of the output layer when its inputs are pruned
    sequence: SequenceSettings = SequenceSettings()

    @classmethod
    def from_config(cls, cfg: dict) -> CycleSettings:
        own = {k: cfg[k] for k in ("target", "previous_target", "criterion", "calibration_batches",
                                   "calibration_batch_size", "seed", "refit_output") if k in cfg}
        return cls(**own, sequence=SequenceSettings.from_config(cfg))


def calibration_batches(volumes: list[Volume], batches: int, batch_size: int, seed: int,
                        spatial_dims: int = 2, depth: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A seeded sample of training slices (3D: slabs of `depth` slices; no augmentation) for the
    gradient criteria."""
    if spatial_dims == 2:
        items = slice_items(volumes)
    else:  # slabs are cut only when drawn: all of them at once would copy every volume `depth` times
        starts = slab_starts(volumes, depth)
        items = _Lazy(len(starts), lambda i: slab_item(volumes[starts[i][0]], starts[i][1], depth))
    order = np.random.default_rng(seed).permutation(len(items))
    result = []
    for b in range(batches):
        chosen = [items[i] for i in order[b * batch_size:(b + 1) * batch_size]]
        if not chosen:
            break
        result.append((torch.as_tensor(np.stack([c["image"] for c in chosen])),
                       torch.as_tensor(np.stack([c["label"] for c in chosen]))))
    return result


class _Lazy:
    """A sequence whose items are made when indexed."""

    def __init__(self, length: int, make):
        self.length, self.make = length, make

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return self.make(index)


def dense_macs(model: torch.nn.Module, spec: ModelSpec, measured: int) -> int:
    """`macs_full` the dense ancestor had: the measured MACs with every width dense again."""
    return measured - spec_macs(spec) + spec_macs(spec.dense())


def sequence_rows(cycle: int, spec: ModelSpec, new_spec: ModelSpec, counts: list[LayerCounts],
                  sequence: Sequence, method: str) -> list[dict]:
    """The rows of `sequence.csv` (one per layer and block)."""
    levels = PRUNING_METHODS[method].levels
    rows = []
    for i, (before, after, c) in enumerate(zip(spec.layers, new_spec.layers, counts, strict=True)):
        lost = {"msa": msa_channels_removed(before, c) / before.inner, "ffn": c.ffn / before.ffn}
        widths = {"msa": (before.inner, after.inner), "ffn": (before.ffn, after.ffn)}
        for block in BLOCKS:
            planned = float(sequence.rate[block][i])
            rows.append({
                "cycle": cycle, "layer": i + 1, "block": block,
                "significance": f"{float(sequence.significance[block][i]):.6g}",
                "weight": "" if np.isnan(sequence.weight[block][i]) else f"{sequence.weight[block][i]:.6g}",
                "level": int(sequence.level[block][i]) if levels else "",
                "rate_planned": f"{planned:.6g}",
                "rate_realised": f"{lost[block]:.6g}",
                "channels_before": widths[block][0], "channels_after": widths[block][1],
                "heads_before": before.heads if block == "msa" else "",
                "heads_after": after.heads if block == "msa" else "",
            })
    return rows + outer_rows(cycle, spec, new_spec, sequence)


def outer_rows(cycle: int, spec: ModelSpec, new_spec: ModelSpec, sequence: Sequence) -> list[dict]:
    """Rows of the decoder groups (`layer` = group number, `varprune.model.spec.ModelSpec.stage_names`)
    and of the embedding width, when pruned."""
    widths = {"head": list(zip(spec.stages, new_spec.stages, strict=True)),
              "embed": [(spec.width, new_spec.width)]}
    rows = []
    for block in ("head", "embed"):
        if block not in sequence.rate:
            continue
        for i, (before, after) in enumerate(widths[block]):
            weight, level = sequence.weight[block][i], sequence.level[block][i]
            rows.append({
                "cycle": cycle, "layer": i + 1, "block": block,
                "significance": f"{float(sequence.significance[block][i]):.6g}",
                "weight": "" if np.isnan(weight) else f"{weight:.6g}",
                "level": int(level) if not np.isnan(weight) else "",
                "rate_planned": f"{float(sequence.rate[block][i]):.6g}",
                "rate_realised": f"{(before - after) / before:.6g}",
                "channels_before": before, "channels_after": after, "heads_before": "", "heads_after": "",
            })
    return rows


def write_sequence(path: str | os.PathLike, rows: list[dict]) -> None:
    """`sequence.csv` (columns SEQUENCE_COLUMNS), written atomically."""
    write_csv(path, SEQUENCE_COLUMNS, rows)


def prune_model(model: torch.nn.Module, spec: ModelSpec, method: str, settings: CycleSettings,
                batches: list, seed: int = 0, scores: Scores | None = None) -> tuple[ModelSpec, dict]:
    """Score (unless `scores` are given), plan and remove in place; return the new spec and a
    summary of the budget. `seed` draws the random control's allocation. When the plan removes
    channels the output layer reads, that layer is refitted on `batches` (varprune.pruning.refit)."""
    x = torch.zeros(spec.input_shape(1), device=next(model.parameters()).device)
    before = macs_full(model, x)
    dense = dense_macs(model, spec, before)
    budget = int(round(before - (1 - settings.target) * dense))
    if scores is None:
        scores = make_criterion(settings.criterion).score(model, spec, batches)
    scores = {key: value.detach().cpu() for key, value in scores.items()}  # planning runs on the CPU
    whole = sorted(whole_groups(spec, settings.sequence)) if "head" in settings.sequence.outer_blocks else []
    if whole:
        log.info("decoder groups left whole (each below %.2g %% of the dense MACs, "
                 "pruning.min_group_share): %s", 100 * settings.sequence.min_group_share,
                 ", ".join(spec.stage_names[g] for g in whole))
    counts, sequence = plan_counts(method, spec, scores, budget, settings.sequence, seed=seed)
    plans = select_groups(spec, scores, counts)
    group = output_group(spec)
    gone = plans.outer.head[group] if len(plans.outer.head) > group else []
    stats = output_statistics(model, batches) if settings.refit_output and gone else None
    new_spec = apply_plan(model, spec, plans)
    if stats is not None:
        removed = set(gone)
        kept = torch.tensor([c for c in range(spec.stages[group]) if c not in removed])
        refit_output(model, kept, stats)
        log.info("output layer refitted by least squares over its %d kept inputs (%d removed)",
                 len(kept), len(gone))
    after = macs_full(model, x)
    summary = {
        "macs_dense": dense, "macs_before": before, "macs_after": after, "budget": budget,
        "removed": before - after, "planned": removed_macs(spec, counts),
        "reduction_vs_dense": 1 - after / dense, "target": settings.target,
        "rows": sequence_rows(0, spec, new_spec, counts, sequence, method),
    }
    log.info("%s: removed %.1f M MACs of a %.1f M budget (%.2f %% of it); "
             "%.1f %% below dense (target %.1f %%)",
             method, summary["removed"] / 1e6, budget / 1e6,
             100 * summary["removed"] / budget if budget > 0 else 100.0,
             100 * summary["reduction_vs_dense"], 100 * settings.target)
    return new_spec, summary


def run_cycle(parent: str | os.PathLike, splits_json: str | os.PathLike,
              preprocessed: SplitFiles, method: str, cycle: int, pruning: dict,
              finetune: dict, out_model: str | os.PathLike, out_sequence: str | os.PathLike,
              out_log: str | os.PathLike, state_dir: str | os.PathLike,
              out_oneshot: str | os.PathLike | None = None, threads: int | None = None,
              keep_state: bool = False, dense: str | os.PathLike | None = None) -> dict:
    """Prune the parent checkpoint by one cycle of `method`, fine-tune it (distilling from the
    `dense` checkpoint or the parent when finetune.distill is on), save.

    `oneshot.json` records the validation Dice right after the surgery and after fine-tuning:
    accuracy before fine-tuning separates allocations far better than after it.
    """
    if threads:
        torch.set_num_threads(threads)
    settings = CycleSettings.from_config(pruning)
    ft = TrainSettings.from_config(finetune)
    model, spec, parent_provenance = load_model(parent)
    teacher = load_teacher(ft.distill, parent, dense)
    data = load_split(preprocessed)
    batches = calibration_batches(data["train"], settings.calibration_batches,
                                  settings.calibration_batch_size, settings.seed + cycle,
                                  spec.spatial_dims, spec.depth)
    log.info("cycle %d of %s from %s: criterion %s on %d batches, target %.3f (previous %.3f)",
             cycle, method, parent, settings.criterion, len(batches), settings.target,
             settings.previous_target)
    torch.manual_seed(settings.seed)
    device = pick_device(ft.device)  # scoring and surgery run where the fine-tuning will
    new_spec, summary = prune_model(model.to(device), spec, method, settings, batches,
                                    seed=settings.seed + cycle)
    val_before = validation_dice(model, new_spec, data["val"], device, ft.batch_size * 2,
                                 resolve(ft.precision, device))
    log.info("validation Dice right after the surgery (before fine-tuning): %.4f", val_before)
    rows = summary.pop("rows")
    for row in rows:
        row["cycle"] = cycle
    provenance = {
        "kind": "pruned", "method": method, "cycle": cycle, "parent": str(parent),
        "config": {"pruning": pruning, "finetune": finetune,
                   **{k: v for k, v in parent_provenance.get("config", {}).items()
                      if k in ("model", "preprocess", "train")}},
        "split": json.loads(Path(splits_json).read_text()),
        "pruning": {**summary, "settings": asdict(settings)},
    }
    result = train(model, new_spec, data["train"], data["val"], ft, out_model, out_log, state_dir,
                   provenance, threads, teacher=teacher)
    write_sequence(out_sequence, rows)
    if out_oneshot is not None:
        write_json(out_oneshot, {"val_dice_before": round(val_before, 6),
                                 "val_dice_after": round(result.best_val_dice, 6)})
    discard_state(state_dir, keep_state)
    return summary
