"""Prunable channel groups of the transformer layers (UNETR or SETR): which weights go away
together, and what they cost.

A group couples every parameter that must disappear at once:
- MSA head-dimension channel (head h, dim j) of a layer: row h·d+j of q, of k and of v in
  `qkv` (and their biases) and column h·d+j of `out_proj`. Removing q_j and k_j drops one term
  of every q·k dot product, removing v_j one output channel, which `out_proj` no longer reads.
- A whole head: all its head-dimension channels.
- FFN channel c: row c (and bias c) of `linear1` and column c of `linear2`.

Scores are stored per layer and block: `msa` as a (heads, head_dim) tensor, `ffn` as (ffn,).
The MAC model of a layer (`layer_macs`) is what the rate solvers budget with; it counts the
same matmuls as `torch.utils.flop_counter` (tested against it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from varprune import macs
from varprune.model import LayerSpec, ModelSpec, transformer_layers

BLOCKS = ("msa", "ffn")
Scores = dict[tuple[int, str], torch.Tensor]


def tokens(spec: ModelSpec) -> int:
    """Number of patch tokens the transformer sees (neither segmenter has a class token)."""
    return macs.tokens(spec.img_size, spec.patch)


def msa_channel_macs(spec: ModelSpec) -> int:
    """MACs of one MSA head-dimension channel: q, k, v rows, out_proj column, q·kᵀ and attn·v."""
    n, h = tokens(spec), spec.hidden
    return 4 * n * h + 2 * n * n


def ffn_channel_macs(spec: ModelSpec) -> int:
    """MACs of one FFN channel: a row of linear1 and a column of linear2."""
    return 2 * tokens(spec) * spec.hidden


def layer_macs(spec: ModelSpec, layer: LayerSpec) -> int:
    """MACs of one transformer layer's matmuls (varprune.macs, in terms of a spec)."""
    return macs.layer_macs(spec.img_size, spec.patch, spec.hidden, layer.inner, layer.ffn)


def transformer_macs(spec: ModelSpec) -> int:
    """MACs of every layer's MSA and FFN matmuls: the part transformer pruning can remove."""
    return sum(layer_macs(spec, layer) for layer in spec.layers)


@dataclass
class LayerPlan:
    """What to remove from one layer: whole heads, then the same number of dims in every
    remaining head (`dims[h]` lists the dims removed from head h), and FFN channels."""

    heads: list[int]
    dims: dict[int, list[int]]
    ffn: list[int]

    @staticmethod
    def empty() -> LayerPlan:
        return LayerPlan([], {}, [])

    def head_dims_removed(self) -> int:
        counts = {len(v) for v in self.dims.values()}
        if len(counts) > 1:
            raise ValueError(f"every head must lose the same number of dims, got {sorted(counts)}")
        return counts.pop() if counts else 0

    def widths_after(self, layer: LayerSpec) -> LayerSpec:
        """The layer's spec once the plan is applied (the softmax scale is kept)."""
        return LayerSpec(heads=layer.heads - len(self.heads),
                         head_dim=layer.head_dim - self.head_dims_removed(),
                         ffn=layer.ffn - len(self.ffn), scale=layer.scale)


def check_plan(layer: LayerSpec, plan: LayerPlan) -> None:
    """Refuse a plan that would remove a channel twice, an index out of range, or everything."""
    if len(set(plan.heads)) != len(plan.heads) or any(not 0 <= h < layer.heads for h in plan.heads):
        raise ValueError(f"bad heads to remove {plan.heads} for {layer.heads} heads")
    kept_heads = [h for h in range(layer.heads) if h not in plan.heads]
    if plan.dims and sorted(plan.dims) != kept_heads:
        raise ValueError("dims must be given for every kept head, and only for those")
    for head, dims in plan.dims.items():
        if len(set(dims)) != len(dims) or any(not 0 <= d < layer.head_dim for d in dims):
            raise ValueError(f"bad dims to remove {dims} for head {head} of dim {layer.head_dim}")
    if len(set(plan.ffn)) != len(plan.ffn) or any(not 0 <= c < layer.ffn for c in plan.ffn):
        raise ValueError("bad FFN channels to remove")
    after = plan.widths_after(layer)
    if after.heads < 1 or after.head_dim < 1 or after.ffn < 1:
        raise ValueError(f"the plan leaves an empty layer: {after}")


def layer_modules(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks (attn = SABlock, mlp = MLPBlock) in depth order."""
    return transformer_layers(model)
