"""The segmenter, built from a spec that can differ per transformer layer.

Two architectures share MONAI's ViT backbone (`model.vit`, its `blocks` the transformer layers):
- `unetr`: MONAI's UNETR (12 layers, patch 16), whose convolutional decoder also reads the patch
  embeddings and a full-resolution convolution of the image;
- `setr`: SETR-PUP style: the tokens of the last layer (or of a few chosen layers) reshaped to
  the patch grid and upsampled by conv + x2 stages to the input size. No skip from the image and
  no convolutional encoder, so the prediction goes through the transformer.
MONAI builds identical layers. A pruned model has its own number of heads, head dimension and
FFN width in every layer, so the model is built dense and each layer's `attn` (SABlock) and
`mlp` (MLPBlock) is then resized to the spec. The spec travels in every checkpoint, so
`load_model` rebuilds any pruned model without the code that pruned it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from einops.layers.torch import Rearrange
from monai.networks.blocks.mlp import MLPBlock
from monai.networks.blocks.selfattention import SABlock
from monai.networks.nets import UNETR, ViT
from torch import nn

from varprune.model.spec import LayerSpec, ModelSpec
from varprune.model.widths import narrow_widths


class CheckpointError(Exception):
    """A checkpoint cannot be loaded; the message names the file and the problem."""


class AbsentBlock(nn.Module):
    """An MSA or FFN block pruned to width 0: it adds nothing, so the residual stream passes.

    TransformerBlock computes x + attn(norm1(x)) and x + mlp(norm2(x)); returning zeros keeps
    that code (and the export) unchanged and costs no MACs.
    """

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.zeros_like(x)


def resize_attention(attn: SABlock, spec: LayerSpec) -> None:
    """Give an SABlock `spec.heads` heads of `spec.head_dim` (fresh weights), keeping `spec.scale`."""
    hidden = attn.out_proj.out_features
    bias = attn.qkv.bias is not None
    attn.qkv = nn.Linear(hidden, 3 * spec.inner, bias=bias)
    attn.out_proj = nn.Linear(spec.inner, hidden)
    attn.num_heads = spec.heads
    attn.dim_head = spec.head_dim
    attn.inner_dim = spec.inner
    # The head count is baked into the rearrange at construction time: rebuild it.
    attn.input_rearrange = Rearrange("b h (qkv l d) -> qkv b l h d", qkv=3, l=spec.heads)
    attn.scale = spec.scale


def resize_mlp(mlp: MLPBlock, width: int) -> None:
    """Give an MLPBlock an FFN width of `width` (fresh weights)."""
    hidden = mlp.linear1.in_features
    mlp.linear1 = nn.Linear(hidden, width)
    mlp.linear2 = nn.Linear(width, hidden)


def transformer_layers(model: nn.Module) -> list[nn.Module]:
    """The TransformerBlocks of either segmenter, in depth order."""
    return list(model.vit.blocks)


class SETR(nn.Module):
    """SETR-PUP style segmenter: ViT tokens -> patch grid -> (conv, norm, ReLU, x2 upsampling)
    per stage -> 1x1 convolution to the classes.

    With `head_kernel` 1 neighbouring tokens mix only through the x2 interpolations (about two
    tokens per axis): every longer-range relation has to come from the transformer.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        d = spec.spatial_dims
        self.vit = ViT(
            in_channels=spec.in_channels, img_size=spec.img_size, patch_size=spec.patch,
            hidden_size=spec.hidden, mlp_dim=spec.ffn, num_layers=spec.num_layers,
            num_heads=spec.heads, proj_type="conv", classification=False, spatial_dims=d,
            qkv_bias=spec.qkv_bias,
        )
        self.grid = [side // spec.patch for side in spec.img_size]
        self.head_layers = [i % spec.num_layers for i in spec.head_layers]
        self.last = spec.num_layers - 1
        conv, norm = (nn.Conv2d, nn.InstanceNorm2d) if d == 2 else (nn.Conv3d, nn.InstanceNorm3d)
        mode = "bilinear" if d == 2 else "trilinear"
        stages: list[nn.Module] = []
        cin = spec.hidden * len(spec.head_layers)
        for cout in spec.head_channels:
            stages += [conv(cin, cout, spec.head_kernel, padding=spec.head_kernel // 2),
                       norm(cout, affine=True), nn.ReLU(inplace=True),
                       nn.Upsample(scale_factor=2.0, mode=mode, align_corners=False)]
            cin = cout
        self.head = nn.Sequential(*stages)
        self.out = conv(cin, spec.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last, hidden_states = self.vit(x)
        # The last layer is read after the ViT's final LayerNorm; earlier ones as they leave it.
        features = [last if i == self.last else hidden_states[i] for i in self.head_layers]
        tokens = torch.cat(features, dim=-1) if len(features) > 1 else features[0]
        grid = tokens.transpose(1, 2).unflatten(2, self.grid)
        return self.out(self.head(grid))


def build_model(spec: ModelSpec) -> nn.Module:
    """Build the segmenter with the per-layer widths of `spec` (weights freshly initialised)."""
    model = SETR(spec) if spec.arch == "setr" else _build_unetr(spec)
    dense_dim = spec.hidden // spec.heads
    for block, layer in zip(transformer_layers(model), spec.layers, strict=True):
        if layer.inner == 0:
            block.attn = AbsentBlock()
        elif layer.heads != spec.heads or layer.head_dim != dense_dim:
            resize_attention(block.attn, layer)
        else:
            block.attn.scale = layer.scale
        if layer.ffn == 0:
            block.mlp = AbsentBlock()
        elif layer.ffn != spec.ffn:
            resize_mlp(block.mlp, layer.ffn)
    narrow_outer(model, spec)
    return model


def narrow_outer(model: nn.Module, spec: ModelSpec) -> None:
    """Give a dense-built model the spec's residual width and decoder group widths (the first
    channels of each; weights are loaded afterwards)."""
    dense = spec.with_widths(spec.hidden, spec.dense_stages)
    pairs = enumerate(zip(spec.stages, spec.dense_stages, strict=True))
    decoder = {g: torch.arange(now) for g, (now, full) in pairs if now != full}
    embed = torch.arange(spec.width) if spec.width != spec.hidden else None
    if decoder or embed is not None:
        narrow_widths(model, dense, decoder, embed)


def _build_unetr(spec: ModelSpec) -> UNETR:
    return UNETR(
        in_channels=spec.in_channels,
        out_channels=spec.out_channels,
        img_size=spec.img_size,
        feature_size=spec.feature_size,
        hidden_size=spec.hidden,
        mlp_dim=spec.ffn,
        num_heads=spec.heads,
        proj_type="conv",
        norm_name="instance",
        spatial_dims=spec.spatial_dims,
        qkv_bias=spec.qkv_bias,
    )


def count_parameters(model: nn.Module) -> int:
    """Exact number of parameters (every tensor, also those used outside of modules' hooks)."""
    return sum(p.numel() for p in model.parameters())


def transformer_parameters(model: nn.Module) -> int:
    """Parameters of every layer's MSA and FFN: the part transformer pruning can remove."""
    return sum(count_parameters(block.attn) + count_parameters(block.mlp)
               for block in transformer_layers(model))


def describe_arch(spec: ModelSpec) -> str:
    """One line naming the architecture and its fixed sizes."""
    shape = "x".join(map(str, spec.input_shape(1)))
    if spec.arch == "setr":
        head = "->".join(map(str, spec.head_channels))
        return (f"SETR-PUP {spec.spatial_dims}D, input {shape}, patch {spec.patch}, {spec.num_layers} "
                f"layers, hidden {spec.hidden}, head {head} ({spec.head_kernel}x{spec.head_kernel} "
                f"convolutions) reading layers {spec.head_layers}, {spec.out_channels} classes")
    return (f"UNETR {spec.spatial_dims}D, input {shape}, hidden {spec.hidden}, feature size "
            f"{spec.feature_size}, {spec.out_channels} classes")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, spec: ModelSpec, provenance: dict) -> None:
    """Write spec, weights and provenance in one file, atomically."""
    from varprune.core.atomic import atomic_path

    payload = {
        "format": "varprune-checkpoint-1",
        "spec": spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "provenance": provenance,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint's raw content safely (`weights_only=True`) and check its shape."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable varprune checkpoint ({err})") from err
    if not isinstance(payload, dict) or "spec" not in payload or "state_dict" not in payload:
        raise CheckpointError(f"{path}: not a varprune checkpoint (no spec or weights inside)")
    return payload


# Far above any segmenter this project builds (ViT-H has hidden 1280, FFN 5120, 32 layers), far
# below what would exhaust a laptop while a spec is merely being checked.
SPEC_LIMITS = {"embed": 16384, "input_size": 4096, "depth": 4096, "in_channels": 64, "out_channels": 1024,
               "hidden": 16384, "ffn": 131072, "heads": 1024, "feature_size": 4096, "patch": 1024,
               "num_layers": 256}
LAYER_LIMITS = {"heads": 1024, "head_dim": 4096, "ffn": 131072}


def check_spec_bounds(data: dict) -> None:
    """Refuse a spec whose sizes no real model has, before anything is built from it (a tiny
    file that declares a huge model must not take the machine's memory)."""
    if not isinstance(data, dict):
        raise ValueError("the spec is not a mapping")
    for key, limit in SPEC_LIMITS.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or not 0 < value <= limit):
            raise ValueError(f"{key} = {value!r} is outside 1..{limit}")
    for key in ("layers", "head_channels", "head_layers"):
        value = data.get(key, [])
        if not isinstance(value, list) or len(value) > SPEC_LIMITS["num_layers"]:
            raise ValueError(f"{key} must be a list of at most {SPEC_LIMITS['num_layers']} entries")
    pruned = data.get("head_widths")
    if pruned is not None and (not isinstance(pruned, list) or len(pruned) > SPEC_LIMITS["num_layers"]):
        raise ValueError("head_widths must be a list (one width per decoder group) or null")
    widths = data.get("head_channels", []) + (pruned or [])
    if any(not isinstance(c, int) or not 0 < c <= SPEC_LIMITS["hidden"] for c in widths):
        raise ValueError(f"head_channels {data.get('head_channels')} or head_widths {pruned} outside "
                         f"1..{SPEC_LIMITS['hidden']}")
    for k, layer in enumerate(data.get("layers", [])):
        for key, limit in LAYER_LIMITS.items():
            value = layer.get(key) if isinstance(layer, dict) else getattr(layer, key, None)
            if not isinstance(value, int) or not 0 <= value <= limit:
                raise ValueError(f"layers[{k}].{key} = {value!r} is outside 0..{limit}")


def check_weights_fit(spec: ModelSpec, state_dict: dict, path: str | os.PathLike) -> None:
    """Compare the tensors the spec needs (built on the meta device: no memory) with those present."""
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path}: the weights are not a mapping of tensors")
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build_model(spec).state_dict().items()}
    except (IndexError, ValueError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{path}: the spec does not build a model ({err})") from err
    present = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    missing = sorted(set(expected) - set(present))
    unexpected = sorted(set(present) - set(expected))
    wrong = [k for k in expected if k in present and expected[k] != present[k]]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}" if unexpected
                  else f"{wrong[0]} is {present[wrong[0]]}, the spec needs {expected[wrong[0]]}")
        declared, found = sum(map(_numel, expected.values())), sum(map(_numel, present.values()))
        raise CheckpointError(f"{path}: the weights do not match the spec ({declared:,} values declared, "
                              f"{found:,} present): {detail}")


def _numel(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def load_model(path: str | os.PathLike) -> tuple[nn.Module, ModelSpec, dict]:
    """Rebuild the model of any checkpoint, dense or pruned; return (model, spec, provenance).

    The spec is checked against sane bounds and against the tensors present before any real
    module is allocated."""
    payload = read_checkpoint(path)
    try:
        check_spec_bounds(payload["spec"])
        spec = ModelSpec.from_dict(payload["spec"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid model spec ({err})") from err
    check_weights_fit(spec, payload["state_dict"], path)
    model = build_model(spec)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1:3]
        detail = " ".join(first).strip()
        raise CheckpointError(f"{path}: the weights do not match the spec: {detail}") from err
    model.eval()
    return model, spec, payload.get("provenance", {})
