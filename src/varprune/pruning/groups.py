"""Prunable channel groups of the transformer layers (UNETR or SETR): the one place that says
which weights go away together, and what they cost.

A group couples every parameter slice that must disappear at once (`COUPLINGS`):
- MSA head-dimension channel (head h, dim j) of a layer: channel c = h·d+j of the inner
  dimension, i.e. row c of q, of k and of v in `qkv` (three stacked copies of the inner axis,
  and their biases) and column c of `out_proj`. Removing q_j and k_j drops one term of every
  q·k dot product, removing v_j one output channel, which `out_proj` no longer reads.
- A whole head: all its head-dimension channels.
- FFN channel c: row c (and bias c) of `linear1` and column c of `linear2`.

Criteria fold element importances into group scores with `fold`, the surgery slices and masks
with `parameter_indices`; neither restates the coupling. Scores are stored per layer and block:
`msa` as a (heads, head_dim) tensor, `ffn` as (ffn,). The MAC model of a layer (`layer_macs`)
is what the rate solvers budget with; it counts the same matmuls as `torch.utils.flop_counter`
(tested against it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from varprune import macs
from varprune.model import LayerSpec, ModelSpec, transformer_layers

BLOCKS = ("msa", "ffn")
Scores = dict[tuple[int, str], torch.Tensor]


@dataclass(frozen=True)
class Coupling:
    """One parameter a channel group spans: its path below the transformer block, the axis its
    channels lie on (0: output rows, 1: input columns), and how many stacked copies of the
    channel axis it holds (q, k and v in `qkv`: 3)."""

    path: str
    axis: int
    copies: int = 1

    @property
    def module(self) -> str:
        return self.path.rsplit(".", 1)[0]

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[1]


COUPLINGS: dict[str, tuple[Coupling, ...]] = {
    "msa": (Coupling("attn.qkv.weight", 0, copies=3), Coupling("attn.qkv.bias", 0, copies=3),
            Coupling("attn.out_proj.weight", 1)),
    "ffn": (Coupling("mlp.linear1.weight", 0), Coupling("mlp.linear1.bias", 0),
            Coupling("mlp.linear2.weight", 1)),
}


def coupled_parameters(block: nn.Module, kind: str) -> list[tuple[Coupling, torch.Tensor]]:
    """The parameters a `kind` group spans in one transformer block (absent biases skipped)."""
    found = []
    for coupling in COUPLINGS[kind]:
        param = getattr(block.get_submodule(coupling.module), coupling.name)
        if param is not None:
            found.append((coupling, param))
    return found


def parameter_indices(coupling: Coupling, channels: torch.Tensor, width: int) -> torch.Tensor:
    """Indices along `coupling.axis` that hold the given channels (every stacked copy)."""
    return torch.cat([channels + copy * width for copy in range(coupling.copies)])


def fold(block: nn.Module, kind: str, width: int, element) -> torch.Tensor:
    """Per-channel sums of `element(param)` over every parameter slice of the group: (width,)."""
    total = None
    for coupling, param in coupled_parameters(block, kind):
        values = element(param)
        other = [d for d in range(values.dim()) if d != coupling.axis]
        per_index = values.sum(dim=other) if other else values
        part = per_index.reshape(coupling.copies, width).sum(dim=0)
        total = part if total is None else total + part
    return total


def channel_width(layer: LayerSpec, kind: str) -> int:
    """Channels of one block kind in a layer: the MSA inner dimension or the FFN width."""
    return layer.inner if kind == "msa" else layer.ffn


def msa_channel_macs(spec: ModelSpec) -> int:
    """MACs of one MSA head-dimension channel (varprune.macs)."""
    return macs.msa_channel_macs(spec.img_size, spec.patch, spec.hidden)


def ffn_channel_macs(spec: ModelSpec) -> int:
    """MACs of one FFN channel (varprune.macs)."""
    return macs.ffn_channel_macs(spec.img_size, spec.patch, spec.hidden)


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


def layer_modules(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks (attn = SABlock, mlp = MLPBlock) in depth order."""
    return transformer_layers(model)
