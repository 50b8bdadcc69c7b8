"""Significance criteria: a score for every prunable group, kept apart from the surgery.

Each criterion is an object with one method, `score(model, spec, batches) -> Scores`, giving
per layer a (heads, head_dim) tensor for MSA and an (ffn,) tensor for FFN (see groups.py for
what a group holds). Element-wise importances are summed over the group's weights and biases:
- `l1`: Σ|w|;  `l2`: sqrt(Σw²)  (magnitudes; no data needed).
- `taylor` (default): first-order Taylor estimate of the loss change when the group is
  removed, |Σ w·∂L/∂w| over the group, computed per calibration batch and summed over batches.
- `hessian`: Optimal Brain Damage with the diagonal Fisher approximation of the Hessian,
  ½ Σ w²·E[(∂L/∂w)²] over the group (mean over batches of the squared gradient).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from monai.losses import DiceCELoss
from torch import nn

from varprune.model.network import ModelSpec
from varprune.pruning.groups import (
    BLOCKS,
    Scores,
    channel_width,
    fold,
    fold_couplings,
    layer_modules,
    outer_groups,
)

Batch = tuple[torch.Tensor, torch.Tensor]


def _fold(model: nn.Module, spec: ModelSpec, element) -> Scores:
    """Apply `element(param) -> tensor of the same shape` and fold it into group scores: every
    MSA and FFN group, and the head stages' and embedding width's groups the model has."""
    scores: Scores = {}
    for index, (block, layer) in enumerate(zip(layer_modules(model), spec.layers, strict=True)):
        for kind in BLOCKS:
            if channel_width(layer, kind) == 0:
                continue  # a block pruned away (transformer_off): nothing to score
            per_channel = fold(block, kind, channel_width(layer, kind), element)
            scores[(index, kind)] = (per_channel.reshape(layer.heads, layer.head_dim) if kind == "msa"
                                     else per_channel)
    for key, (couplings, width) in outer_groups(spec).items():
        scores[key] = fold_couplings(model, couplings, width, element)
    return scores


def _grad(param: torch.Tensor) -> torch.Tensor:
    """The gradient, or zeros for a parameter the loss does not reach (MONAI's unused
    cross-attention LayerNorm lies on the embedding width)."""
    return param.grad if param.grad is not None else torch.zeros_like(param)


class Magnitude:
    """`l1` or `l2` magnitude of a group's weights."""

    def __init__(self, norm: str) -> None:
        if norm not in ("l1", "l2"):
            raise ValueError(f"unknown magnitude norm {norm!r}")
        self.norm = norm

    @torch.no_grad()
    def score(self, model: nn.Module, spec: ModelSpec, batches: Iterable[Batch] = ()) -> Scores:
        if self.norm == "l1":
            return _fold(model, spec, lambda p: p.detach().abs())
        squares = _fold(model, spec, lambda p: p.detach() ** 2)
        return {key: value.sqrt() for key, value in squares.items()}


class _GradientCriterion:
    """Shared loop: forward and backward on each calibration batch with the training loss."""

    def __init__(self) -> None:
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)

    def accumulate(self, model: nn.Module, spec: ModelSpec, grads: dict) -> Scores:
        raise NotImplementedError

    def score(self, model: nn.Module, spec: ModelSpec, batches: Iterable[Batch]) -> Scores:
        was_training = model.training
        model.eval()  # no dropout; the criterion measures the model as it predicts
        device = next(model.parameters()).device
        total: Scores | None = None
        count = 0
        for images, labels in batches:
            model.zero_grad(set_to_none=True)
            loss = self.loss(model(images.to(device)), labels.to(device))
            loss.backward()
            batch_scores = self.per_batch(model, spec)
            total = batch_scores if total is None else {k: total[k] + v for k, v in batch_scores.items()}
            count += 1
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        if total is None:
            raise ValueError("the criterion needs at least one calibration batch")
        return self.finish(total, count)

    def per_batch(self, model: nn.Module, spec: ModelSpec) -> Scores:
        raise NotImplementedError

    def finish(self, total: Scores, count: int) -> Scores:
        return total


class Taylor(_GradientCriterion):
    """|Σ w·∂L/∂w| per group and batch, summed over batches."""

    @torch.no_grad()
    def per_batch(self, model: nn.Module, spec: ModelSpec) -> Scores:
        signed = _fold(model, spec, lambda p: p.detach() * _grad(p))
        return {key: value.abs() for key, value in signed.items()}


class Hessian(_GradientCriterion):
    """½ Σ w²·mean(g²) per group (Optimal Brain Damage, diagonal Fisher)."""

    @torch.no_grad()
    def per_batch(self, model: nn.Module, spec: ModelSpec) -> Scores:
        return _fold(model, spec, lambda p: p.detach() ** 2 * _grad(p) ** 2)

    def finish(self, total: Scores, count: int) -> Scores:
        return {key: 0.5 * value / count for key, value in total.items()}


CRITERIA = ("taylor", "l1", "l2", "hessian")


def make_criterion(name: str):
    """The criterion object named in `pruning.criterion`."""
    if name == "taylor":
        return Taylor()
    if name == "hessian":
        return Hessian()
    if name in ("l1", "l2"):
        return Magnitude(name)
    raise ValueError(f"unknown significance criterion {name!r}; choose one of {', '.join(CRITERIA)}")
