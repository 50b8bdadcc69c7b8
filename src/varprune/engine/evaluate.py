"""Test-set evaluation of a checkpoint: predictions on each case's own CT grid and 3D metrics in mm.

Metrics per case, all computed in 3D on the original CT grid with its real spacing, with
MONAI's implementations where they exist:
- `dice`: Dice coefficient (monai.metrics.compute_dice).
- `voe`: volumetric overlap error, 1 - Jaccard (monai.metrics.compute_iou).
- `rvd`: relative volume difference (|pred| - |truth|) / |truth|, signed, as a fraction
  (positive = over-segmentation). MONAI has none; it is one line.
- `assd_mm`: average symmetric surface distance (compute_average_surface_distance, symmetric).
- `msd_mm`: maximum symmetric surface distance = Hausdorff distance (compute_hausdorff_distance).
- `hd95_mm`: 95th percentile Hausdorff distance (the larger of the two directed 95th percentiles).
The distances are NaN when the prediction is empty (no surface to measure from).

Memory: every metric is computed on the box around the prediction and the truth (one voxel
wider, as MONAI crops for its surface distances), and the largest component is labelled slab
by slab, so a LiTS-sized CT (512 x 512 x 1000) is scored without whole-volume float or int64
copies; the results are those of the whole volumes (the overlap counts are exact float32 sums
below 2**24 voxels either way). The peak is mapping the prediction back: one float32 volume.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
)
from monai.transforms import KeepLargestConnectedComponent

from varprune.core.atomic import atomic_path, write_csv
from varprune.data.image_file import write_complete
from varprune.data.preprocess import load_npz, read_image, to_original_grid
from varprune.model.deployed import ready
from varprune.model.inference import predict_volume

log = logging.getLogger(__name__)

METRIC_COLUMNS = ["case", "dice", "voe", "rvd", "assd_mm", "msd_mm", "hd95_mm"]
CHUNK_VOXELS = 2**22  # voxels read at a time where a box is found in a whole volume
SLAB_SLICES = 32  # slices labelled at a time by keep_largest_component


def _as_batch(mask: np.ndarray) -> torch.Tensor:
    """A binary volume as MONAI's metrics take it: (batch 1, channel 1, *spatial), float."""
    return torch.as_tensor(np.asarray(mask, dtype=bool))[None, None].float()


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary volumes by MONAI's `compute_dice` (1.0 when both are empty)."""
    return float(compute_dice(_as_batch(pred), _as_batch(truth), include_background=True, ignore_empty=False))


def _nonzero_box(*masks: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """The box (slices) around the nonzero voxels of all `masks` (of one shape), `margin`
    voxels wider within the volume; None when all are empty. Read a few million voxels at a
    time, so that no whole-volume temporary is made."""
    shape = masks[0].shape
    hits = [np.zeros(n, bool) for n in shape]
    rows = max(1, CHUNK_VOXELS // max(1, math.prod(shape[1:])))
    for mask in masks:
        for i in range(0, shape[0], rows):
            part = np.asarray(mask[i:i + rows]) != 0
            for axis in range(len(shape)):
                profile = part.any(axis=tuple(a for a in range(len(shape)) if a != axis))
                if axis == 0:
                    hits[0][i:i + len(profile)] |= profile
                else:
                    hits[axis] |= profile
    if not hits[0].any():
        return None
    box = []
    for axis, hit in enumerate(hits):
        where = np.flatnonzero(hit)
        box.append(slice(max(int(where[0]) - margin, 0), min(int(where[-1]) + 1 + margin, shape[axis])))
    return tuple(box)


def segmentation_metrics(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> dict:
    """The metrics of one binary prediction against its truth; `spacing` in array axis order (mm).

    Both are cropped to the box around their nonzero voxels, one voxel wider, first: the
    overlap counts do not change, and MONAI crops its surface distances to that very box."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if _nonzero_box(truth) is None:
        raise ValueError("the ground truth is empty: the metrics are undefined")
    if pred.shape != truth.shape:
        raise ValueError(f"y_pred and y should have same shapes, got {pred.shape} and {truth.shape}.")
    box = _nonzero_box(pred, truth, margin=1)
    return uncropped_metrics(pred[box], truth[box], spacing)


def uncropped_metrics(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> dict:
    """`segmentation_metrics` on the arrays as given (the reference its cropping is tested against)."""
    p, t = _as_batch(pred), _as_batch(truth)
    spacing = [float(s) for s in spacing]
    iou = float(compute_iou(p, t, include_background=True, ignore_empty=False))
    if p.sum() == 0:
        assd = msd = hd95 = math.nan
    else:
        assd = float(compute_average_surface_distance(p, t, include_background=True, symmetric=True,
                                                      spacing=spacing))
        msd = float(compute_hausdorff_distance(p, t, include_background=True, spacing=spacing))
        hd95 = float(compute_hausdorff_distance(p, t, include_background=True, percentile=95,
                                                spacing=spacing))
    return {
        "dice": dice(pred, truth),
        "voe": 1.0 - iou,
        "rvd": float((p.sum() - t.sum()) / t.sum()),
        "assd_mm": assd,
        "msd_mm": msd,
        "hd95_mm": hd95,
    }


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 3D connected component of a binary mask: the liver is one organ, so a
    detached island is a false positive (a piece of heart or spleen).

    MONAI's KeepLargestConnectedComponent (full connectivity) gives the answer; a 3D mask is
    labelled SLAB_SLICES slices at a time within the box around it instead, its pieces joined
    across slab borders, so that no label image of the volume's size is made (MONAI's is int64
    or int32, 4 to 8 bytes a voxel). The components, their raster-order numbering, their sizes
    and the choice among them (the same argsort of the same counts) are MONAI's."""
    box = _nonzero_box(mask)
    if box is None:
        return mask
    kept = np.zeros(mask.shape, bool)
    if mask.ndim != 3:
        keep = KeepLargestConnectedComponent(applied_labels=[1], connectivity=None)
        kept[box] = keep(torch.as_tensor(mask[box][None].astype(np.uint8))).numpy()[0] > 0
        return kept
    _keep_largest_3d(mask[box], kept[box])
    return kept


def _touching(last: np.ndarray, first: np.ndarray) -> np.ndarray:
    """(2, n) unique pairs of piece ids in two adjacent slices that touch (26-connectivity)."""
    rows, cols = last.shape
    pairs = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            a = last[max(0, -dy):rows - max(0, dy), max(0, -dx):cols - max(0, dx)]
            b = first[max(0, dy):rows - max(0, -dy), max(0, dx):cols - max(0, -dx)]
            both = (a > 0) & (b > 0)
            pairs.append(np.stack([a[both], b[both]]))
    return np.unique(np.concatenate(pairs, axis=1), axis=1)


def _keep_largest_3d(mask: np.ndarray, out: np.ndarray) -> None:
    """`out[...]` = MONAI's KeepLargestConnectedComponent(applied_labels=[1], connectivity=None)
    of `mask` read as uint8, > 0; labelled slab by slab (two passes: count, then keep)."""
    from scipy.ndimage import label
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    full = np.ones((3, 3, 3), bool)  # skimage's connectivity=None in 3D; scipy numbers pieces alike
    step = max(1, SLAB_SLICES)
    slabs = [(z0, min(z0 + step, len(mask))) for z0 in range(0, len(mask), step)]

    def pieces_of(z0: int, z1: int) -> tuple[np.ndarray, np.ndarray, int]:
        values = mask[z0:z1].astype(np.uint8)  # as MONAI reads the mask
        ids, count = label(values == 1, structure=full)
        return values, ids, count

    sizes, joins, offsets = [], [], []
    last, pieces = None, 0
    for z0, z1 in slabs:
        _, ids, count = pieces_of(z0, z1)
        offsets.append(pieces)
        sizes.append(np.bincount(ids.ravel(), minlength=count + 1)[1:])
        first = np.where(ids[0] > 0, ids[0].astype(np.int64) + pieces, 0)
        if last is not None:
            joins.append(_touching(last, first))
        last = np.where(ids[-1] > 0, ids[-1].astype(np.int64) + pieces, 0)
        pieces += count
        del ids
    offsets.append(pieces)
    keep = None  # per piece, whether it is in the component kept; None: keep every voxel
    if pieces:
        pairs = np.concatenate(joins, axis=1) - 1 if joins else np.zeros((2, 0), np.int64)
        graph = coo_matrix((np.ones(pairs.shape[1], np.int8), (pairs[0], pairs[1])), shape=(pieces, pieces))
        count, component = connected_components(graph, directed=False)
        if count > 1:  # MONAI keeps the mask as it is when it has no more components than it keeps
            # Number the components as labelling the whole box does: by their first voxel, which
            # lies in their first piece (pieces are numbered in raster order).
            start = np.full(count, pieces)
            np.minimum.at(start, component, np.arange(pieces))
            number = np.empty(count, np.int64)
            number[np.argsort(start)] = np.arange(1, count + 1)
            counts = np.zeros(count + 1, np.int64)  # MONAI's bincount of the labels, background zeroed
            counts[number] = np.bincount(component, weights=np.concatenate(sizes), minlength=count)
            kept_number = np.argsort(counts)[::-1][0]  # MONAI's very choice, ties included
            keep = component == np.flatnonzero(number == kept_number)[0]
    for i, (z0, z1) in enumerate(slabs):
        if keep is None:
            out[z0:z1] = mask[z0:z1].astype(np.uint8) > 0
            continue
        values, ids, _ = pieces_of(z0, z1)
        lookup = np.concatenate([[False], keep[offsets[i]:offsets[i + 1]]])
        # Foreground (== 1) voxels outside the kept component are cleared; other nonzero ones stay.
        out[z0:z1] = (values > 0) & ((values != 1) | lookup[ids])


def write_metrics(path: str | os.PathLike, rows: list[dict]) -> None:
    """`metrics.csv`: one row per case, columns METRIC_COLUMNS, written atomically."""
    write_csv(path, METRIC_COLUMNS,
              [{k: (row[k] if k == "case" else f"{row[k]:.6g}") for k in METRIC_COLUMNS} for row in rows])


def cases_with_truth(preprocessed: Sequence[str | os.PathLike],
                     truth: Sequence[str | os.PathLike]) -> list[tuple[str, Path, Path]]:
    """(case, data/preprocessed/{case}.npz, data/nifti/{case}/liver.nii.gz) of every test case
    given, in the given order; the two lists must name the same cases."""
    pairs = [(Path(p), Path(t)) for p in preprocessed for t in truth
             if Path(p).name.removesuffix(".npz") == Path(t).parent.name]
    cases = [Path(p).name.removesuffix(".npz") for p in preprocessed]
    if len(pairs) != len(cases) or len(truth) != len(cases):
        given = [Path(t).parent.name for t in truth]
        raise ValueError(f"test cases {cases} given with ground truth of {given}: every case needs exactly "
                         "one liver mask")
    if not cases:
        raise ValueError("no test cases given: every model is evaluated on the test split")
    return [(case, p, t) for case, (p, t) in zip(cases, pairs, strict=True)]


def evaluate_case(prob: np.ndarray, grid: dict[str, np.ndarray], truth_path: str | os.PathLike, case: str,
                  out_pred: str | os.PathLike | None = None, interpolate: bool = True,
                  largest_component: bool = True) -> dict:
    """One test case: map the model-grid prediction `prob` back onto the CT grid (`grid`: the
    case's .npz arrays), keep its largest component, write it to `out_pred` (when given) and
    score it against the liver mask at `truth_path`; returns the metrics."""
    pred = to_original_grid(prob, grid, interpolate=interpolate)  # uint8 0/1 on the CT grid
    if largest_component:
        view = sitk.GetArrayViewFromImage(pred)  # uint8 0/1: read as the mask > 0 is
        kept = keep_largest_component(view)
        if kept is not view:
            del view
            kept = sitk.GetImageFromArray(kept.view(np.uint8))
            kept.CopyInformation(pred)
            pred = kept
    truth = read_image(truth_path, case)
    if truth.GetSize() != pred.GetSize():
        raise ValueError(f"{case}: {truth_path} is {truth.GetSize()}, the prediction {pred.GetSize()}")
    if out_pred is not None:
        with atomic_path(out_pred) as tmp:
            write_complete(pred, tmp)
    spacing_zyx = tuple(reversed(truth.GetSpacing()))
    values = sitk.GetArrayViewFromImage(truth)
    # Unsigned masks are > 0 wherever nonzero, which is how the metrics read them: no copy.
    truth_mask = values if values.dtype.kind in "bu" else values > 0
    return segmentation_metrics(sitk.GetArrayViewFromImage(pred), truth_mask, spacing_zyx)


def evaluate_checkpoint(model_path: str | os.PathLike, preprocessed: Sequence[str | os.PathLike],
                        truth: Sequence[str | os.PathLike], out_metrics: str | os.PathLike,
                        out_pred_dir: str | os.PathLike,
                        batch_size: int = 16, device: str = "auto", interpolate: bool = True,
                        largest_component: bool = True, threads: int | None = None,
                        precision: str = "auto") -> list[dict]:
    """Predict every test case, save `pred/{case}.nii.gz` on the CT grid, write `metrics.csv`."""
    if threads:
        torch.set_num_threads(threads)
    loaded, target, precision = ready(model_path, device, precision, threads)
    model, spec = loaded.model.to(target), loaded.spec
    cases = cases_with_truth(preprocessed, truth)
    out_pred_dir = Path(out_pred_dir)
    out_pred_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for case, npz_path, truth_path in cases:
        arrays = load_npz(npz_path)
        prob = predict_volume(model, arrays["image"], spec, target, batch_size, precision=precision)
        metrics = evaluate_case(prob, arrays, truth_path, case, out_pred_dir / f"{case}.nii.gz",
                                interpolate=interpolate, largest_component=largest_component)
        rows.append({"case": case, **metrics})
        log.info("%s: Dice %.4f, VOE %.4f, RVD %+.4f, ASSD %.2f mm, MSD %.2f mm, HD95 %.2f mm", case,
                 *(metrics[k] for k in METRIC_COLUMNS[1:]))
    write_metrics(out_metrics, rows)
    log.info("mean Dice over %d test cases: %.4f", len(rows), float(np.mean([r["dice"] for r in rows])))
    return rows
