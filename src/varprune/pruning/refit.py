"""Least-squares refit of the output convolution once channels it reads are pruned.

Scores per channel cannot see that channels back each other up. On the default UNETR the
output convolution reads 8 channels of which only 2 vote for the liver; every criterion ranks
those 2 lowest (each alone costs ≤ 0.01 Dice), and removing both takes validation Dice from
0.90 to 0, which fine-tuning does not repair (docs/scopes.md). The output convolution
is linear per voxel (1x1, with a bias), so after the surgery its weights over the kept channels
are refitted to reproduce, on the calibration batches, the logits the model gave before the
cycle: ordinary least squares, the reconstruction step of ThiNet and of He et al. (2017,
"Channel pruning for accelerating very deep neural networks"). It runs only when the plan
removes channels the output reads (`pruning.scope` decoder or all), for every method alike;
the other groups feed InstanceNorms, which absorb what a removed channel shifts.

The statistics are the normal equations (AᵀA and AᵀY, A = [inputs, 1]) summed over every
voxel of every calibration batch in float64: a few hundred numbers, whatever the volume size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from varprune.model.network import ModelSpec


def output_layer(model: nn.Module) -> nn.Conv2d | nn.Conv3d:
    """The 1x1 convolution that turns the decoder's last channels into class logits."""
    out = model.out
    return out.conv.conv if hasattr(out, "conv") else out  # UNETR: UnetOutBlock; SETR: the conv


def output_group(spec: ModelSpec) -> int:
    """The decoder channel group the output convolution reads (its index in `spec.stages`)."""
    return len(spec.stages) - 1  # SETR's last head stage; UNETR's `dec2` (last of UNETR_GROUPS)


@dataclass
class NormalEquations:
    """AᵀA and AᵀY of the output layer's inputs A = [x, 1] and outputs Y over every voxel seen."""

    gram: torch.Tensor
    cross: torch.Tensor


@torch.no_grad()
def output_statistics(model: nn.Module, batches) -> NormalEquations:
    """Run the calibration batches and sum the output layer's normal equations."""
    layer = output_layer(model)
    device = layer.weight.device
    sums: dict[str, torch.Tensor] = {}

    def record(_module, inputs, output) -> None:
        x = inputs[0].detach().movedim(1, -1).reshape(-1, inputs[0].shape[1]).double()
        y = output.detach().movedim(1, -1).reshape(-1, output.shape[1]).double()
        a = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], dim=1)
        gram, cross = (a.T @ a).cpu(), (a.T @ y).cpu()
        sums["gram"] = sums["gram"] + gram if "gram" in sums else gram
        sums["cross"] = sums["cross"] + cross if "cross" in sums else cross

    was_training = model.training
    model.eval()
    handle = layer.register_forward_hook(record)
    try:
        for images, _ in batches:
            model(images.to(device))
    finally:
        handle.remove()
        model.train(was_training)
    if not sums:
        raise ValueError("the output refit needs at least one calibration batch")
    return NormalEquations(sums["gram"], sums["cross"])


@torch.no_grad()
def refit_output(model: nn.Module, kept: torch.Tensor, stats: NormalEquations) -> None:
    """Give the (already narrowed) output layer the least-squares weights and bias over the
    kept input channels `kept` (indices before the surgery)."""
    layer = output_layer(model)
    rows = torch.cat([kept.cpu(), torch.tensor([stats.gram.shape[0] - 1])])  # + the constant column
    solution = torch.linalg.lstsq(stats.gram[rows][:, rows], stats.cross[rows]).solution  # (k + 1, out)
    weight = solution[:-1].T.reshape(layer.weight.shape)
    layer.weight.copy_(weight.to(layer.weight.dtype))
    layer.bias.copy_(solution[-1].to(layer.bias.dtype))
