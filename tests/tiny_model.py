"""Tiny models and volumes for the model, training and cost tests (seconds on a CPU)."""

from __future__ import annotations

import numpy as np

from varprune.data.datasets import Volume
from varprune.model.network import LayerSpec, ModelSpec

TINY_MODEL = dict(input_size=32, hidden=32, ffn=64, heads=2, feature_size=4)
# Per architecture, what a tiny spec sets (every key the tests depend on, not ModelSpec's defaults):
# unetr with MONAI's patch 16; setr with patch 8 (three x2 head stages of 3x3 convolutions) reading
# an intermediate layer too, so the concatenated head input is covered.
ARCHS = {"unetr": dict(arch="unetr", patch=16),
         "setr": dict(arch="setr", patch=8, head_channels=[8, 6, 4], head_kernel=3, head_layers=[5, -1])}


def tiny_spec(arch: str = "unetr", **changes) -> ModelSpec:
    return ModelSpec(**{**TINY_MODEL, **ARCHS[arch], **changes})


def pruned_spec(arch: str = "unetr") -> ModelSpec:
    """A tiny spec whose layers all differ (as after pruning), keeping the dense softmax scale."""
    dense = tiny_spec(arch)
    scale = dense.layers[0].scale
    layers = [LayerSpec(heads=1 + i % 2, head_dim=4 + i, ffn=8 + 4 * i, scale=scale) for i in range(12)]
    return dense.with_layers(layers)


def disc_volume(case: str, seed: int, slices: int = 6, size: int = 32) -> Volume:
    """A bright disc (the 'liver') of random centre and radius on a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = rng.normal(0.2, 0.05, (slices, size, size)).astype(np.float32)
    label = np.zeros((slices, size, size), np.uint8)
    for s in range(slices):
        if s == 0:
            continue  # one slice without liver, as in real scans
        cy, cx = rng.integers(10, size - 10, 2)
        r = rng.integers(4, 9)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        label[s][inside] = 1
        image[s][inside] += 0.5
    grid = {"spacing": np.array([2.0, 2.0, 4.0])}
    return Volume(case, np.clip(image, 0, 1), label, grid)
