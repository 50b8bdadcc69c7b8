"""The slab-wise and cropped paths that keep LiTS-sized volumes in memory give the whole-volume results.

Tiny volumes, with the slab and chunk sizes forced down so that a 20-slice volume is processed in
several pieces, compared bit for bit with one piece and with the plain whole-volume computation.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.transforms import KeepLargestConnectedComponent

import varprune.data.preprocess as prep
import varprune.engine.evaluate as ev

RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def image(array: np.ndarray, spacing=(0.7, 0.7, 1.0), direction=RAS) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    img.SetOrigin((12.5, -40.25, -301.7))
    return img


def phantom(slices: int = 20, seed: int = 0) -> tuple[sitk.Image, sitk.Image]:
    """An int16 CT (air, an elliptic body with noise, bright specks in the air) and its uint8 liver mask."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[0:slices, 0:40, 0:56].astype(np.float32)
    body = ((xx - 28) / 24) ** 2 + ((yy - 20) / 15) ** 2 <= 1 - 0.3 * zz / slices
    blob = ((xx - 20) / 8) ** 2 + ((yy - 20) / 6) ** 2 + ((zz - slices / 2) / (slices / 3)) ** 2
    liver = body & (blob <= 1)
    ct = np.where(body, rng.normal(20, 15, body.shape), -1000.0)
    ct[liver] += 40
    ct[rng.random(body.shape) < 0.01] = 300.0  # specks: many one-voxel components
    return image(np.round(ct).astype(np.int16)), image(liver.astype(np.uint8))


def whole_body_box(ct: sitk.Image, threshold: float) -> tuple[float, float, float, float]:
    """The body box as computed on the whole volume at once (the reference)."""
    labels = sitk.ConnectedComponent(ct > threshold)
    mask = sitk.GetArrayFromImage(sitk.RelabelComponent(labels, sortByObjectSize=True) == 1)
    ys, xs = np.flatnonzero(mask.any(axis=(0, 2))), np.flatnonzero(mask.any(axis=(0, 1)))
    return float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1])


@pytest.mark.parametrize(("slices", "slab", "minimum", "expected"), [
    (20, 3, 4, [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20)]),
    (22, 4, 4, [(0, 4), (4, 8), (8, 12), (12, 16), (16, 22)]),
    (20, 32, 4, [(0, 20)]),
    (3, 32, 4, [(0, 3)]),
    (7, 3, 1, [(0, 3), (3, 6), (6, 7)]),
])
def test_slabs_cover_the_volume_in_order(slices, slab, minimum, expected):
    assert prep._slabs(slices, slab, minimum) == expected


@pytest.mark.parametrize("slab", [1, 2, 3, 7, 10**6])
def test_body_box_slab_by_slab_is_the_whole_volume_box(monkeypatch, slab):
    ct, _ = phantom()
    monkeypatch.setattr(prep, "SLAB_SLICES", slab)
    assert prep.body_box(ct, -500.0) == whole_body_box(ct, -500.0)


@pytest.mark.parametrize("slab", [1, 2, 5, 10**6])
def test_body_box_joins_pieces_across_slabs_and_breaks_ties_in_raster_order(monkeypatch, slab):
    monkeypatch.setattr(prep, "SLAB_SLICES", slab)
    ct = np.full((12, 20, 30), -1000, np.int16)
    # A U whose arms meet only in the last slices (each slab alone sees two pieces) ...
    ct[0:12, 2:5, 2:5] = 0
    ct[0:12, 2:5, 9:12] = 0
    ct[10:12, 2:5, 2:12] = 0
    # ... and, first, two separate blocks of the same size, larger than the U: the first wins.
    ties = ct.copy()
    ties[0:12, 10:18, 20:28] = 0
    ties[0:12, 10:18, 1:9] = 0
    for array in (ct, ties):
        img = image(array)
        assert prep.body_box(img, -500.0) == whole_body_box(img, -500.0)
    assert prep.body_box(image(ct), -500.0) == (2.0, 11.0, 2.0, 4.0)
    assert prep.body_box(image(ties), -500.0) == (1.0, 8.0, 10.0, 17.0)


def test_body_box_without_body_is_an_error(monkeypatch):
    monkeypatch.setattr(prep, "SLAB_SLICES", 3)
    with pytest.raises(prep.PreprocessError, match="no voxel above"):
        prep.body_box(image(np.full((8, 10, 10), -1000, np.int16)), -500.0)


@pytest.mark.parametrize("slices", [4, 5, 20, 23])
def test_smoothing_slab_by_slab_is_the_whole_volume_smoothing(monkeypatch, slices):
    ct, _ = phantom(slices)
    step = 3.0
    sigma = 0.5 * np.sqrt(step**2 - 0.7**2)
    whole = sitk.SmoothingRecursiveGaussian(sitk.Cast(ct, sitk.sitkFloat32), sigma=(sigma, sigma, 1e-3 * 1.0))
    monkeypatch.setattr(prep, "SLAB_SLICES", 3)  # slabs of 4 (the filter's minimum), a short last one joined
    slabbed = prep._antialias(ct, step)
    assert slabbed.GetPixelID() == sitk.sitkFloat32
    assert slabbed.GetOrigin() == whole.GetOrigin() and slabbed.GetDirection() == whole.GetDirection()
    assert np.array_equal(sitk.GetArrayViewFromImage(slabbed), sitk.GetArrayViewFromImage(whole))


@pytest.mark.parametrize("direction", [RAS, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
                                       (1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0)])
def test_preprocessed_arrays_do_not_depend_on_the_slab_size(monkeypatch, direction):
    ct, liver = phantom()
    ct.SetDirection(direction)
    liver.SetDirection(direction)
    spec = prep.PreprocessSpec(input_size=32, spacing_mm=2.0)
    results = []
    for slab in (2, 3, 10**6):
        monkeypatch.setattr(prep, "SLAB_SLICES", slab)
        results.append(prep.preprocess_arrays(ct, liver, spec))
    for other in results[1:]:
        assert list(other) == list(results[0])
        for key in other:
            assert other[key].dtype == results[0][key].dtype and np.array_equal(other[key], results[0][key])
    assert results[0]["label"].any()


def test_mask_resampled_without_a_float_copy_is_the_same_label():
    ct, liver = phantom()
    spec = prep.PreprocessSpec(input_size=32, spacing_mm=2.0)
    ref = prep.reference_grid(prep.canonical(ct), spec)
    cast = sitk.Resample(sitk.Cast(prep.canonical(liver), sitk.sitkFloat32), ref, sitk.Transform(),
                         sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    arrays = prep.preprocess_arrays(ct, liver, spec)
    assert np.array_equal(arrays["label"], (sitk.GetArrayFromImage(cast) >= 0.5).astype(np.uint8))


def signed_permutations():
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            matrix = np.zeros((3, 3))
            matrix[range(3), perm] = signs
            yield matrix


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
def test_reorienting_by_a_flip_is_dicom_orient_bit_for_bit():
    rng = np.random.default_rng(6)
    tilted = np.array([[1.0, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]])
    oblique, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    for direction in [*signed_permutations(), tilted, oblique]:
        img = sitk.GetImageFromArray(rng.integers(-1000, 1000, (5, 6, 7)).astype(np.int16))
        img.SetDirection(tuple(direction.ravel()))
        img.SetSpacing((0.7, 0.8, 2.5))
        img.SetOrigin(tuple(rng.normal(0, 100, 3)))
        for orientation in ("LPS", "RAS", "SLP"):
            expected, out = sitk.DICOMOrient(img, orientation), prep.canonical(img, orientation)
            geometry = [np.array(x.GetOrigin() + x.GetSpacing() + x.GetDirection()).tobytes()
                        for x in (expected, out)]
            assert geometry[0] == geometry[1] and out.GetSize() == expected.GetSize()
            assert np.array_equal(sitk.GetArrayViewFromImage(out), sitk.GetArrayViewFromImage(expected))


def test_air_share_counted_in_chunks_is_the_mean(monkeypatch):
    rng = np.random.default_rng(3)
    monkeypatch.setattr(prep, "CHUNK_VOXELS", 50)
    low, high = prep.AIR_RANGE
    for shape, air in [((20, 7, 9), 0.0005), ((20, 7, 9), 0.2), ((5, 300), 0.001), ((40,), 0.5)]:
        values = np.where(rng.random(shape) < air, -1000, 40).astype(np.int16)
        expected = float(np.mean((values >= low) & (values <= high))) >= prep.AIR_SHARE
        assert prep.has_air(values) == expected
    assert not prep.has_air(np.zeros(0, np.int16))


def grid_arrays(slices: int = 20) -> dict[str, np.ndarray]:
    ct, liver = phantom(slices)
    return prep.preprocess_arrays(ct, liver, prep.PreprocessSpec(input_size=32, spacing_mm=2.0))


@pytest.mark.parametrize("interpolate", [True, False])
def test_prediction_mapped_back_without_a_reference_image_is_unchanged(interpolate):
    grid = grid_arrays()
    rng = np.random.default_rng(1)
    prob = np.clip(grid["label"] * 0.7 + rng.random(grid["label"].shape) * 0.4, 0, 1).astype(np.float32)
    # The whole-volume reference: resampling onto a CT-sized reference image.
    pred = sitk.GetImageFromArray(prob)
    pred.SetOrigin(tuple(grid["origin"].tolist()))
    pred.SetSpacing(tuple(grid["spacing"].tolist()))
    pred.SetDirection(tuple(grid["direction"].tolist()))
    ref = sitk.Image([int(v) for v in grid["source_size"]], sitk.sitkFloat32)
    ref.SetOrigin(tuple(grid["source_origin"].tolist()))
    ref.SetSpacing(tuple(grid["source_spacing"].tolist()))
    ref.SetDirection(tuple(grid["source_direction"].tolist()))
    method = sitk.sitkLinear if interpolate else sitk.sitkNearestNeighbor
    expected = sitk.Resample(pred, ref, sitk.Transform(), method, 0.0, sitk.sitkFloat32) >= 0.5
    out = prep.to_original_grid(prob, grid, interpolate=interpolate)
    assert out.GetPixelID() == sitk.sitkUInt8
    assert (out.GetSize(), out.GetOrigin(), out.GetSpacing(), out.GetDirection()) == (
        ref.GetSize(), ref.GetOrigin(), ref.GetSpacing(), ref.GetDirection())
    assert np.array_equal(sitk.GetArrayViewFromImage(out), sitk.GetArrayViewFromImage(expected))


def random_masks(count: int, seed: int = 2):
    rng = np.random.default_rng(seed)
    for i in range(count):
        shape = tuple(int(n) for n in rng.integers(4, 20, 3))
        mask = rng.random(shape) < rng.uniform(0.05, 0.45)
        if i % 4 == 0:  # two equal cubes in opposite corners: a tie
            mask = np.zeros(shape, bool)
            mask[:2, :2, :2] = mask[-2:, -2:, -2:] = True
        yield rng, mask


def monai_largest(mask: np.ndarray) -> np.ndarray:
    """The largest component as MONAI finds it in the whole volume at once (the reference)."""
    keep = KeepLargestConnectedComponent(applied_labels=[1], connectivity=None)
    return keep(torch.as_tensor(mask[None].astype(np.uint8))).numpy()[0] > 0


@pytest.mark.parametrize("slab", [1, 2, 3, 10**6])
def test_largest_component_slab_by_slab_is_the_whole_volume_one(monkeypatch, slab):
    monkeypatch.setattr(ev, "SLAB_SLICES", slab)
    for _, mask in random_masks(40):
        assert np.array_equal(ev.keep_largest_component(mask), monai_largest(mask))
    # Components that meet only diagonally across a slab border, and a U joined in its last slices.
    mask = np.zeros((6, 8, 8), bool)
    mask[0:3, 1, 1] = mask[3:6, 2, 2] = True  # one component (26-connectivity), 6 voxels
    mask[0:6, 5, 3] = mask[0:6, 5, 6] = True
    mask[5, 5, 3:7] = True  # the U: 14 voxels, the largest
    assert np.array_equal(ev.keep_largest_component(mask), monai_largest(mask))
    assert ev.keep_largest_component(mask).sum() == 14
    # Values other than 0/1 are kept or dropped as MONAI does (it reads the mask as uint8 labels).
    rng = np.random.default_rng(4)
    for dtype in (np.uint8, np.float32):
        labels = rng.choice(np.array([0, 0, 1, 2, 0.5], dtype=dtype), size=(9, 10, 11))
        assert np.array_equal(ev.keep_largest_component(labels), monai_largest(labels))
    empty = np.zeros((3, 4, 5), bool)
    assert ev.keep_largest_component(empty) is empty


def test_nonzero_box_read_in_chunks(monkeypatch):
    monkeypatch.setattr(ev, "CHUNK_VOXELS", 7)
    for rng, mask in random_masks(20):
        other = rng.random(mask.shape) < 0.02
        where = np.argwhere(mask | other)
        box = ev._nonzero_box(mask.astype(np.uint8), other, margin=1)
        if len(where) == 0:
            assert box is None
            continue
        expected = tuple(slice(max(int(lo) - 1, 0), min(int(hi) + 2, n))
                         for lo, hi, n in zip(where.min(0), where.max(0), mask.shape, strict=True))
        assert box == expected
    assert ev._nonzero_box(np.zeros((4, 4, 4), np.uint8)) is None


def whole_volume_metrics(pred: np.ndarray, truth: np.ndarray, spacing) -> dict:
    """The metrics computed on the whole volumes (the reference)."""
    return ev.uncropped_metrics(pred, truth, spacing)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_metrics_in_the_box_are_the_whole_volume_metrics():
    for rng, mask in random_masks(24, seed=5):
        truth = rng.random(mask.shape) < 0.2
        if not truth.any():
            continue
        spacing = tuple(rng.uniform(0.5, 3.0, 3))
        assert same(ev.segmentation_metrics(mask, truth, spacing), whole_volume_metrics(mask, truth, spacing))
        # Small masks inside a larger volume, so that the box is a real crop; one touching an edge.
        for corner in ((3, 5, 2), (0, 0, 0)):
            big_p, big_t = np.zeros((30, 32, 34), bool), np.zeros((30, 32, 34), bool)
            region = tuple(slice(c, c + n) for c, n in zip(corner, mask.shape, strict=True))
            big_p[region], big_t[region] = mask, truth
            assert same(ev.segmentation_metrics(big_p.astype(np.uint8), big_t, spacing),
                        whole_volume_metrics(big_p, big_t, spacing))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("largest", [True, False])
def test_evaluate_case_is_the_whole_volume_evaluation(tmp_path, largest):
    ct, liver = phantom()
    grid = prep.preprocess_arrays(ct, liver, prep.PreprocessSpec(input_size=32, spacing_mm=2.0))
    sitk.WriteImage(liver, str(tmp_path / "liver.nii.gz"))
    prob = np.roll(grid["label"].astype(np.float32), 1, axis=2)
    prob[:, 1:3, 1:3] = 1.0  # an island that the largest component drops
    metrics = ev.evaluate_case(prob, grid, tmp_path / "liver.nii.gz", "c", tmp_path / "pred.nii.gz",
                               largest_component=largest)
    mask = sitk.GetArrayFromImage(prep.to_original_grid(prob, grid)) > 0
    if largest:
        keep = KeepLargestConnectedComponent(applied_labels=[1], connectivity=None)
        mask = keep(torch.as_tensor(mask[None].astype(np.uint8))).numpy()[0] > 0
    written = sitk.ReadImage(str(tmp_path / "pred.nii.gz"))
    assert written.GetPixelID() == sitk.sitkUInt8 and written.GetSize() == liver.GetSize()
    assert np.array_equal(sitk.GetArrayViewFromImage(written), mask.astype(np.uint8))
    spacing_zyx = tuple(reversed(liver.GetSpacing()))
    assert same(metrics, whole_volume_metrics(mask, sitk.GetArrayFromImage(liver) > 0, spacing_zyx))
