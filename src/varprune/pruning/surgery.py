"""Physical removal of channel groups from MONAI's SABlock and MLPBlock.

The surgery takes the groups to remove (a `LayerPlan` per layer) and never decides which:
criteria and rate sequences decide elsewhere, as in Torch-Pruning. Which slices a channel owns
comes from `groups.COUPLINGS`; how a block of given widths looks comes from
`model.resize_attention` / `model.resize_mlp`, the same functions that rebuild a pruned
checkpoint from its spec (MONAI's SABlock constructor refuses head counts that do not divide
the hidden size, so blocks are resized, not rebuilt). The softmax `scale` is kept from the
dense model (a head that lost dims is not rescaled, so the remaining channels compute exactly
what they did before).

Outside the blocks (`Plans.outer`: decoder channel groups, the embedding width) the surgery
keeps the chosen channels with `varprune.model.widths.narrow_widths`, which is also how a pruned spec
is rebuilt.

`mask_plan` zeroes the same groups in place without removing them; the equivalence test uses
it to show that removal changes nothing but the shapes. A LayerNorm over a narrower residual
stream normalises over the channels it has, so masking the embedding width also makes every
LayerNorm normalise over the kept channels (`KeptChannelsLayerNorm`).
"""

from __future__ import annotations

import torch
from torch import nn

from varprune.model.network import AbsentBlock, LayerSpec, ModelSpec, resize_attention, resize_mlp
from varprune.model.widths import narrow_widths, parameters_of
from varprune.pruning.groups import (
    BLOCKS,
    LayerPlan,
    OuterPlan,
    channel_width,
    check_outer_plan,
    check_plan,
    coupled_parameters,
    layer_modules,
    outer_groups,
)


def _resize_keeping(block: nn.Module, kind: str, kept: torch.Tensor, width: int, resize) -> None:
    """Resize the block's `kind` part with `resize()` (the model's own resizing, as when a pruned
    checkpoint is rebuilt), then fill it with the old weights: the kept channels' slices of
    every coupled parameter, every other parameter unchanged."""
    old = {name: param.detach().clone() for name, param in block.named_parameters()}
    device = next(iter(old.values())).device
    slices = {c.path: (c.axis, c.indices(kept.to(device), width))
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
    """Remove the planned groups from every layer (and, for `Plans`, outside the blocks);
    return the spec of the smaller model."""
    outer = getattr(plans, "outer", OuterPlan())
    check_outer_plan(spec, outer)
    layers = []
    for block, layer, plan in zip(layer_modules(model), spec.layers, plans, strict=True):
        check_plan(layer, plan)
        prune_attention(block, layer, plan)
        prune_mlp(block, layer, plan)
        layers.append(plan.widths_after(layer))
    new_spec = spec.with_layers(layers)
    decoder = {g: _kept(channels, width) for g, (channels, width)
               in enumerate(zip(outer.head, spec.stages, strict=False)) if channels}
    embed = _kept(outer.embed, spec.width) if outer.embed else None
    return narrow_widths(model, new_spec, decoder, embed)


def _outer_removed(spec: ModelSpec, outer: OuterPlan) -> dict:
    """(couplings, width, channels removed) per outer group the plan touches."""
    wanted = {(s, "head"): channels for s, channels in enumerate(outer.head)}
    wanted[(0, "embed")] = outer.embed
    return {key: (couplings, width, wanted[key])
            for key, (couplings, width) in outer_groups(spec).items() if wanted.get(key)}


def _kept(removed: list[int], width: int) -> torch.Tensor:
    gone = set(removed)
    return torch.tensor([c for c in range(width) if c not in gone], dtype=torch.long)


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


class KeptChannelsLayerNorm(nn.Module):
    """A LayerNorm that normalises over the kept channels only and outputs 0 at the others:
    what the narrower LayerNorm of the pruned model computes, at the dense width."""

    def __init__(self, norm: nn.LayerNorm, kept: torch.Tensor) -> None:
        super().__init__()
        self.norm, self.kept = norm, kept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        part = x.index_select(-1, self.kept)
        normed = nn.functional.layer_norm(part, (len(self.kept),), self.norm.weight[self.kept],
                                          self.norm.bias[self.kept], self.norm.eps)
        return torch.zeros_like(x).index_copy(-1, self.kept, normed)


@torch.no_grad()
def mask_plan(model: nn.Module, spec: ModelSpec, plans: list[LayerPlan]) -> None:
    """Zero the planned groups in place (same function as removing them; shapes unchanged)."""
    for block, layer, plan in zip(layer_modules(model), spec.layers, plans, strict=True):
        check_plan(layer, plan)
        for kind in BLOCKS:
            removed = torch.tensor(plan.removed_channels(layer, kind), dtype=torch.long)
            width = channel_width(layer, kind)
            for coupling, param in coupled_parameters(block, kind):
                param.index_fill_(coupling.axis, coupling.indices(removed, width), 0)
    outer = getattr(plans, "outer", OuterPlan())
    check_outer_plan(spec, outer)
    for (_, kind), (couplings, width, channels) in _outer_removed(spec, outer).items():
        removed = torch.tensor(channels, dtype=torch.long)
        for coupling, param in parameters_of(model, couplings):
            param.index_fill_(coupling.axis, coupling.indices(removed, width), 0)
        if kind == "embed":
            kept = _kept(channels, width)
            for name, module in list(model.named_modules()):
                if isinstance(module, nn.LayerNorm):
                    parent, _, child = name.rpartition(".")
                    setattr(model.get_submodule(parent), child, KeptChannelsLayerNorm(module, kept))
