"""The reference models every pruning result is read against (the `dense_long` and
`transformer_off` rules).

- `dense_long`: each pruning cycle fine-tunes its model once more, so after K cycles a pruned
  model has had K fine-tunings the dense model never had. `dense_long` gives the dense model
  exactly those K fine-tunings (same recipe, each with its own warm-up and cosine decay and
  best-epoch choice, as a cycle has), without pruning. "Dice unchanged vs dense" is only
  meaningful against it.
- `transformer_off`: every MSA and FFN block removed (width 0, the residual stream passes
  through the layer), fine-tuned exactly as dense_long (same rounds, same recipe), so that the
  gap dense_long − transformer_off compares equal training. That gap is the headroom: how much
  of the accuracy the transformer carries on this data. Where it is small, every allocation of
  transformer widths looks lossless and methods cannot be ranked.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path

import pandas as pd
import torch

from varprune.core.atomic import atomic_path
from varprune.core.methods import CONTROLS as METHOD_CONTROLS
from varprune.engine.distill import load_teacher
from varprune.engine.train import LOG_COLUMNS, SplitFiles, TrainSettings, discard_state, load_split, train
from varprune.model.network import load_model
from varprune.pruning.surgery import remove_transformer_blocks

log = logging.getLogger(__name__)


def _provenance(kind: str, parent: str | os.PathLike, parent_provenance: dict, finetune: dict,
                splits_json: str | os.PathLike, **extra) -> dict:
    return {
        "kind": kind, "parent": str(parent),
        "config": {"finetune": finetune,
                   **{k: v for k, v in parent_provenance.get("config", {}).items()
                      if k in ("model", "preprocess", "train")}},
        "split": json.loads(Path(splits_json).read_text()),
        **extra,
    }


def fine_tune_rounds(kind: str, model: torch.nn.Module, spec, parent: str | os.PathLike,
                     parent_provenance: dict, splits_json: str | os.PathLike,
                     preprocessed: SplitFiles, finetune: dict, rounds: int,
                     out_model: str | os.PathLike, out_log: str | os.PathLike,
                     state_dir: str | os.PathLike, threads: int | None = None,
                     dense: str | os.PathLike | None = None) -> None:
    """Fine-tune `model` `rounds` times in a row, each round exactly as a pruning cycle's (with
    finetune.distill: from the dense model throughout, or from the model each round starts from,
    the first round's being `parent` before any change)."""
    if rounds < 1:
        raise ValueError(f"{kind} needs at least one fine-tuning round, got {rounds}")
    settings = TrainSettings.from_config(finetune)
    teacher = load_teacher(settings.distill, parent, dense)
    data = load_split(preprocessed)
    state = Path(state_dir)
    logs = []
    offset_epochs = offset_steps = 0
    for r in range(1, rounds + 1):
        last = r == rounds
        # Intermediate rounds live in the undeclared state folder; only the last writes the outputs.
        round_model = out_model if last else state / f"round{r}" / "model.pt"
        round_log = state / f"round{r}" / "train_log.csv"
        provenance = _provenance(kind, parent, parent_provenance, finetune, splits_json,
                                 rounds=rounds, round=r)
        log.info("%s: fine-tuning round %d of %d", kind, r, rounds)
        if r > 1 and teacher is not None and settings.distill.teacher == "parent":
            teacher = copy.deepcopy(model)
        result = train(model, spec, data["train"], data["val"], settings, round_model, round_log,
                       state / f"round{r}" / "state", provenance, threads, teacher=teacher)
        frame = pd.DataFrame(result.history)
        # One running epoch and step count over the rounds, as the report's curves expect.
        frame["epoch"] = frame["epoch"] + offset_epochs
        frame["step"] = frame["step"] + offset_steps
        offset_epochs, offset_steps = int(frame["epoch"].max()), int(frame["step"].max())
        logs.append(frame)
    with atomic_path(out_log) as tmp:
        pd.concat(logs, ignore_index=True)[LOG_COLUMNS].to_csv(tmp, index=False)


CONTROLS = tuple(METHOD_CONTROLS)  # one registry: varprune.core.methods


def train_control(kind: str, parent: str | os.PathLike, splits_json: str | os.PathLike,
                  preprocessed: SplitFiles, finetune: dict, rounds: int,
                  out_model: str | os.PathLike, out_log: str | os.PathLike,
                  state_dir: str | os.PathLike, threads: int | None = None, keep_state: bool = False,
                  dense: str | os.PathLike | None = None) -> None:
    """Fine-tune the dense model `rounds` times in a row (one round per pruning cycle); for
    `transformer_off`, first remove every MSA and FFN block. The resume state (with the
    intermediate rounds) is deleted once the outputs are written unless `keep_state`."""
    if kind not in CONTROLS:
        raise ValueError(f"unknown control {kind!r}; choose from {', '.join(CONTROLS)}")
    if threads:
        torch.set_num_threads(threads)
    model, spec, parent_provenance = load_model(parent)
    if kind == "transformer_off":
        spec = remove_transformer_blocks(model, spec)
    fine_tune_rounds(kind, model, spec, parent, parent_provenance, splits_json, preprocessed,
                     finetune, rounds, out_model, out_log, state_dir, threads, dense)
    discard_state(state_dir, keep_state)
