"""What a segmenter is, as data: the dense architecture and each transformer layer's widths.

Plain dataclasses without torch, so that the workflow can check a config at parse time with the
same rules a job applies (`ModelSpec.__post_init__`), and the budget arithmetic
(`varprune.pruning.budget`) runs anywhere. `varprune.model.network` builds networks from them; every
checkpoint carries its spec, so a pruned model rebuilds without the code that pruned it.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace

ARCHS = ("unetr", "setr")
UNETR_LAYERS = 12  # fixed in MONAI's UNETR (skips from layers 3, 6 and 9)
UNETR_PATCH = 16  # fixed in MONAI's UNETR
# UNETR's prunable channel groups outside the transformer (pruning.scope decoder), in the order
# the model computes them, each with its dense width as a multiple of model.feature_size. `X.up`
# is the output of a transposed convolution that a residual block (or a concatenation) reads,
# `X.mid` the inside of a residual block (conv1 -> norm -> conv2), `X` a block's output (for the
# encoders' chained blocks `enc2.0`, `enc2.1`, `enc3.0`: the transposed convolution's output,
# which the identity residual carries through). `varprune.model.widths.unetr_couplings` says which
# slices each group owns.
UNETR_GROUPS: tuple[tuple[str, int], ...] = (
    ("enc1.mid", 1), ("enc1", 1),
    ("enc2.up", 2), ("enc2.0.mid", 2), ("enc2.0", 2), ("enc2.1.mid", 2), ("enc2.1", 2),
    ("enc3.up", 4), ("enc3.0.mid", 4), ("enc3.0", 4), ("enc4", 8),
    ("dec5.up", 8), ("dec5.mid", 8), ("dec5", 8), ("dec4.up", 4), ("dec4.mid", 4), ("dec4", 4),
    ("dec3.up", 2), ("dec3.mid", 2), ("dec3", 2), ("dec2.up", 1), ("dec2.mid", 1), ("dec2", 1),
)


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


# What a checkpoint written before a key existed meant by it: the first checkpoints were UNETRs
# with these widths and had no `arch`, `patch` or SETR head keys. Read only when a saved spec lacks
# the key (ModelSpec.from_dict), so that old checkpoints load as they were written.
LEGACY_SPEC: dict = {
    "arch": "unetr", "spatial_dims": 2, "input_size": 128, "depth": 16, "in_channels": 1, "out_channels": 2,
    "hidden": 384, "ffn": 1536, "heads": 6, "feature_size": 8, "qkv_bias": False, "patch": 16,
    "num_layers": 12, "head_channels": [64, 32, 16, 16], "head_kernel": 3, "head_layers": [-1],
}


@dataclass
class ModelSpec:
    """Everything needed to build the network, dense or pruned.

    The defaults are the schema's (config/schema.yaml `model`, with preprocess.input_size;
    tests/test_defaults.py checks it); a saved spec missing a key reads it from LEGACY_SPEC.
    """

    arch: str = "setr"
    spatial_dims: int = 2
    input_size: int = 128
    depth: int = 16  # input depth (slices) of a 3D model; unused in 2D
    in_channels: int = 1
    out_channels: int = 2
    hidden: int = 192
    ffn: int = 768
    heads: int = 6
    feature_size: int = 8  # unetr: decoder feature size
    qkv_bias: bool = False
    patch: int = 8  # side of a patch token (unetr: 16 only)
    num_layers: int = 12  # transformer layers (unetr: 12 only)
    head_channels: list[int] = field(default_factory=lambda: [32, 16, 16])  # setr: per x2 stage
    head_kernel: int = 1  # setr: convolution kernel of the head's stages (1 or 3)
    head_layers: list[int] = field(default_factory=lambda: [-1])  # setr: layers whose tokens it reads
    layers: list[LayerSpec] = field(default_factory=list)
    # Pruned widths outside the transformer blocks (pruning.scope decoder, embedding, all); None = dense.
    embed: int | None = None  # width of the residual stream (the dense one is `hidden`)
    # decoder channel groups: setr per head stage, unetr per UNETR_GROUPS (dense: `dense_stages`)
    head_widths: list[int] | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"model.arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"model.spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.arch == "unetr" and (self.patch != UNETR_PATCH or self.num_layers != UNETR_LAYERS):
            raise ValueError(f"model.arch unetr: MONAI's UNETR has patch {UNETR_PATCH} and {UNETR_LAYERS} "
                             f"layers (got model.patch {self.patch}, model.num_layers {self.num_layers}); "
                             f"use arch setr")
        if self.arch == "setr":
            self._check_setr()
        if self.input_size % self.patch or (self.spatial_dims == 3 and self.depth % self.patch):
            raise ValueError(f"preprocess.input_size {self.input_size} (and model.depth in 3D) must be a "
                             f"multiple of model.patch {self.patch}")
        if self.hidden % self.heads:
            raise ValueError(f"model.hidden ({self.hidden}) must be divisible by model.heads ({self.heads})")
        if not self.layers:
            head_dim = self.hidden // self.heads
            self.layers = [
                LayerSpec(self.heads, head_dim, self.ffn, head_dim**-0.5) for _ in range(self.num_layers)
            ]
        self.layers = [LayerSpec(**ls) if isinstance(ls, dict) else ls for ls in self.layers]
        if len(self.layers) != self.num_layers:
            raise ValueError(f"the spec has {self.num_layers} layers but lists {len(self.layers)}")
        self._check_pruned_widths()

    def _check_pruned_widths(self) -> None:
        if self.embed is not None and not 1 <= self.embed <= self.hidden:
            raise ValueError(f"embed {self.embed} must lie in 1..hidden ({self.hidden})")
        if self.head_widths is not None and (
                len(self.head_widths) != len(self.dense_stages)
                or any(not 1 <= w <= c for w, c in zip(self.head_widths, self.dense_stages, strict=True))):
            raise ValueError(f"head_widths {self.head_widths} must give 1..dense width per decoder group "
                             f"(dense {self.dense_stages})")

    def _check_setr(self) -> None:
        stages = self.patch.bit_length() - 1
        if self.patch < 2 or 2 ** stages != self.patch:
            raise ValueError(f"model.patch must be a power of 2 for setr (one x2 stage per factor), "
                             f"got {self.patch}")
        if self.input_size // self.patch < 2:
            raise ValueError(f"preprocess.input_size: setr needs at least 2 tokens along each in-plane "
                             f"axis (input {self.input_size}, patch {self.patch}): the head normalises "
                             f"over the grid")
        if len(self.head_channels) != stages or min(self.head_channels, default=1) < 1:
            raise ValueError(f"model.head_channels needs one positive width per x2 stage: {stages} "
                             f"for patch {self.patch}, got {self.head_channels}")
        if self.head_kernel not in (1, 3):
            raise ValueError(f"model.head_kernel must be 1 or 3, got {self.head_kernel}")
        if not self.head_layers or any(not -self.num_layers <= i < self.num_layers
                                       for i in self.head_layers):
            raise ValueError(f"model.head_layers must list layers in [-{self.num_layers}, "
                             f"{self.num_layers - 1}], got {self.head_layers}")

    @property
    def width(self) -> int:
        """The residual stream's width now (`hidden` unless pruned)."""
        return self.hidden if self.embed is None else self.embed

    @property
    def dense_stages(self) -> list[int]:
        """The decoder's prunable channel groups at their dense widths: SETR's head stages
        (`head_channels`), UNETR's `UNETR_GROUPS`."""
        if self.arch == "setr":
            return list(self.head_channels)
        return [factor * self.feature_size for _, factor in UNETR_GROUPS]

    @property
    def stage_names(self) -> list[str]:
        """A name per decoder channel group (report rows, `varprune inspect`)."""
        if self.arch == "setr":
            return [f"stage{s + 1}" for s in range(len(self.head_channels))]
        return [name for name, _ in UNETR_GROUPS]

    @property
    def stages(self) -> list[int]:
        """The decoder channel groups' widths now (`dense_stages` unless pruned)."""
        return self.dense_stages if self.head_widths is None else list(self.head_widths)

    def dense(self) -> ModelSpec:
        """The dense model this spec was pruned from."""
        return replace(self, layers=[], embed=None, head_widths=None)

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
        """A saved spec (checkpoint, JSON); keys it predates read as LEGACY_SPEC."""
        return cls(**{**copy.deepcopy(LEGACY_SPEC), **data})

    @classmethod
    def from_config(cls, model_cfg: dict, input_size: int) -> ModelSpec:
        """A dense spec from the `model` config slice and the preprocess grid size."""
        keys = {"arch", "spatial_dims", "depth", "hidden", "ffn", "heads", "feature_size", "qkv_bias",
                "patch", "num_layers", "head_channels", "head_kernel", "head_layers"}
        return cls(input_size=input_size, **{k: v for k, v in model_cfg.items() if k in keys})

    def with_layers(self, layers: list[LayerSpec]) -> ModelSpec:
        return replace(self, layers=[replace(ls) for ls in layers])

    def with_widths(self, embed: int, head_widths: list[int]) -> ModelSpec:
        """The same spec with the residual and decoder widths given (None where they stay dense)."""
        return replace(self, layers=[replace(ls) for ls in self.layers],
                       embed=None if embed == self.hidden else embed,
                       head_widths=(None if list(head_widths) == self.dense_stages
                                    else list(head_widths)))
