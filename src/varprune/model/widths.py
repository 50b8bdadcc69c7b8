"""Channel axes shared by several parameters, and how to narrow them (build and surgery alike).

A `Coupling` names one parameter slice that a channel owns. These kinds of channel exist
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
  and variance: removing a channel changes the function (fine-tuning repairs it). UNETR's
  stream is the same inside the ViT, read by four transposed convolutions instead of the head
  (`unetr_embedding_couplings`; its `proj_feat` reshape takes the new width too).
- a channel of one of UNETR's convolutional groups (`unetr_couplings`, the groups of
  `varprune.model.spec.UNETR_GROUPS`): the producing convolution's output channel (a transposed
  convolution's weight is (in, out, ...)), the non-affine InstanceNorm's size, an identity
  residual's both ends, and every reader's input column; a skip concatenated after the
  upsampled channels is read at an offset equal to the upsampled width, which is why groups
  are narrowed one after the other (`narrow_widths`).

`narrow` keeps given channels of every coupled parameter and updates the modules' sizes.
`varprune.model.network.build_model` narrows a freshly built dense model to a pruned spec's widths, the
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
    axis its channels lie on, how many stacked copies of the channel axis it holds (q, k and v
    in `qkv`: 3; the head's input when it reads several layers: one per layer), and where on
    that axis the group starts (`offset`: a concatenated skip sits after the upsampled channels;
    indices outside the group's span belong to other groups and are left alone).

    A path may also name an integer size attribute of a module without weights (the
    `num_features` of MONAI's non-affine InstanceNorm): `narrow` updates it, nothing else reads it."""

    path: str
    axis: int
    copies: int = 1
    offset: int = 0

    @property
    def module(self) -> str:
        return self.path.rsplit(".", 1)[0]

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[1]

    def indices(self, channels: torch.Tensor, width: int) -> torch.Tensor:
        """Indices along `axis` that hold the given channels (every stacked copy)."""
        return torch.cat([channels + self.offset + copy * width for copy in range(self.copies)])

    def span(self, width: int) -> tuple[int, int]:
        """(start, length) of the group's indices along `axis`."""
        return self.offset, self.copies * width


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
    """Keep only channels `kept` (of `width`) in every coupled parameter below `root` (and the
    indices of other groups on the same axis, before and after the group's span)."""
    for coupling, param in parameters_of(root, couplings):
        start, length = coupling.span(width)
        device = param.device
        index = torch.cat([torch.arange(start, device=device), coupling.indices(kept.to(device), width),
                           torch.arange(start + length, param.shape[coupling.axis], device=device)])
        module = root.get_submodule(coupling.module)
        setattr(module, coupling.name,
                nn.Parameter(param.detach().index_select(coupling.axis, index).clone(),
                             requires_grad=param.requires_grad))
        if coupling.name == "weight":
            _sync_sizes(module)
    for coupling in couplings:
        try:
            module = root.get_submodule(coupling.module)
        except AttributeError:
            continue
        size = getattr(module, coupling.name, None)
        if isinstance(size, int) and not isinstance(size, bool):
            setattr(module, coupling.name, size - (width - len(kept)) * coupling.copies)


def head_couplings(stages: int, stage: int) -> tuple[Coupling, ...]:
    """The parameters channel c of SETR head stage `stage` spans (model-level paths)."""
    conv, norm = f"head.{4 * stage}", f"head.{4 * stage + 1}"
    reader = f"head.{4 * (stage + 1)}" if stage + 1 < stages else "out"
    return (Coupling(f"{conv}.weight", 0), Coupling(f"{conv}.bias", 0), Coupling(f"{norm}.weight", 0),
            Coupling(f"{norm}.bias", 0), Coupling(f"{reader}.weight", 1))


def _vit_couplings(num_layers: int) -> list[Coupling]:
    """The residual stream inside MONAI's ViT: patch and position embedding, every block's
    LayerNorms and the projections that read or write the stream, the final LayerNorm."""
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
    return couplings + [Coupling("vit.norm.weight", 0), Coupling("vit.norm.bias", 0)]


def embedding_couplings(num_layers: int, head_inputs: int) -> tuple[Coupling, ...]:
    """The parameters channel c of the residual stream spans in a SETR (model-level paths)."""
    return (*_vit_couplings(num_layers), Coupling("head.0.weight", 1, copies=head_inputs))


# UNETR reads the residual stream (reshaped to the patch grid) with four transposed convolutions.
UNETR_STREAM_READERS = ("encoder2.transp_conv_init", "encoder3.transp_conv_init", "encoder4.transp_conv_init",
                        "decoder5.transp_conv")


def unetr_embedding_couplings(num_layers: int) -> tuple[Coupling, ...]:
    """The parameters channel c of the residual stream spans in a UNETR (model-level paths)."""
    readers = (Coupling(f"{reader}.conv.weight", 0) for reader in UNETR_STREAM_READERS)
    return (*_vit_couplings(num_layers), *readers)


def _res_mid(block: str) -> list[Coupling]:
    """Inside a UnetResBlock: conv1's output channel, its norm, conv2's input."""
    return [Coupling(f"{block}.conv1.conv.weight", 0), Coupling(f"{block}.norm1.num_features", 0),
            Coupling(f"{block}.conv2.conv.weight", 1)]


def _res_out(block: str) -> list[Coupling]:
    """A UnetResBlock's output channel: conv2 and the 1x1 projection (where the block has one),
    with their norms."""
    return [Coupling(f"{block}.conv2.conv.weight", 0), Coupling(f"{block}.norm2.num_features", 0),
            Coupling(f"{block}.conv3.conv.weight", 0), Coupling(f"{block}.norm3.num_features", 0)]


def _res_in(block: str, offset: int = 0) -> list[Coupling]:
    """A UnetResBlock's input channel: conv1 and the 1x1 projection read it (at `offset` when
    the input is a concatenation)."""
    return [Coupling(f"{block}.conv1.conv.weight", 1, offset=offset),
            Coupling(f"{block}.conv3.conv.weight", 1, offset=offset)]


def _transposed_out(conv: str) -> list[Coupling]:
    """A ConvTranspose's output channel (its weight is (in, out, ...))."""
    return [Coupling(f"{conv}.conv.weight", 1), Coupling(f"{conv}.conv.bias", 0)]


def unetr_couplings(widths: dict[str, int], group: str) -> tuple[Coupling, ...]:
    """The parameters channel c of a UNETR decoder group (`varprune.model.spec.UNETR_GROUPS`) spans, given
    every group's current width (a skip's columns in a concatenated input start after the
    upsampled channels: their offset is the `decX.up` width)."""
    decoders = {"dec5": "decoder5", "dec4": "decoder4", "dec3": "decoder3", "dec2": "decoder2"}
    skip_of = {"enc4": "dec5", "enc3.0": "dec4", "enc2.1": "dec3", "enc1": "dec2"}
    following = {"dec5": "decoder4.transp_conv", "dec4": "decoder3.transp_conv",
                 "dec3": "decoder2.transp_conv"}
    chained = {"enc2.0": ("encoder2.blocks.0", "encoder2.blocks.1.0"), "enc2.1": ("encoder2.blocks.1", None),
               "enc3.0": ("encoder3.blocks.0", None)}
    stage, _, part = group.partition(".")
    couplings: list[Coupling] = []
    if group in skip_of:  # read by a decoder's residual block after its upsampled channels
        reader = skip_of[group]
        couplings += _res_in(f"{decoders[reader]}.conv_block", offset=widths[f"{reader}.up"])
    if group == "enc1.mid":
        couplings += _res_mid("encoder1.layer")
    elif group == "enc1":
        couplings += _res_out("encoder1.layer")
    elif group in ("enc2.up", "enc3.up"):
        encoder = f"encoder{stage[-1]}"
        couplings += [*_transposed_out(f"{encoder}.transp_conv_init"),
                      Coupling(f"{encoder}.blocks.0.0.conv.weight", 0)]
    elif group.endswith(".mid") and stage.startswith("enc"):
        couplings += _res_mid(f"{chained[group[:-4]][0]}.1")
    elif group in chained:  # transposed conv -> residual block with identity shortcut
        blocks, reader = chained[group]
        couplings += [*_transposed_out(f"{blocks}.0"), *_res_in(f"{blocks}.1"), *_res_out(f"{blocks}.1")]
        if reader:
            couplings.append(Coupling(f"{reader}.conv.weight", 0))
    elif group == "enc4":
        couplings += _transposed_out("encoder4.transp_conv_init")
    elif part == "up":
        couplings += [*_transposed_out(f"{decoders[stage]}.transp_conv"),
                      *_res_in(f"{decoders[stage]}.conv_block")]
    elif part == "mid":
        couplings += _res_mid(f"{decoders[stage]}.conv_block")
    elif group in decoders:
        couplings += _res_out(f"{decoders[group]}.conv_block")
        couplings.append(Coupling(f"{following[group]}.conv.weight", 0) if group in following
                         else Coupling("out.conv.conv.weight", 1))
    else:
        raise KeyError(f"unknown UNETR decoder group {group!r}")
    return tuple(couplings)


def decoder_couplings(spec, group: int) -> tuple[Coupling, ...]:
    """The couplings of decoder channel group `group` of a `ModelSpec` at its current widths."""
    if spec.arch == "setr":
        return head_couplings(len(spec.head_channels), group)
    return unetr_couplings(dict(zip(spec.stage_names, spec.stages, strict=True)), spec.stage_names[group])


def stream_couplings(spec) -> tuple[Coupling, ...]:
    """The couplings of the residual stream (embedding width) of a `ModelSpec`."""
    if spec.arch == "setr":
        return embedding_couplings(spec.num_layers, len(spec.head_layers))
    return unetr_embedding_couplings(spec.num_layers)


def narrow_widths(model: nn.Module, spec, decoder: dict[int, torch.Tensor], embed: torch.Tensor | None):
    """Keep channels `embed` of the residual stream and `decoder[g]` of decoder group g, one
    group after the other (a skip's offset depends on another group's width at that moment);
    return the spec with the new widths. Used by `build_model` (first channels) and the
    surgery (the chosen ones)."""
    if embed is not None:
        narrow(model, stream_couplings(spec), embed, spec.width)
        if hasattr(model, "proj_view_shape"):  # UNETR reshapes the stream with its width
            model.proj_view_shape[-1] = model.hidden_size = len(embed)
        spec = spec.with_widths(len(embed), spec.stages)
    for group, kept in sorted(decoder.items()):
        narrow(model, decoder_couplings(spec, group), kept, spec.stages[group])
        stages = spec.stages
        stages[group] = len(kept)
        spec = spec.with_widths(spec.width, stages)
    return spec
