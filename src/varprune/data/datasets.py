"""Preprocessed cases as MONAI datasets: 2D slices or 3D slabs, with the training augmentations.

Augmentations are MONAI dictionary transforms. Their random state is reset from the seed at the
start of every epoch (`reseed`), so epoch e draws the same augmentations whether the run went
straight through or was resumed after epoch e-1; that is what makes resume exact without
saving random-number-generator states.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from monai.data import Dataset
from monai.transforms import (
    Compose,
    RandAffined,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    SpatialPadd,
)

from varprune.data.preprocess import load_npz


@dataclass(frozen=True)
class AugmentSpec:
    """Random augmentations of the training data (the `train.augment` config slice).

    Flips default to off: the liver lies on the patient's right, a left-right flip makes
    anatomically impossible images, and the model would have to learn both sides.
    """

    prob: float = 0.5
    rotate_deg: float = 10.0
    scale: float = 0.1
    flip_prob: float = 0.0
    intensity_scale: float = 0.1
    intensity_shift: float = 0.05

    @classmethod
    def from_config(cls, cfg: dict | None) -> AugmentSpec:
        return cls(**(cfg or {}))


@dataclass
class Volume:
    """One preprocessed case on the model grid: image (S, H, W) in [0, 1], label (S, H, W)."""

    case: str
    image: np.ndarray
    label: np.ndarray
    grid: dict[str, np.ndarray]


def load_volumes(preprocessed: dict[str, str | os.PathLike]) -> list[Volume]:
    """Load cases {case: npz path}, in the given order."""
    volumes = []
    for case, path in preprocessed.items():
        arrays = load_npz(path)
        volumes.append(Volume(case, arrays["image"], arrays["label"], arrays))
    return volumes


def case_paths(files: Iterable[str | os.PathLike]) -> dict[str, Path]:
    """{case: path} of preprocessed files `{case}.npz`, in the given order, failing with the
    missing files' names."""
    paths = {Path(f).name.removesuffix(".npz"): Path(f) for f in files}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"preprocessed case(s) missing: {', '.join(missing)}")
    return paths


def slice_items(volumes: list[Volume]) -> list[dict]:
    """Every axial slice of every volume as a channel-first 2D item."""
    return [
        {"image": v.image[s][None], "label": v.label[s][None].astype(np.float32), "case": v.case}
        for v in volumes
        for s in range(v.image.shape[0])
    ]


def slab_starts(volumes: list[Volume], depth: int) -> list[tuple[int, int]]:
    """(volume index, first slice) of every slab of `depth` consecutive slices (one per volume
    shorter than `depth`)."""
    return [(i, s) for i, v in enumerate(volumes) for s in range(max(1, v.image.shape[0] - depth + 1))]


def slab_item(volume: Volume, start: int, depth: int) -> dict:
    """One channel-first 3D item of `depth` slices from `start`, zero-padded past the volume's end."""
    pad = ((0, max(0, start + depth - volume.image.shape[0])), (0, 0), (0, 0))
    return {"image": np.pad(volume.image[start:start + depth], pad)[None],
            "label": np.pad(volume.label[start:start + depth], pad)[None].astype(np.float32),
            "case": volume.case}


def slab_items(volumes: list[Volume], repeats: int = 4) -> list[dict]:
    """Whole volumes as 3D items (cropped to slabs by the transforms), each `repeats` times."""
    return [
        {"image": v.image[None], "label": v.label[None].astype(np.float32), "case": v.case}
        for v in volumes
        for _ in range(repeats)
    ]


def train_transforms(aug: AugmentSpec, spatial_dims: int, depth: int) -> Compose:
    """Random crops (3D), affine, flips and intensity jitter."""
    keys = ["image", "label"]
    steps = []
    if spatial_dims == 3:
        steps += [
            SpatialPadd(keys, spatial_size=(depth, -1, -1)),
            RandSpatialCropd(keys, roi_size=(depth, -1, -1), random_size=False),
        ]
    rotate = np.deg2rad(aug.rotate_deg)
    rotate_range = (rotate,) if spatial_dims == 2 else (0.0, 0.0, rotate)
    if aug.prob > 0 and (aug.rotate_deg > 0 or aug.scale > 0):
        steps.append(RandAffined(
            keys, prob=aug.prob, rotate_range=rotate_range, scale_range=aug.scale,
            mode=("bilinear", "nearest"), padding_mode="zeros",
        ))
    if aug.flip_prob > 0:
        steps.append(RandFlipd(keys, prob=aug.flip_prob, spatial_axis=spatial_dims - 1))
    if aug.prob > 0 and aug.intensity_scale > 0:
        steps.append(RandScaleIntensityd("image", factors=aug.intensity_scale, prob=aug.prob))
    if aug.prob > 0 and aug.intensity_shift > 0:
        steps.append(RandShiftIntensityd("image", offsets=aug.intensity_shift, prob=aug.prob))
    return Compose(steps)


def reseed(transforms: Compose, seed: int) -> None:
    """Reset the random state of every random transform from `seed` (called once per epoch)."""
    transforms.set_random_state(seed=seed)


def training_dataset(volumes: list[Volume], aug: AugmentSpec, spatial_dims: int,
                     depth: int) -> tuple[Dataset, Compose]:
    """The training dataset and its transforms (returned so the caller can reseed them)."""
    items = slice_items(volumes) if spatial_dims == 2 else slab_items(volumes)
    transforms = train_transforms(aug, spatial_dims, depth)
    return Dataset(items, transform=transforms), transforms
