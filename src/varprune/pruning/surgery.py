"""Physical removal of channel groups from MONAI's SABlock and MLPBlock.

The surgery takes the groups to remove (a `LayerPlan` per layer) and never decides which:
criteria and rate sequences decide elsewhere, as in Torch-Pruning. Weights are sliced into new,
smaller `nn.Linear`s, the SABlock's `num_heads`, `dim_head`, `inner_dim` and `input_rearrange`
are updated, and its softmax `scale` is kept from the dense model (a head that lost dims is
not rescaled, so the remaining channels compute exactly what they did before).

`mask_plan` zeroes the same groups in place without removing them; the equivalence test uses
it to show that removal changes nothing but the shapes.
"""

from __future__ import annotations

import torch
from einops.layers.torch import Rearrange
from torch import nn

from varprune.model import AbsentBlock, LayerSpec, ModelSpec
from varprune.pruning.groups import (
    BLOCKS,
    LayerPlan,
    channel_width,
    check_plan,
    coupled_parameters,
    layer_modules,
    parameter_indices,
)


def _linear(source: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Linear:
    """A new Linear holding the selected output rows / input columns of `source`."""
    weight = source.weight.detach()
    if rows is not None:
        weight = weight[rows]
    if cols is not None:
        weight = weight[:, cols]
    bias = source.bias is not None
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias:
            new.bias.copy_(source.bias.detach() if rows is None else source.bias.detach()[rows])
    return new


def _shrink_linears(block: nn.Module, kind: str, kept: torch.Tensor, width: int) -> None:
    """Replace every Linear the group spans by one holding only the kept channels' slices."""
    slices: dict[str, dict[int, torch.Tensor]] = {}
    for coupling, _ in coupled_parameters(block, kind):
        slices.setdefault(coupling.module, {})[coupling.axis] = parameter_indices(coupling, kept, width)
    for module_path, by_axis in slices.items():
        parent_path, _, name = module_path.rpartition(".")
        parent = block.get_submodule(parent_path) if parent_path else block
        setattr(parent, name, _linear(getattr(parent, name), by_axis.get(0), by_axis.get(1)))


def prune_attention(attn_block: nn.Module, layer: LayerSpec, plan: LayerPlan) -> None:
    """Remove heads and head dims from the SABlock of a transformer block in place."""
    if not plan.heads and not plan.dims:
        return
    after = plan.widths_after(layer)
    _shrink_linears(attn_block, "msa", plan.kept_channels(layer, "msa"), layer.inner)
    attn = attn_block.attn
    attn.num_heads = after.heads
    attn.dim_head = after.head_dim
    attn.inner_dim = after.inner
    attn.input_rearrange = Rearrange("b h (qkv l d) -> qkv b l h d", qkv=3, l=after.heads)
    attn.scale = layer.scale


def prune_mlp(block: nn.Module, layer: LayerSpec, plan: LayerPlan) -> None:
    """Remove FFN channels from the MLPBlock of a transformer block in place."""
    if plan.ffn:
        _shrink_linears(block, "ffn", plan.kept_channels(layer, "ffn"), layer.ffn)


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
