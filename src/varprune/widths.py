"""Channel axes shared by several parameters, and how to narrow them (build and surgery alike).

A `Coupling` names one parameter slice that a channel owns. Three kinds of channel exist
outside the transformer blocks' MSA and FFN (those are in `varprune.pruning.groups`):
- a SETR head stage's channel c (`head_couplings`): row c of the stage's convolution and its
  bias, c of its InstanceNorm's weight and bias, and input column c of the next convolution
  (the next stage's or the output's). InstanceNorm works per channel, so the other channels
  compute exactly what they did.
- a channel c of the residual stream, the embedding width (`embedding_couplings`): row c of
  the patch embedding and its bias, c of the position embedding, of every LayerNorm, the input
  column c of every qkv and linear1, the output row c of every out_proj and linear2, and input
  column c of the head's first convolution once per layer the head reads (the head
  concatenates their tokens). A LayerNorm over fewer channels normalises with their own mean
  and variance: removing a channel changes the function (fine-tuning repairs it).

`narrow` keeps given channels of every coupled parameter and updates the modules' sizes.
`varprune.model.build_model` narrows a freshly built dense model to a pruned spec's widths, the
surgery narrows a trained model keeping the chosen channels: one code path for both, so a pruned
checkpoint always rebuilds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Coupling:
    """One parameter a channel group spans: its path (below the module it is read from), the
    axis its channels lie on, and how many stacked copies of the channel axis it holds (q, k
    and v in `qkv`: 3; the head's input when it reads several layers: one per layer)."""

    path: str
    axis: int
    copies: int = 1

    @property
    def module(self) -> str:
        return self.path.rsplit(".", 1)[0]

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[1]

    def indices(self, channels: torch.Tensor, width: int) -> torch.Tensor:
        """Indices along `axis` that hold the given channels (every stacked copy)."""
        return torch.cat([channels + copy * width for copy in range(self.copies)])


def parameters_of(root: nn.Module, couplings) -> list[tuple[Coupling, nn.Parameter]]:
    """The parameters the couplings name below `root`; absent ones (no bias, a block pruned
    away) are skipped."""
    found = []
    for coupling in couplings:
        try:
            module = root.get_submodule(coupling.module)
        except AttributeError:
            continue
        param = getattr(module, coupling.name, None)
        if isinstance(param, torch.Tensor):
            found.append((coupling, param))
    return found


def _sync_sizes(module: nn.Module) -> None:
    """Make a module's size attributes match its (narrowed) weight."""
    weight = module.weight
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = weight.shape
    elif isinstance(module, nn.modules.conv._ConvNd):
        module.out_channels, module.in_channels = weight.shape[0], weight.shape[1] * module.groups
    elif isinstance(module, nn.LayerNorm):
        module.normalized_shape = (weight.shape[0],)
    elif isinstance(module, nn.modules.instancenorm._InstanceNorm):
        module.num_features = weight.shape[0]


@torch.no_grad()
def narrow(root: nn.Module, couplings, kept: torch.Tensor, width: int) -> None:
    """Keep only channels `kept` (of `width`) in every coupled parameter below `root`."""
    for coupling, param in parameters_of(root, couplings):
        index = coupling.indices(kept.to(param.device), width)
        module = root.get_submodule(coupling.module)
        setattr(module, coupling.name,
                nn.Parameter(param.detach().index_select(coupling.axis, index).clone(),
                             requires_grad=param.requires_grad))
        if coupling.name == "weight":
            _sync_sizes(module)


def head_couplings(stages: int, stage: int) -> tuple[Coupling, ...]:
    """The parameters channel c of SETR head stage `stage` spans (model-level paths)."""
    conv, norm = f"head.{4 * stage}", f"head.{4 * stage + 1}"
    reader = f"head.{4 * (stage + 1)}" if stage + 1 < stages else "out"
    return (Coupling(f"{conv}.weight", 0), Coupling(f"{conv}.bias", 0), Coupling(f"{norm}.weight", 0),
            Coupling(f"{norm}.bias", 0), Coupling(f"{reader}.weight", 1))


def embedding_couplings(num_layers: int, head_inputs: int) -> tuple[Coupling, ...]:
    """The parameters channel c of the residual stream spans in a SETR (model-level paths)."""
    couplings = [Coupling("vit.patch_embedding.patch_embeddings.weight", 0),
                 Coupling("vit.patch_embedding.patch_embeddings.bias", 0),
                 Coupling("vit.patch_embedding.position_embeddings", 2)]
    for i in range(num_layers):
        block = f"vit.blocks.{i}"
        for norm in ("norm1", "norm2", "norm_cross_attn"):
            couplings += [Coupling(f"{block}.{norm}.weight", 0), Coupling(f"{block}.{norm}.bias", 0)]
        couplings += [Coupling(f"{block}.attn.qkv.weight", 1), Coupling(f"{block}.attn.out_proj.weight", 0),
                      Coupling(f"{block}.attn.out_proj.bias", 0), Coupling(f"{block}.mlp.linear1.weight", 1),
                      Coupling(f"{block}.mlp.linear2.weight", 0), Coupling(f"{block}.mlp.linear2.bias", 0)]
    couplings += [Coupling("vit.norm.weight", 0), Coupling("vit.norm.bias", 0),
                  Coupling("head.0.weight", 1, copies=head_inputs)]
    return tuple(couplings)
