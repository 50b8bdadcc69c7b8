"""The segmenter: MONAI UNETR built from a spec that can differ per transformer layer.

UNETR builds twelve identical transformer layers. A pruned model has its own number of heads,
head dimension and FFN width in every layer, so the model is built dense and each layer's
`attn` (SABlock) and `mlp` (MLPBlock) is then resized to the spec. The spec travels in every
checkpoint, so `load_model` rebuilds any pruned model without the code that pruned it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from einops.layers.torch import Rearrange
from monai.networks.blocks.mlp import MLPBlock
from monai.networks.blocks.selfattention import SABlock
from monai.networks.nets import UNETR
from torch import nn

UNETR_LAYERS = 12  # fixed in MONAI's UNETR (skips from layers 3, 6 and 9)
PATCH = 16  # fixed in MONAI's UNETR


class CheckpointError(Exception):
    """A checkpoint cannot be loaded; the message names the file and the problem."""


@dataclass
class LayerSpec:
    """Widths of one transformer layer; `scale` is the softmax scale it was trained with.

    A width of 0 (no heads, or no FFN channels) means the block is absent: the layer passes its
    residual stream on unchanged (the `transformer_off` control).
    """

    heads: int
    head_dim: int
    ffn: int
    scale: float

    @property
    def inner(self) -> int:
        return self.heads * self.head_dim


@dataclass
class ModelSpec:
    """Everything needed to build the network, dense or pruned."""

    spatial_dims: int = 2
    input_size: int = 128
    depth: int = 16  # input depth (slices) of a 3D model; unused in 2D
    in_channels: int = 1
    out_channels: int = 2
    hidden: int = 384
    ffn: int = 1536
    heads: int = 6
    feature_size: int = 8
    qkv_bias: bool = False
    layers: list[LayerSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"model.spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.input_size % PATCH or (self.spatial_dims == 3 and self.depth % PATCH):
            raise ValueError(f"model input sizes must be multiples of the patch size {PATCH}")
        if self.hidden % self.heads:
            raise ValueError(f"model.hidden ({self.hidden}) must be divisible by model.heads ({self.heads})")
        if not self.layers:
            head_dim = self.hidden // self.heads
            self.layers = [
                LayerSpec(self.heads, head_dim, self.ffn, head_dim**-0.5) for _ in range(UNETR_LAYERS)
            ]
        self.layers = [LayerSpec(**ls) if isinstance(ls, dict) else ls for ls in self.layers]
        if len(self.layers) != UNETR_LAYERS:
            raise ValueError(f"a UNETR spec needs {UNETR_LAYERS} layers, got {len(self.layers)}")

    @property
    def img_size(self) -> tuple[int, ...]:
        if self.spatial_dims == 2:
            return (self.input_size, self.input_size)
        return (self.depth, self.input_size, self.input_size)

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        return (batch, self.in_channels, *self.img_size)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        return cls(**data)

    @classmethod
    def from_config(cls, model_cfg: dict, input_size: int) -> ModelSpec:
        """A dense spec from the `model` config slice and the preprocess grid size."""
        keys = {"spatial_dims", "depth", "hidden", "ffn", "heads", "feature_size", "qkv_bias"}
        return cls(input_size=input_size, **{k: v for k, v in model_cfg.items() if k in keys})

    def with_layers(self, layers: list[LayerSpec]) -> ModelSpec:
        return replace(self, layers=[replace(ls) for ls in layers])


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


def transformer_layers(model: UNETR) -> list[nn.Module]:
    """The twelve TransformerBlocks of a UNETR, in depth order."""
    return list(model.vit.blocks)


def build_model(spec: ModelSpec) -> UNETR:
    """Build a UNETR with the per-layer widths of `spec` (weights freshly initialised)."""
    model = UNETR(
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
    return model


def count_parameters(model: nn.Module) -> int:
    """Exact number of parameters (every tensor, also those used outside of modules' hooks)."""
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(path: str | os.PathLike, model: nn.Module, spec: ModelSpec, provenance: dict) -> None:
    """Write spec, weights and provenance in one file, atomically."""
    from varprune.atomic import atomic_path

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


def load_model(path: str | os.PathLike) -> tuple[UNETR, ModelSpec, dict]:
    """Rebuild the model of any checkpoint, dense or pruned; return (model, spec, provenance)."""
    payload = read_checkpoint(path)
    try:
        spec = ModelSpec.from_dict(payload["spec"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid model spec ({err})") from err
    model = build_model(spec)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1:3]
        detail = " ".join(first).strip()
        raise CheckpointError(f"{path}: the weights do not match the spec: {detail}") from err
    model.eval()
    return model, spec, payload.get("provenance", {})
