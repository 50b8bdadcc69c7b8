"""Physical removal of channel groups from MONAI's SABlock and MLPBlock.

The surgery takes the groups to remove (a `LayerPlan` per layer) and never decides which:
criteria and rate sequences decide elsewhere, as in Torch-Pruning. Which slices a channel owns
comes from `groups.COUPLINGS`; how a block of given widths looks comes from
`model.resize_attention` / `model.resize_mlp`, the same functions that rebuild a pruned
checkpoint from its spec (MONAI's SABlock constructor refuses head counts that do not divide
the hidden size, so blocks are resized, not rebuilt). The softmax `scale` is kept from the
dense model (a head that lost dims is not rescaled, so the remaining channels compute exactly
what they did before).

`mask_plan` zeroes the same groups in place without removing them; the equivalence test uses
it to show that removal changes nothing but the shapes.
"""

from __future__ import annotations

import torch
from torch import nn

from varprune.model import AbsentBlock, LayerSpec, ModelSpec, resize_attention, resize_mlp
from varprune.pruning.groups import (
    BLOCKS,
    LayerPlan,
    channel_width,
    check_plan,
    coupled_parameters,
    layer_modules,
    parameter_indices,
)


def _resize_keeping(block: nn.Module, kind: str, kept: torch.Tensor, width: int, resize) -> None:
    """Resize the block's `kind` part with `resize()` (the model's own resizing, as when a pruned
    checkpoint is rebuilt), then fill it with the old weights: the kept channels' slices of
    every coupled parameter, every other parameter unchanged."""
    old = {name: param.detach().clone() for name, param in block.named_parameters()}
    device = next(iter(old.values())).device
    slices = {c.path: (c.axis, parameter_indices(c, kept.to(device), width))
              for c, _ in coupled_parameters(block, kind)}
    resize()
    block.to(device)
    with torch.no_grad():
        for name, param in block.named_parameters():
            value = old[name]
            if name in slices:
                axis, index = slices[name]
                value = value.index_select(axis, index)
            param.copy_(value)


def prune_attention(block: nn.Module, layer: LayerSpec, plan: LayerPlan) -> None:
    """Remove heads and head dims from the SABlock of a transformer block in place."""
    if plan.heads or plan.dims:
        _resize_keeping(block, "msa", plan.kept_channels(layer, "msa"), layer.inner,
                        lambda: resize_attention(block.attn, plan.widths_after(layer)))


def prune_mlp(block: nn.Module, layer: LayerSpec, plan: LayerPlan) -> None:
    """Remove FFN channels from the MLPBlock of a transformer block in place."""
    if plan.ffn:
        _resize_keeping(block, "ffn", plan.kept_channels(layer, "ffn"), layer.ffn,
                        lambda: resize_mlp(block.mlp, layer.ffn - len(plan.ffn)))


def apply_plan(model: nn.Module, spec: ModelSpec, plans: list[LayerPlan]) -> ModelSpec:
    """Remove the planned groups from every layer; return the spec of the smaller model."""
    layers = []
    for block, layer, plan in zip(layer_modules(model), spec.layers, plans, strict=True):
        check_plan(layer, plan)
        prune_attention(block, layer, plan)
        prune_mlp(block, layer, plan)
        layers.append(plan.widths_after(layer))
    return spec.with_layers(layers)


def remove_transformer_blocks(model: nn.Module, spec: ModelSpec) -> ModelSpec:
    """Remove every MSA and FFN block (width 0 in every layer); return the new spec.

    What stays: patch embedding, position embedding, the layer norms and everything after the
    transformer. It is the `transformer_off` control, not a pruning step, so no plan is involved.
    """
    for block in layer_modules(model):
        block.attn = AbsentBlock()
        block.mlp = AbsentBlock()
    return spec.with_layers([LayerSpec(heads=0, head_dim=0, ffn=0, scale=layer.scale)
                             for layer in spec.layers])


@torch.no_grad()
def mask_plan(model: nn.Module, spec: ModelSpec, plans: list[LayerPlan]) -> None:
    """Zero the planned groups in place (same function as removing them; shapes unchanged)."""
    for block, layer, plan in zip(layer_modules(model), spec.layers, plans, strict=True):
        check_plan(layer, plan)
        for kind in BLOCKS:
            removed = torch.tensor(plan.removed_channels(layer, kind), dtype=torch.long)
            width = channel_width(layer, kind)
            for coupling, param in coupled_parameters(block, kind):
                param.index_fill_(coupling.axis, parameter_indices(coupling, removed, width), 0)
