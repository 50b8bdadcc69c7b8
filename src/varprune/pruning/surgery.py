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
from varprune.pruning.groups import LayerPlan, check_plan, layer_modules


def _kept(total: int, removed: list[int]) -> torch.Tensor:
    drop = set(removed)
    return torch.tensor([i for i in range(total) if i not in drop], dtype=torch.long)


def _inner_kept(layer: LayerSpec, plan: LayerPlan) -> torch.Tensor:
    """Indices (head·d + dim) of the q/k/v channels that stay, in head order."""
    kept = []
    for head in range(layer.heads):
        if head in plan.heads:
            continue
        removed = set(plan.dims.get(head, []))
        kept += [head * layer.head_dim + d for d in range(layer.head_dim) if d not in removed]
    return torch.tensor(kept, dtype=torch.long)


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


def prune_attention(attn: nn.Module, layer: LayerSpec, plan: LayerPlan) -> None:
    """Remove heads and head dims from an SABlock in place."""
    if not plan.heads and not plan.dims:
        return
    after = plan.widths_after(layer)
    inner = _inner_kept(layer, plan)
    rows = torch.cat([inner + part * layer.inner for part in range(3)])
    attn.qkv = _linear(attn.qkv, rows, None)
    attn.out_proj = _linear(attn.out_proj, None, inner)
    attn.num_heads = after.heads
    attn.dim_head = after.head_dim
    attn.inner_dim = after.inner
    attn.input_rearrange = Rearrange("b h (qkv l d) -> qkv b l h d", qkv=3, l=after.heads)
    attn.scale = layer.scale


def prune_mlp(mlp: nn.Module, layer: LayerSpec, plan: LayerPlan) -> None:
    """Remove FFN channels from an MLPBlock in place."""
    if not plan.ffn:
        return
    kept = _kept(layer.ffn, plan.ffn)
    mlp.linear1 = _linear(mlp.linear1, kept, None)
    mlp.linear2 = _linear(mlp.linear2, None, kept)


def apply_plan(model: nn.Module, spec: ModelSpec, plans: list[LayerPlan]) -> ModelSpec:
    """Remove the planned groups from every layer; return the spec of the smaller model."""
    layers = []
    for block, layer, plan in zip(layer_modules(model), spec.layers, plans, strict=True):
        check_plan(layer, plan)
        prune_attention(block.attn, layer, plan)
        prune_mlp(block.mlp, layer, plan)
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
        inner = _inner_kept(layer, plan)
        dropped = _kept(layer.inner, inner.tolist())
        for part in range(3):
            block.attn.qkv.weight[dropped + part * layer.inner] = 0
            if block.attn.qkv.bias is not None:
                block.attn.qkv.bias[dropped + part * layer.inner] = 0
        block.attn.out_proj.weight[:, dropped] = 0
        ffn = torch.tensor(plan.ffn, dtype=torch.long)
        block.mlp.linear1.weight[ffn] = 0
        block.mlp.linear1.bias[ffn] = 0
        block.mlp.linear2.weight[:, ffn] = 0
