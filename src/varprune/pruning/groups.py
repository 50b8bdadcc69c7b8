"""Prunable channel groups of the transformer layers (UNETR or SETR): the one place that says
which weights go away together, and what they cost.

A group couples every parameter slice that must disappear at once (`COUPLINGS`):
- MSA head-dimension channel (head h, dim j) of a layer: channel c = h·d+j of the inner
  dimension, i.e. row c of q, of k and of v in `qkv` (three stacked copies of the inner axis,
  and their biases) and column c of `out_proj`. Removing q_j and k_j drops one term of every
  q·k dot product, removing v_j one output channel, which `out_proj` no longer reads.
- A whole head: all its head-dimension channels.
- FFN channel c: row c (and bias c) of `linear1` and column c of `linear2`.

Outside the blocks (`pruning.scope` decoder / embedding / all), `outer_groups` lists the channel
groups of the decoder (SETR's head stages, UNETR's convolutional groups) and of the embedding
width, whose couplings live in `varprune.model.widths` (the model narrows itself with them when it is
built from a pruned spec).

Criteria fold element importances into group scores with `fold`, the surgery slices and masks
with `Coupling.indices`; neither restates the coupling. Scores are stored per layer and block:
`msa` as a (heads, head_dim) tensor, `ffn` as (ffn,); per decoder group g as (g, "head") and the
embedding width as (0, "embed"), each (width,). The MAC model of a layer (`layer_macs`)
is what the rate solvers budget with; it counts the same matmuls as `torch.utils.flop_counter`
(tested against it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from varprune.model import macs
from varprune.model.network import LayerSpec, ModelSpec, transformer_layers
from varprune.model.widths import Coupling, decoder_couplings, parameters_of, stream_couplings

BLOCKS = ("msa", "ffn")
Scores = dict[tuple[int, str], torch.Tensor]


COUPLINGS: dict[str, tuple[Coupling, ...]] = {
    "msa": (Coupling("attn.qkv.weight", 0, copies=3), Coupling("attn.qkv.bias", 0, copies=3),
            Coupling("attn.out_proj.weight", 1)),
    "ffn": (Coupling("mlp.linear1.weight", 0), Coupling("mlp.linear1.bias", 0),
            Coupling("mlp.linear2.weight", 1)),
}


def coupled_parameters(block: nn.Module, kind: str) -> list[tuple[Coupling, torch.Tensor]]:
    """The parameters a `kind` group spans in one transformer block (absent biases skipped)."""
    return parameters_of(block, COUPLINGS[kind])


def outer_groups(spec: ModelSpec) -> dict[tuple[int, str], tuple[tuple[Coupling, ...], int]]:
    """Channel groups outside the transformer blocks at the spec's current widths: (couplings,
    width) per decoder group (SETR's head stages, UNETR's `UNETR_GROUPS`; block "head") and for
    the embedding width."""
    groups = {(g, "head"): (decoder_couplings(spec, g), width) for g, width in enumerate(spec.stages)}
    groups[(0, "embed")] = (stream_couplings(spec), spec.width)
    return groups


def fold(block: nn.Module, kind: str, width: int, element) -> torch.Tensor:
    """Per-channel sums of `element(param)` over every parameter slice of the group: (width,)."""
    return fold_couplings(block, COUPLINGS[kind], width, element)


def fold_couplings(root: nn.Module, couplings, width: int, element) -> torch.Tensor:
    """`fold` for any couplings below `root`."""
    total = None
    for coupling, param in parameters_of(root, couplings):
        values = element(param).narrow(coupling.axis, *coupling.span(width))
        other = [d for d in range(values.dim()) if d != coupling.axis]
        per_index = values.sum(dim=other) if other else values
        part = per_index.reshape(coupling.copies, width).sum(dim=0)
        total = part if total is None else total + part
    return total


def channel_width(layer: LayerSpec, kind: str) -> int:
    """Channels of one block kind in a layer: the MSA inner dimension or the FFN width."""
    return layer.inner if kind == "msa" else layer.ffn


def msa_channel_macs(spec: ModelSpec) -> int:
    """MACs of one MSA head-dimension channel (varprune.model.macs)."""
    return macs.msa_channel_macs(spec.img_size, spec.patch, spec.width)


def ffn_channel_macs(spec: ModelSpec) -> int:
    """MACs of one FFN channel (varprune.model.macs)."""
    return macs.ffn_channel_macs(spec.img_size, spec.patch, spec.width)


def layer_macs(spec: ModelSpec, layer: LayerSpec) -> int:
    """MACs of one transformer layer's matmuls (varprune.model.macs, in terms of a spec)."""
    return macs.layer_macs(spec.img_size, spec.patch, spec.width, layer.inner, layer.ffn)


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

    def removed_channels(self, layer: LayerSpec, kind: str) -> list[int]:
        """Channel indices (head·d + dim for MSA) this plan removes from one block."""
        if kind == "ffn":
            return sorted(self.ffn)
        return sorted(head * layer.head_dim + d
                      for head in range(layer.heads)
                      for d in (range(layer.head_dim) if head in self.heads else self.dims.get(head, [])))

    def kept_channels(self, layer: LayerSpec, kind: str) -> torch.Tensor:
        """Channel indices that stay, in order."""
        removed = set(self.removed_channels(layer, kind))
        return torch.tensor([c for c in range(channel_width(layer, kind)) if c not in removed],
                            dtype=torch.long)

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


@dataclass
class OuterPlan:
    """What to remove outside the transformer blocks: channels per decoder group (`head[g]`: SETR
    head stage or UNETR group) and channels of the residual stream (`embed`)."""

    head: list[list[int]] = field(default_factory=list)
    embed: list[int] = field(default_factory=list)


class Plans(list):
    """Per-layer `LayerPlan`s, plus `outer` (an `OuterPlan`; empty unless the scope says so)."""

    def __init__(self, layers=(), outer: OuterPlan | None = None) -> None:
        super().__init__(layers)
        self.outer = outer if outer is not None else OuterPlan()


def check_outer_plan(spec: ModelSpec, plan: OuterPlan) -> None:
    """Refuse removing a channel twice, an index out of range, or a whole stage or stream."""
    widths = [("decoder group", w, plan.head[s] if s < len(plan.head) else [])
              for s, w in enumerate(spec.stages)]
    for what, width, removed in [*widths, ("embedding width", spec.width, plan.embed)]:
        if len(set(removed)) != len(removed) or any(not 0 <= c < width for c in removed):
            raise ValueError(f"bad {what} channels to remove for width {width}")
        if removed and len(removed) >= width:
            raise ValueError(f"the plan removes every channel of a {what}")


def layer_modules(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks (attn = SABlock, mlp = MLPBlock) in depth order."""
    return transformer_layers(model)
